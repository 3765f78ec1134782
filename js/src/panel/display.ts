// The panel's "Display" section: per channel shown, a histogram with two handles (the window's low and high end) and
// their values; for a composite each channel's colour and visibility; for several input channels whether each feeds
// the classifier; and "Auto" (the automatic windows back). It reads and writes the widget's display traits
// (contrast_limits, channel_colors, channel_visible, classifier_channels; ilastik_widget/widget/display.py), which the
// viewer applies to the raw layer (viewer/raw_display.ts): a moved handle changes the screen at once, and the kernel
// hears of it a few times a second while dragging.

import { h } from "./dom.js";
import type { DisplayInfo, Limits } from "./contrast.js";
import {
  channelName,
  displayInfo,
  formatValue,
  fraction,
  histogramPath,
  isInteger,
  limitsOf,
  sliderSpan,
  sliderStep,
  throttle,
  withLimit,
} from "./contrast.js";
import type { PanelModel } from "./panel.js";

const SVG = "http://www.w3.org/2000/svg";
/** The histogram's drawing box (SVG user units; stretched to the control's size). */
const BOX_W = 100;
const BOX_H = 30;
/** How often the kernel hears of a window being dragged. */
const SAVE_MS = 150;

function svg<K extends keyof SVGElementTagNameMap>(tag: K, attrs: Record<string, string>): SVGElementTagNameMap[K] {
  const el = document.createElementNS(SVG, tag);
  for (const [k, v] of Object.entries(attrs)) el.setAttribute(k, v);
  return el;
}

interface ChannelControls {
  low: HTMLInputElement;
  high: HTMLInputElement;
  lowValue: HTMLInputElement;
  highValue: HTMLInputElement;
  windowRect: SVGRectElement;
  histogram: SVGGElement;
  color?: HTMLInputElement;
  visible?: HTMLInputElement;
}

export class DisplaySection {
  readonly element: HTMLElement;
  private body: HTMLElement;
  private structure = "";
  private info: DisplayInfo | undefined;
  private controls: ChannelControls[] = [];
  private train: HTMLInputElement[] = [];
  private readonly save = throttle(() => this.model.save_changes(), SAVE_MS);

  constructor(private model: PanelModel) {
    this.body = h("div", { class: "ilastik-display" });
    this.element = h("details", { class: "ilastik-section", open: true, testid: "display-section" },
      h("summary", { class: "ilastik-heading" }, "Display"), this.body);
  }

  dispose(): void {
    this.save.flush();
  }

  /** Rebuilds the controls when what they show changed, then shows the traits' values. */
  render(): void {
    const sourceInfo = this.model.get("source_info");
    const info = displayInfo(sourceInfo);
    const inputs = Number(sourceInfo?.channels ?? 1);
    const structure = JSON.stringify([info, inputs]);
    if (structure !== this.structure) {
      this.structure = structure;
      this.info = info;
      this.build(info, Number.isInteger(inputs) && inputs > 0 ? inputs : 1);
    }
    this.update();
  }

  private limits(): Limits {
    const n = this.info?.channels ?? 0;
    const current = limitsOf(this.model.get("contrast_limits"), n);
    return current.map((pair, i) => [...(pair ?? this.info?.auto[i] ?? [0, 1])] as [number, number]);
  }

  private setLimits(limits: Limits, now: boolean): void {
    this.model.set("contrast_limits", limits); // the viewer follows this change at once (widget.ts)
    if (now) {
      this.save.cancel();
      this.model.save_changes();
    } else {
      this.save();
    }
  }

  private setList(name: string, index: number, value: unknown): void {
    const list = [...(this.model.get(name) ?? [])];
    list[index] = value;
    this.model.set(name, list);
    this.model.save_changes();
  }

  private build(info: DisplayInfo | undefined, inputs: number): void {
    this.controls = [];
    this.train = [];
    if (info === undefined) {
      this.body.replaceChildren(h("div", { class: "ilastik-empty" }, "The kernel sent no display information " +
        "(is its ilastik_widget older than this page? Restart the kernel). In Python: w.contrast_limits."));
      return;
    }
    const integer = isInteger(info.dtype);
    const rows: HTMLElement[] = [];
    for (let i = 0; i < info.channels; ++i) rows.push(this.channelRow(info, i, integer, inputs));
    // input channels the raw layer does not show (an alpha channel, channels beyond the eighth) still feed the model
    for (let i = info.channels; i < inputs; ++i) {
      rows.push(h("div", { class: "ilastik-channel", testid: `channel-row-${i}` },
        h("div", { class: "ilastik-row" }, h("span", { class: "ilastik-channel-name" },
          `${channelName(info.mode, i)} (not shown)`), this.trainBox(i))));
    }
    const reset = h("button", { type: "button", testid: "contrast-reset",
      title: "Every channel's automatic window (w.reset_contrast())",
      onclick: () => {
        const auto = this.info?.auto;
        if (auto !== undefined && auto.every((pair) => pair !== undefined)) {
          this.setLimits(auto as Limits, true);
        }
      } }, "Auto contrast");
    this.body.replaceChildren(...rows, h("div", { class: "ilastik-row" }, reset));
  }

  private trainBox(i: number): HTMLElement {
    const box = h("input", { type: "checkbox", testid: `channel-train-${i}`,
      onchange: (e: Event) => {
        const on = (e.target as HTMLInputElement).checked;
        const current: number[] = (this.model.get("classifier_channels") ?? []).map(Number);
        const next = on ? [...new Set([...current, i])].sort((a, b) => a - b) : current.filter((c) => c !== i);
        this.model.set("classifier_channels", next);
        this.model.save_changes();
      } }) as HTMLInputElement;
    this.train[i] = box;
    return h("label", { class: "ilastik-train", title: "The classifier uses this channel's features" }, box, " train");
  }

  private channelRow(info: DisplayInfo, i: number, integer: boolean, inputs: number): HTMLElement {
    const name = channelName(info.mode, i);
    const head = h("div", { class: "ilastik-row" });
    const controls: Partial<ChannelControls> = {};
    if (info.mode === "composite") {
      controls.visible = h("input", { type: "checkbox", testid: `channel-visible-${i}`, title: `Show ${name}`,
        onchange: (e: Event) => this.setList("channel_visible", i, (e.target as HTMLInputElement).checked),
      }) as HTMLInputElement;
      controls.color = h("input", { type: "color", testid: `channel-color-${i}`, title: `Colour of ${name}`,
        onchange: (e: Event) => this.setList("channel_colors", i, (e.target as HTMLInputElement).value),
      }) as HTMLInputElement;
      head.append(controls.visible, controls.color);
    }
    head.append(h("span", { class: "ilastik-channel-name" }, name));
    if (inputs > 1) head.append(this.trainBox(i));

    // the histogram with the window shaded, and the two handles over it
    controls.windowRect = svg("rect", { class: "ilastik-window", y: "0", height: String(BOX_H) });
    controls.histogram = svg("g", {});
    const hist = info.histograms[i];
    if (hist !== undefined) {
      controls.histogram.append(svg("path", { d: histogramPath(hist.counts, BOX_W, BOX_H), class: "ilastik-histogram" }));
    }
    const picture = svg("svg", { viewBox: `0 0 ${BOX_W} ${BOX_H}`, preserveAspectRatio: "none",
      "data-testid": `contrast-histogram-${i}` });
    picture.append(controls.windowRect, controls.histogram);
    const slider = (end: 0 | 1) => h("input", { type: "range", testid: `contrast-${end === 0 ? "low" : "high"}-${i}`,
      title: `${end === 0 ? "Low" : "High"} end of ${name}'s display window`,
      oninput: (e: Event) => this.moved(i, end, Number((e.target as HTMLInputElement).value), false),
      onchange: (e: Event) => this.moved(i, end, Number((e.target as HTMLInputElement).value), true),
    }) as HTMLInputElement;
    controls.low = slider(0);
    controls.high = slider(1);
    const field = (end: 0 | 1) => h("input", { type: "number", class: "ilastik-contrast-value",
      testid: `contrast-${end === 0 ? "low" : "high"}-value-${i}`, "aria-label": `${end === 0 ? "Low" : "High"} end`,
      step: integer ? "1" : "any",
      onchange: (e: Event) => {
        const value = Number((e.target as HTMLInputElement).value);
        if (Number.isFinite(value)) this.moved(i, end, value, true);
        else this.update();
      },
      onkeydown: (e: KeyboardEvent) => {
        if (e.key === "Enter") (e.target as HTMLInputElement).blur();
      } }) as HTMLInputElement;
    controls.lowValue = field(0);
    controls.highValue = field(1);
    this.controls[i] = controls as ChannelControls;
    const range = h("div", { class: "ilastik-contrast", testid: `contrast-${i}` }, picture, controls.low, controls.high);
    const values = h("div", { class: "ilastik-contrast-values" }, controls.lowValue, h("span", {}, "–"), controls.highValue);
    return h("div", { class: "ilastik-channel", testid: `channel-row-${i}` }, head, range, values);
  }

  private moved(channel: number, end: 0 | 1, value: number, done: boolean): void {
    const info = this.info;
    if (info === undefined) return;
    const limits = this.limits();
    const span = sliderSpan(info.histograms[channel], limits[channel]);
    const next = withLimit(limits, channel, end, value, sliderStep(span, isInteger(info.dtype)));
    this.setLimits(next, done);
    this.update();
  }

  /** Shows the traits' values in the controls (without rebuilding them: a handle being dragged stays grabbed). */
  update(): void {
    const info = this.info;
    if (info === undefined) return;
    const integer = isInteger(info.dtype);
    const limits = this.limits();
    const colors: string[] = this.model.get("channel_colors") ?? [];
    const visible: boolean[] = this.model.get("channel_visible") ?? [];
    this.controls.forEach((c, i) => {
      const window = limits[i];
      const hist = info.histograms[i];
      const span = sliderSpan(hist, window);
      const step = String(sliderStep(span, integer));
      for (const [input, v] of [[c.low, window[0]], [c.high, window[1]]] as const) {
        // the bounds first: a value outside the old bounds would be clamped
        if (input.min !== String(span[0])) input.min = String(span[0]);
        if (input.max !== String(span[1])) input.max = String(span[1]);
        if (input.step !== step) input.step = step;
        if (Number(input.value) !== v) input.value = String(v);
      }
      for (const [field, v] of [[c.lowValue, window[0]], [c.highValue, window[1]]] as const) {
        if (document.activeElement !== field) field.value = formatValue(v, integer);
      }
      const x0 = fraction(window[0], span) * BOX_W;
      const x1 = fraction(window[1], span) * BOX_W;
      c.windowRect.setAttribute("x", String(x0));
      c.windowRect.setAttribute("width", String(Math.max(0.5, x1 - x0)));
      if (hist !== undefined) {
        // the histogram covers its own range within the slider's span
        const left = fraction(hist.range[0], span) * BOX_W;
        const width = (fraction(hist.range[1], span) * BOX_W - left) / BOX_W;
        c.histogram.setAttribute("transform", `translate(${left} 0) scale(${width} 1)`);
      }
      if (c.color !== undefined && typeof colors[i] === "string" && c.color.value !== colors[i]) c.color.value = colors[i];
      if (c.visible !== undefined) c.visible.checked = visible[i] !== false;
    });
    const train = new Set<number>((this.model.get("classifier_channels") ?? []).map(Number));
    this.train.forEach((box, i) => {
      box.checked = train.has(i);
      // the classifier needs at least one channel: the last one cannot be switched off here
      box.disabled = box.checked && train.size === 1;
    });
  }
}
