// The control panel beside the viewer: status and progress, tools, classes, class insight, display (contrast and
// channels), layers, feature matrix, objects, export, stroke list.
//
// The panel only reads traits and writes traits or sends requests; the kernel is the source of truth and its
// answer (a trait change) re-renders the panel. Every control carries a data-testid (the e2e tests find them by it).

import type { LayerName, Mode, RequestBody } from "../protocol.js";
import {
  BRUSH_SIZE_MAX,
  BRUSH_SIZE_MIN,
  DEFAULT_LAYER_SETTINGS,
  LAYER_NAMES,
  MAX_CLASSES,
  MAX_NAME_LENGTH,
  MODES,
} from "../protocol.js";
import { DisplaySection } from "./display.js";
import { h } from "./dom.js";
import {
  allFeatures,
  channelText,
  featureEnabled,
  featureTable,
  sameScale,
  scaleIn2d,
  scaleText,
  with2d,
  withFeature,
} from "./features.js";
import { progressFraction, progressOf, progressText } from "./progress.js";
import type { ObjectRow } from "./results.js";
import { ResultsSections } from "./results.js";
import { FIT_KEY, LAYER_KEYS, MODE_KEYS } from "./shortcuts.js";

/** The subset of the anywidget model the panel uses. */
export interface PanelModel {
  get(name: string): any;
  set(name: string, value: any): void;
  save_changes(): void;
  on(event: string, handler: (...args: any[]) => void): void;
  off(event?: string | null, handler?: ((...args: any[]) => void) | null): void;
}

export interface ClassInfo {
  name: string;
  color: string;
}

/** One stroke of the `strokes` trait (ilastik_widget/widget/state.py `stroke_summaries`). */
export interface StrokeSummary {
  id: number;
  label: number;
  /** The brush size it was painted with (the footprint's diameter in pixels), and its radius, (size - 1) / 2. */
  size: number;
  radius: number;
  n_points: number;
  center: number[];
  bounds: number[][];
  erase?: boolean;
  /** "stroke" or "import" (an imported label image: no brush size). */
  kind?: string;
  n_voxels?: number;
}

/** The requests the panel's controls send. */
export type PanelRequest = Extract<
  RequestBody,
  {
    type:
      | "undo"
      | "redo"
      | "update-now"
      | "stop"
      | "add-class"
      | "remove-class"
      | "rename-class"
      | "recolor-class"
      | "remove-stroke"
      | "objects"
      | "object-row"
      | "export";
  }
>;

export interface PanelActions {
  /** Sends a request to the kernel; errors are shown by the caller. */
  request(body: PanelRequest): Promise<unknown>;
  goToStroke(stroke: StrokeSummary): void;
  toggleHelp(show?: boolean): void;
  /** Brings the whole image back into view, centred. */
  fitView(): void;
}

// Titles of the layer rows, in the words of the panel; an unknown layer shows its own name.
const LAYER_TITLES: Readonly<Record<LayerName, string>> = {
  raw: "Image",
  labels: "Labels",
  probabilities: "Probabilities",
  segmentation: "Segmentation",
  uncertainty: "Uncertainty",
  objects: "Objects",
};

/** A position in array order with the image's axis names: "z 12, y 40, x 87". */
export function positionText(position: readonly number[], axes: readonly string[]): string {
  return position.map((v, i) => `${axes[i] ?? `axis ${i}`} ${Math.round(v)}`).join(", ");
}

/** A stroke as its row in the stroke list says it (class, brush diameter, where). */
export function strokeText(s: StrokeSummary, className: string, axes: readonly string[]): string {
  const who = s.erase ? "Eraser" : className;
  const where = positionText(s.center, axes);
  if (s.kind === "import") return `${who} · imported, ${Number(s.n_voxels ?? 0).toLocaleString("en-US")} px · at ${where}`;
  return `${who} · ⌀ ${s.size} px · at ${where}`;
}

export class Panel {
  readonly element: HTMLElement;
  private statusEl!: HTMLElement;
  private errorEl!: HTMLElement;
  private progressEl!: HTMLElement;
  private progressFill!: HTMLElement;
  private progressText!: HTMLElement;
  private stopButton!: HTMLButtonElement;
  private display: DisplaySection;
  private results: ResultsSections;
  private classesEl!: HTMLElement;
  private addClassButton!: HTMLButtonElement;
  private strokesEl!: HTMLElement;
  private strokeCountEl!: HTMLElement;
  private featuresEl!: HTMLElement;
  private featureButtons: HTMLButtonElement[] = [];
  /** The feature table the matrix was last built from (JSON), to rebuild only when it changes. */
  private featureTableJson: string | undefined;
  private layersEl!: HTMLElement;
  private brushInput!: HTMLInputElement;
  private brushValue!: HTMLElement;
  private modeButtons = new Map<Mode, HTMLButtonElement>();
  private liveInput!: HTMLInputElement;
  private updateButton!: HTMLButtonElement;
  private listeners: Array<[string, () => void]> = [];

  constructor(
    private model: PanelModel,
    private actions: PanelActions,
  ) {
    this.element = h("div", { class: "ilastik-panel" });
    this.display = new DisplaySection(model);
    this.results = new ResultsSections(model, { request: (body) => actions.request(body) });
    this.build();
    const watch = (names: string[], fn: () => void) => {
      for (const name of names) {
        const event = `change:${name}`;
        model.on(event, fn);
        this.listeners.push([event, fn]);
      }
    };
    watch(["classes", "active_class"], () => {
      this.renderClasses();
      this.renderStrokes();
      this.results.renderObjects();
    });
    watch(["strokes"], () => this.renderStrokes());
    watch(["feature_selection"], () => this.renderFeatures());
    // source_info is sent again when the classes change; the matrix is rebuilt only if its table changed
    watch(["source_info"], () => {
      if (JSON.stringify(this.model.get("source_info")?.feature_table ?? null) !== this.featureTableJson) {
        this.renderFeatures();
      }
      this.renderBrush();
      this.display.render();
    });
    watch(["contrast_limits", "channel_colors", "channel_visible", "classifier_channels"], () => this.display.update());
    watch(["objects_info"], () => {
      this.results.renderObjects();
      this.renderLayers();
    });
    watch(["class_insight"], () => {
      this.results.renderInsight();
      this.results.renderObjects();
    });
    watch(["layers"], () => this.renderLayers());
    watch(["brush_size"], () => this.renderBrush());
    watch(["mode"], () => this.renderMode());
    watch(["live"], () => this.renderLive());
    watch(["status", "error", "busy", "progress"], () => this.renderStatus());
    this.renderAll();
  }

  dispose(): void {
    this.display.dispose();
    for (const [event, fn] of this.listeners) this.model.off(event, fn);
    this.listeners = [];
    this.element.remove();
  }

  private setTrait(name: string, value: any) {
    this.model.set(name, value);
    this.model.save_changes();
  }

  /** Shows the row of an object clicked in the viewer. */
  showObjectRow(object: number, row: ObjectRow | null): void {
    this.results.showObjectRow(object, row);
  }

  private send(body: PanelRequest) {
    this.actions.request(body).catch(() => {
      // The kernel also puts the error into the status line; nothing else to do here.
    });
  }

  // ------------------------------------------------------------------------------------------- layout

  private build() {
    this.progressFill = h("div", { class: "ilastik-progress-fill" });
    this.progressEl = h("div", { class: "ilastik-progress", role: "progressbar", testid: "progress-bar",
      "aria-valuemin": "0", "aria-valuemax": "100", "aria-hidden": "true" }, this.progressFill);
    this.statusEl = h("div", { class: "ilastik-status-text" });
    this.progressText = h("div", { class: "ilastik-progress-text", testid: "progress-text" });
    this.errorEl = h("div", { class: "ilastik-error-text" });
    this.stopButton = h("button", { type: "button", class: "ilastik-stop", testid: "stop",
      title: "Stop the training, predictions or export under way", onclick: () => this.send({ type: "stop" }) },
    "Stop") as HTMLButtonElement;
    const status = h("div", { class: "ilastik-status", testid: "status", "aria-live": "polite" }, this.progressEl,
      h("div", { class: "ilastik-status-line" }, h("div", { class: "ilastik-status-words" }, this.statusEl,
        this.progressText), this.stopButton), this.errorEl);

    // Tools: mode, brush size, undo/redo.
    const modes = h("div", { class: "ilastik-modes", role: "group", "aria-label": "Mode" });
    for (const mode of MODES) {
      const { title, key } = MODE_KEYS[mode];
      const button = h("button", {
        type: "button", testid: `mode-${mode}`, title: `${title} (${key})`,
        onclick: () => this.setTrait("mode", mode),
      }, title);
      this.modeButtons.set(mode, button);
      modes.append(button);
    }
    this.brushInput = h("input", {
      // odd sizes: from a voxel's centre, where the brush's points are, an odd brush paints exactly its size across
      type: "range", step: "2", min: String(BRUSH_SIZE_MIN), max: String(BRUSH_SIZE_MAX), testid: "brush-size",
      title: "Brush size: its diameter in pixels ([ and ])",
      oninput: () => {
        this.brushValue.textContent = `${this.brushInput.value} px`;
      },
      onchange: () => this.setTrait("brush_size", Number(this.brushInput.value)),
    }) as HTMLInputElement;
    this.brushValue = h("span", { class: "ilastik-brush-value" });
    const undo = h("button", { type: "button", title: "Undo (Ctrl+Z)", testid: "undo",
      onclick: () => this.send({ type: "undo" }) }, "↶ Undo");
    const redo = h("button", { type: "button", title: "Redo (Ctrl+Shift+Z)", testid: "redo",
      onclick: () => this.send({ type: "redo" }) }, "↷ Redo");
    const help = h("button", { type: "button", class: "ilastik-help-button", title: "Keyboard shortcuts (?)",
      testid: "help-button", onclick: () => this.actions.toggleHelp() }, "?");
    const fit = h("button", { type: "button", testid: "fit-view", title: `Show the whole image, centred (${FIT_KEY})`,
      onclick: () => this.actions.fitView() }, "⤢ Fit");
    const tools = h("div", { class: "ilastik-section ilastik-tools" },
      modes,
      h("label", { class: "ilastik-brush", title: "Brush size: its diameter in pixels ([ and ])" }, "Brush ⌀ ",
        this.brushInput, this.brushValue),
      h("div", { class: "ilastik-row" }, undo, redo, fit, help));

    // Live update
    this.liveInput = h("input", { type: "checkbox", testid: "live-toggle",
      onchange: () => this.setTrait("live", this.liveInput.checked) }) as HTMLInputElement;
    this.updateButton = h("button", { type: "button", testid: "update-now", title: "Train and predict now",
      onclick: () => this.send({ type: "update-now" }) }, "Update now");
    const live = h("div", { class: "ilastik-section ilastik-row" },
      h("label", { title: "Retrain after every change (l)" }, this.liveInput, " Live update"), this.updateButton);

    // Classes
    this.classesEl = h("div", { class: "ilastik-classes" });
    this.addClassButton = h("button", { type: "button", testid: "add-class",
      onclick: () => this.send({ type: "add-class" }) }, "+ Add class");
    const classes = h("div", { class: "ilastik-section" }, h("div", { class: "ilastik-heading" }, "Classes"),
      this.classesEl, this.addClassButton);

    // Layers
    this.layersEl = h("div", { class: "ilastik-layers" });
    const layers = h("details", { class: "ilastik-section", open: true },
      h("summary", { class: "ilastik-heading" }, "Layers"), this.layersEl);

    // Features
    this.featuresEl = h("div", { class: "ilastik-features" });
    const setAll = (on: boolean) => {
      const table = featureTable(this.model.get("source_info"));
      if (table !== undefined) this.setTrait("feature_selection", allFeatures(table, on, this.model.get("feature_selection")));
    };
    this.featureButtons = [
      h("button", { type: "button", testid: "features-all", title: "Select every feature at every scale",
        onclick: () => setAll(true) }, "All"),
      h("button", { type: "button", testid: "features-none", title: "Clear the selection (then pick some features)",
        onclick: () => setAll(false) }, "None"),
    ];
    const features = h("details", { class: "ilastik-section" },
      h("summary", { class: "ilastik-heading" }, "Features"),
      h("div", { class: "ilastik-row" }, ...this.featureButtons),
      this.featuresEl);

    // Strokes
    this.strokesEl = h("ul", { class: "ilastik-strokes" });
    this.strokeCountEl = h("span", { class: "ilastik-count" });
    const strokes = h("details", { class: "ilastik-section", open: true },
      h("summary", { class: "ilastik-heading" }, "Strokes ", this.strokeCountEl), this.strokesEl);

    this.element.append(status, tools, live, classes, this.results.insight, this.display.element, layers, features,
      this.results.objects, this.results.export, strokes);
  }

  renderAll() {
    this.renderStatus();
    this.renderMode();
    this.renderBrush();
    this.renderLive();
    this.renderClasses();
    this.renderLayers();
    this.renderFeatures();
    this.renderStrokes();
    this.display.render();
    this.results.renderObjects();
    this.results.renderInsight();
  }

  // ------------------------------------------------------------------------------------------- parts

  renderStatus() {
    const error = String(this.model.get("error") ?? "");
    const status = String(this.model.get("status") ?? "");
    const busy = Boolean(this.model.get("busy"));
    const progress = progressOf(this.model.get("progress"));
    this.statusEl.textContent = status.startsWith("Error: ") && error ? "" : status;
    this.errorEl.textContent = error;
    this.errorEl.style.display = error ? "" : "none";
    this.element.classList.toggle("ilastik-busy", busy || progress !== undefined);
    // A still bar: its width changes with each progress update (at most two a second), nothing moves in between.
    const done = progress === undefined ? 0 : Math.round(progressFraction(progress) * 100);
    this.element.classList.toggle("ilastik-has-progress", progress !== undefined);
    this.progressFill.style.width = progress === undefined ? "" : `${done}%`;
    this.progressEl.setAttribute("aria-valuenow", String(done));
    this.progressEl.setAttribute("aria-hidden", busy || progress !== undefined ? "false" : "true");
    // the kernel's status line usually says the same ("Predicting 3 of 12 chunks…"): then once is enough
    const said = progress !== undefined && status.includes(`${progress.done} of ${progress.total}`);
    this.progressText.textContent = progress === undefined || said ? "" : progressText(progress);
    this.stopButton.style.display = busy || progress !== undefined ? "" : "none";
  }

  renderMode() {
    const mode = this.model.get("mode");
    for (const [name, button] of this.modeButtons) {
      button.classList.toggle("active", name === mode);
      button.setAttribute("aria-pressed", String(name === mode));
    }
  }

  renderBrush() {
    const size = Number(this.model.get("brush_size") ?? BRUSH_SIZE_MIN);
    if (document.activeElement !== this.brushInput || this.brushInput.value !== String(size)) {
      this.brushInput.value = String(size);
    }
    this.brushValue.textContent = `${size} px`;
  }

  renderLive() {
    const live = Boolean(this.model.get("live"));
    this.liveInput.checked = live;
    this.updateButton.classList.toggle("ilastik-emphasis", !live);
  }

  renderClasses() {
    const classes: ClassInfo[] = this.model.get("classes") ?? [];
    const active = Number(this.model.get("active_class") ?? 1);
    // Keep a name field that is being edited.
    const editing = document.activeElement instanceof HTMLInputElement && this.classesEl.contains(document.activeElement)
      && document.activeElement.type === "text" ? document.activeElement.getAttribute("data-testid") : null;
    const rows = classes.map((c, i) => {
      const label = i + 1;
      const pick = () => {
        if (Number(this.model.get("active_class")) !== label) this.setTrait("active_class", label);
      };
      const swatch = h("button", {
        type: "button", class: "ilastik-swatch", title: `Paint with ${c.name} (${label <= 9 ? label : ""})`,
        testid: `class-pick-${label}`, style: { background: c.color },
      }, label <= 9 ? String(label) : "");
      const color = h("input", { type: "color", value: c.color, testid: `class-color-${label}`, title: "Colour",
        onchange: (e: Event) => this.send({ type: "recolor-class", label, color: (e.target as HTMLInputElement).value }),
      }) as HTMLInputElement;
      const name = h("input", { type: "text", value: c.name, testid: `class-name-${label}`, maxLength: MAX_NAME_LENGTH,
        title: "Class name", "aria-label": `Name of class ${label}`,
        onchange: (e: Event) => {
          const value = (e.target as HTMLInputElement).value.trim();
          if (value && value !== c.name) this.send({ type: "rename-class", label, name: value });
          else (e.target as HTMLInputElement).value = c.name;
        },
        onkeydown: (e: KeyboardEvent) => {
          if (e.key === "Enter") (e.target as HTMLInputElement).blur();
          if (e.key === "Escape") {
            (e.target as HTMLInputElement).value = c.name;
            (e.target as HTMLInputElement).blur();
          }
        },
      }) as HTMLInputElement;
      const del = h("button", { type: "button", class: "ilastik-icon", testid: `class-delete-${label}`,
        title: `Delete ${c.name} and its strokes`, disabled: classes.length <= 1,
        onclick: (e: Event) => {
          // A class with strokes asks once more, inside the panel (no modal dialog): a second click deletes.
          const button = e.currentTarget as HTMLButtonElement;
          const n = (this.model.get("strokes") ?? []).filter((s: StrokeSummary) => s.label === label).length;
          if (n === 0 || button.classList.contains("confirm")) {
            this.send({ type: "remove-class", label });
            return;
          }
          button.classList.add("confirm");
          button.textContent = `Delete ${n} stroke${n === 1 ? "" : "s"}?`;
          button.title = `Click again to delete "${c.name}" and its strokes (this cannot be undone)`;
          setTimeout(() => {
            button.classList.remove("confirm");
            button.textContent = "✕";
          }, 4000);
        },
      }, "✕");
      const row = h("div", {
        class: `ilastik-class${label === active ? " active" : ""}`, testid: `class-row-${label}`,
        "aria-selected": String(label === active),
        // Anywhere on the row picks the class (the name field too), except the colour and delete controls.
        onclick: (e: Event) => {
          if ((e.target as Element).closest("input[type=color], [data-testid^=class-delete]") === null) pick();
        },
      }, swatch, color, name, del);
      return row;
    });
    this.classesEl.replaceChildren(...rows);
    const full = classes.length >= MAX_CLASSES;
    this.addClassButton.disabled = full;
    this.addClassButton.title = full ? `A session has at most ${MAX_CLASSES} classes` : "Add a class";
    if (editing !== null) {
      const field = this.classesEl.querySelector<HTMLInputElement>(`[data-testid="${editing}"]`);
      field?.focus();
    }
  }

  renderLayers() {
    const settings: Record<string, { visible?: boolean; opacity?: number }> = this.model.get("layers") ?? {};
    const update = (name: string, patch: { visible?: boolean; opacity?: number }) => {
      const current = this.model.get("layers") ?? {};
      this.setTrait("layers", { ...current, [name]: { ...(current[name] ?? {}), ...patch } });
    };
    const names = (Object.keys(settings).length > 0 ? Object.keys(settings) : [...LAYER_NAMES])
      // the objects layer exists once objects were found
      .filter((name) => name !== "objects" || typeof this.model.get("objects_info")?.count === "number");
    const rows = names.map((name) => {
      const known = (LAYER_NAMES as readonly string[]).includes(name) ? (name as LayerName) : undefined;
      const title = known === undefined ? name : LAYER_TITLES[known];
      const s = { ...(known === undefined ? {} : DEFAULT_LAYER_SETTINGS[known]), ...(settings[name] ?? {}) };
      const key = known === undefined ? undefined : LAYER_KEYS[known];
      const keyHint = key === undefined ? "" : ` (${key})`;
      const visible = h("input", { type: "checkbox", checked: s.visible !== false, testid: `layer-visible-${name}`,
        onchange: (e: Event) => update(name, { visible: (e.target as HTMLInputElement).checked }) }) as HTMLInputElement;
      const opacity = h("input", { type: "range", min: "0", max: "1", step: "0.05", value: String(s.opacity ?? 1),
        testid: `layer-opacity-${name}`, title: `Opacity of ${title.toLowerCase()}`,
        onchange: (e: Event) => update(name, { opacity: Number((e.target as HTMLInputElement).value) }) });
      return h("div", { class: "ilastik-layer" }, h("label", { title: `Show ${title.toLowerCase()}${keyHint}` }, visible,
        ` ${title}`), opacity);
    });
    this.layersEl.replaceChildren(...rows);
  }

  renderFeatures() {
    const info = this.model.get("source_info");
    this.featureTableJson = JSON.stringify(info?.feature_table ?? null);
    const table = featureTable(info);
    for (const button of this.featureButtons) button.disabled = table === undefined;
    if (table === undefined) {
      // An older kernel (or a broken message): say so instead of guessing a matrix the kernel may not accept.
      this.featuresEl.replaceChildren(h("div", { class: "ilastik-empty", testid: "features-unavailable" },
        "The kernel sent no feature table, so features cannot be chosen here (is the kernel's ilastik_widget " +
        "older than this page? Restart the kernel). In Python: w.set_feature(name, scale, on)."));
      return;
    }
    const selection = this.model.get("feature_selection") ?? {};
    const head = h("tr", {}, h("th", {}, "σ"), ...table.scales.map((s) => h("th", {}, scaleText(s))));
    const rows = table.features.map((f) => {
      const about = f.description ? `${f.title}: ${f.description}` : f.title;
      return h("tr", {}, h("th", { class: "ilastik-feature-name", title: `${about}${channelText(f)}` }, f.title),
        ...table.scales.map((scale) => {
          const sigma = `σ = ${scaleText(scale)}`;
          if (!f.scales.some((s) => sameScale(s, scale))) {
            return h("td", { class: "ilastik-cell-na", title: `${f.title} has no ${sigma}` });
          }
          const box = h("input", { type: "checkbox", checked: featureEnabled(selection, f.name, scale),
            testid: `feature-cell-${f.name}-${scaleText(scale)}`, title: `${about}, ${sigma}`,
            onchange: (e: Event) => this.setTrait("feature_selection",
              withFeature(this.model.get("feature_selection"), f.name, scale, (e.target as HTMLInputElement).checked)),
          });
          return h("td", {}, box);
        }));
    });
    if (Number(info?.ndim) === 3 && table.scales2d.length > 0) {
      // ilastik's "in 2D" column (here a row, scales being columns): filters of that scale run slice by slice
      rows.push(h("tr", { class: "ilastik-in-2d" }, h("th", { class: "ilastik-feature-name",
        title: "Compute the filters of this scale in 2D, slice by slice (nothing along z): for anisotropic " +
          "volumes or structures that change from slice to slice" }, "in 2D"),
      ...table.scales.map((scale) => {
        if (!table.scales2d.some((s) => sameScale(s, scale))) return h("td", { class: "ilastik-cell-na" });
        return h("td", {}, h("input", { type: "checkbox", checked: scaleIn2d(selection, scale),
          testid: `feature-2d-${scaleText(scale)}`, title: `σ = ${scaleText(scale)} in 2D (slice by slice)`,
          onchange: (e: Event) => this.setTrait("feature_selection",
            with2d(this.model.get("feature_selection"), scale, (e.target as HTMLInputElement).checked)),
        }));
      })));
    }
    this.featuresEl.replaceChildren(h("table", {}, h("thead", {}, head), h("tbody", {}, ...rows)));
  }

  renderStrokes() {
    const strokes: StrokeSummary[] = this.model.get("strokes") ?? [];
    const classes: ClassInfo[] = this.model.get("classes") ?? [];
    this.strokeCountEl.textContent = `(${strokes.length})`;
    if (strokes.length === 0) {
      this.strokesEl.replaceChildren(h("li", { class: "ilastik-empty" }, "No strokes yet: paint on the image."));
      return;
    }
    // Newest first.
    const axes: string[] = this.model.get("source_info")?.axes ?? ["z", "y", "x"].slice(-(strokes[0]?.center.length ?? 2));
    const items = strokes.slice().reverse().map((s) => {
      const cls = classes[s.label - 1];
      const text = strokeText(s, s.label === 0 ? "Imported labels" : (cls?.name ?? `Class ${s.label}`), axes);
      return h("li", {
        class: "ilastik-stroke", testid: `stroke-row-${s.id}`, title: "Click to move the view here",
        onclick: (e: Event) => {
          if ((e.target as Element).closest("button") === null) this.actions.goToStroke(s);
        },
      },
      h("span", { class: `ilastik-swatch small${s.erase ? " erase" : ""}`, style: { background: s.erase ? "" : (cls?.color ?? "#888") } }),
      h("span", { class: "ilastik-stroke-text" }, text),
      h("button", { type: "button", class: "ilastik-icon", testid: `stroke-delete-${s.id}`, title: "Delete this stroke",
        onclick: () => this.send({ type: "remove-stroke", stroke_id: s.id }) }, "✕"));
    });
    this.strokesEl.replaceChildren(...items);
  }
}

