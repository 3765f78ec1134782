// The panel's answers beyond a probability map (ilastik_widget/widget/objects.py): "Objects" (find the objects of a
// class with a threshold, their count, the row of a clicked object), "In view" (labelled pixels per class and the
// predicted share of each class in the region shown: the `class_insight` trait) and "Export" (the results written to a
// path on the kernel's side, with progress in the status line and Stop).

import { h } from "./dom.js";
import type { ClassInfo, PanelModel, PanelRequest } from "./panel.js";

/** The table row of one object (`object-row` reply): column -> value. */
export type ObjectRow = Record<string, number | string | boolean | null>;

const EXPORT_OUTPUTS = ["probabilities", "segmentation", "uncertainty", "objects"] as const;

function number(value: unknown, digits = 1): string {
  if (typeof value !== "number" || !Number.isFinite(value)) return "?";
  return Number.isInteger(value) ? value.toLocaleString("en-US") : value.toFixed(digits);
}

/** An object's row in words: its number, area and centroid with the image's axis names. */
export function objectRowText(object: number, row: ObjectRow | null, axes: readonly string[]): string {
  if (row === null || object <= 0) return "No object there.";
  const centroid = axes.map((name, i) => `${name} ${number(row[`centroid-${i}`])}`).join(", ");
  const unit = axes.length === 3 ? "voxels" : "px";
  let text = `Object ${object} · area ${number(row.area)} ${unit} · centroid (${centroid})`;
  if (typeof row.intensity_mean === "number") text += ` · mean intensity ${number(row.intensity_mean, 3)}`;
  return text;
}

/** A fraction as a percentage for the panel ("34%", "<1%", "–" when unknown). */
export function percent(value: unknown): string {
  if (typeof value !== "number" || !Number.isFinite(value)) return "–";
  if (value > 0 && value < 0.01) return "<1%";
  return `${Math.round(value * 100)}%`;
}

export interface ResultsActions {
  request(body: PanelRequest): Promise<unknown>;
}

export class ResultsSections {
  readonly objects: HTMLElement;
  readonly insight: HTMLElement;
  readonly export: HTMLElement;
  private classSelect: HTMLSelectElement;
  private threshold: HTMLInputElement;
  private minSize: HTMLInputElement;
  private split: HTMLInputElement;
  private runButton: HTMLButtonElement;
  private countEl: HTMLElement;
  private rowEl: HTMLElement;
  private insightBody: HTMLElement;
  private exportPath: HTMLInputElement;
  private exportBoxes = new Map<string, HTMLInputElement>();
  private exportFormat: HTMLSelectElement;
  private exportButton: HTMLButtonElement;
  private exportResult: HTMLElement;

  constructor(
    private model: PanelModel,
    private actions: ResultsActions,
  ) {
    // ---- objects
    this.classSelect = h("select", { testid: "objects-class", title: "The class whose objects to find" });
    this.threshold = h("input", { type: "number", min: "0", max: "1", step: "0.05", value: "0.5",
      testid: "objects-threshold", title: "Probability threshold of the class (0 to 1)" }) as HTMLInputElement;
    this.minSize = h("input", { type: "number", min: "0", step: "1", value: "10", testid: "objects-min-size",
      title: "Smaller objects are dropped (pixels; voxels in a volume)" }) as HTMLInputElement;
    this.split = h("input", { type: "checkbox", testid: "objects-split" }) as HTMLInputElement;
    this.runButton = h("button", { type: "button", testid: "objects-run", onclick: () => this.findObjects() },
      "Find objects");
    this.countEl = h("div", { class: "ilastik-objects-count", testid: "objects-count" });
    this.rowEl = h("div", { class: "ilastik-object-row", testid: "object-row" });
    this.objects = h("details", { class: "ilastik-section", testid: "objects-section" },
      h("summary", { class: "ilastik-heading" }, "Objects"),
      h("div", { class: "ilastik-row" }, this.classSelect,
        h("label", { title: "Probability threshold" }, "p ≥ ", this.threshold)),
      h("div", { class: "ilastik-row" }, h("label", {}, "min size ", this.minSize),
        h("label", { title: "Separate touching objects" }, this.split, " split touching")),
      h("div", { class: "ilastik-row" }, this.runButton),
      this.countEl, this.rowEl);

    // ---- class insight
    this.insightBody = h("div", { class: "ilastik-insight", testid: "insight" });
    this.insight = h("details", { class: "ilastik-section", open: true, testid: "insight-section" },
      h("summary", { class: "ilastik-heading", title: "Labelled pixels per class, and the predicted share of " +
        "each class in the region shown" }, "Classes in view"), this.insightBody);

    // ---- export
    this.exportPath = h("input", { type: "text", value: "results.ome.zarr", testid: "export-path",
      title: "Where to write, on the kernel's side (relative to the notebook's folder)" }) as HTMLInputElement;
    const boxes = EXPORT_OUTPUTS.map((name) => {
      const box = h("input", { type: "checkbox", testid: `export-${name}`, checked: name !== "uncertainty" }) as HTMLInputElement;
      this.exportBoxes.set(name, box);
      return h("label", {}, box, ` ${name}`);
    });
    this.exportFormat = h("select", { testid: "export-format" },
      h("option", { value: "zarr" }, "OME-Zarr"), h("option", { value: "tiff" }, "TIFF"));
    this.exportButton = h("button", { type: "button", testid: "export-run", onclick: () => this.startExport() },
      "Export");
    this.exportResult = h("div", { class: "ilastik-export-result", testid: "export-result" });
    this.export = h("details", { class: "ilastik-section", testid: "export-section" },
      h("summary", { class: "ilastik-heading" }, "Export"),
      h("div", { class: "ilastik-row" }, this.exportPath),
      h("div", { class: "ilastik-row" }, ...boxes),
      h("div", { class: "ilastik-row" }, this.exportFormat, this.exportButton),
      this.exportResult);
  }

  private axes(): string[] {
    const axes = this.model.get("source_info")?.axes;
    return Array.isArray(axes) ? axes.map(String) : ["y", "x"];
  }

  private findObjects(): void {
    const label = Number(this.classSelect.value);
    const threshold = Number(this.threshold.value);
    const minSize = Number(this.minSize.value);
    const body: PanelRequest = { type: "objects", label, threshold, split: this.split.checked };
    if (this.minSize.value !== "" && Number.isInteger(minSize)) body.min_size = minSize;
    this.runButton.disabled = true;
    this.countEl.textContent = "Finding objects…";
    this.actions.request(body).catch(() => undefined).finally(() => {
      this.runButton.disabled = false;
      this.renderObjects();
    });
  }

  private startExport(): void {
    const outputs = EXPORT_OUTPUTS.filter((name) => this.exportBoxes.get(name)?.checked);
    const path = this.exportPath.value.trim();
    if (!path || outputs.length === 0) {
      this.exportResult.textContent = path ? "Choose at least one output." : "Give a path to write to.";
      return;
    }
    this.exportButton.disabled = true;
    this.exportResult.textContent = "Exporting… (Stop ends it)";
    this.actions.request({ type: "export", path, outputs: [...outputs], format: this.exportFormat.value })
      .then((reply: any) => {
        const written: string[] = Array.isArray(reply?.content?.written) ? reply.content.written : [];
        this.exportResult.textContent = `Wrote ${written.length} item${written.length === 1 ? "" : "s"}: ` +
          written.join(", ");
      })
      .catch((error: unknown) => {
        this.exportResult.textContent = `Not exported: ${error instanceof Error ? error.message : String(error)}`;
      })
      .finally(() => {
        this.exportButton.disabled = false;
      });
  }

  /** Shows the row of the object clicked in the viewer (the `object-row` reply). */
  showObjectRow(object: number, row: ObjectRow | null): void {
    this.rowEl.textContent = objectRowText(object, row, this.axes());
  }

  renderObjects(): void {
    const classes: ClassInfo[] = this.model.get("classes") ?? [];
    const info = this.model.get("objects_info") ?? {};
    const chosen = this.classSelect.value || String(classes.length >= 2 ? 2 : 1);
    this.classSelect.replaceChildren(...classes.map((c, i) =>
      h("option", { value: String(i + 1) }, `${i + 1}: ${c.name}`)));
    this.classSelect.value = Number(chosen) <= classes.length ? chosen : "1";
    const trained = this.model.get("class_insight")?.generation !== null &&
      this.model.get("class_insight")?.generation !== undefined;
    this.runButton.title = trained || info.count !== undefined ? "Find the objects of this class"
      : "Paint two classes first: objects come from the predictions";
    if (typeof info.count !== "number") {
      if (!this.runButton.disabled) this.countEl.textContent = "No objects yet.";
      this.rowEl.textContent = "";
      return;
    }
    const unit = this.axes().length === 3 ? "voxels" : "px";
    let text = `${info.count.toLocaleString("en-US")} object${info.count === 1 ? "" : "s"} of ${info.class_name || `class ${info.label}`}` +
      ` · ${Number(info.total_area ?? 0).toLocaleString("en-US")} ${unit}`;
    if (info.stale) text += " (from an earlier model: find them again)";
    this.countEl.textContent = text;
    if (!this.rowEl.textContent) {
      this.rowEl.textContent = "Navigate mode (n): click an object to see its row.";
    }
  }

  renderInsight(): void {
    const insight = this.model.get("class_insight") ?? {};
    const classes: any[] = Array.isArray(insight.classes) ? insight.classes : [];
    if (classes.length === 0) {
      this.insightBody.replaceChildren(h("div", { class: "ilastik-empty" }, "No classes."));
      return;
    }
    const unit = this.axes().length === 3 ? "voxels" : "px";
    const head = h("tr", {}, h("th", {}, "Class"), h("th", { title: `Labelled ${unit}` }, "Labelled"),
      h("th", { title: insight.in_view ? "Predicted share of the region shown" : "Predicted share of the image" },
        insight.in_view ? "In view" : "Image"));
    const rows = classes.map((c) => h("tr", { testid: `insight-row-${c.label}` },
      h("td", {}, h("span", { class: "ilastik-swatch small", style: { background: String(c.color ?? "#888") } }),
        ` ${c.name}`),
      h("td", { testid: `insight-labelled-${c.label}` }, Number(c.labelled ?? 0).toLocaleString("en-US")),
      h("td", { testid: `insight-fraction-${c.label}` },
        h("span", { class: "ilastik-share", style: { width: `${Math.round((Number(c.predicted_fraction) || 0) * 100)}%`,
          background: String(c.color ?? "#888") } }),
        percent(c.predicted_fraction))));
    const table = h("table", {}, h("thead", {}, head), h("tbody", {}, ...rows));
    const note = insight.generation === null || insight.generation === undefined
      ? "Shares appear once the classifier is trained."
      : insight.measured_voxels !== null && insight.region_voxels !== null &&
          Number(insight.measured_voxels) < Number(insight.region_voxels)
        ? `Estimated from ${Number(insight.measured_voxels).toLocaleString("en-US")} of ` +
          `${Number(insight.region_voxels).toLocaleString("en-US")} ${unit}.`
        : "";
    this.insightBody.replaceChildren(table, ...(note ? [h("div", { class: "ilastik-empty" }, note)] : []));
  }
}
