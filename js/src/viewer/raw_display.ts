// The raw layer's display from the widget's display traits (ilastik_widget/widget/display.py): each channel's window
// (`contrast_limits`), and a composite's colours and visibility, set as the values of the shader controls that
// serving/layer_specs.py `raw_shader` declares (contrast<i>, color<i>, visible<i>). Control values change the
// picture without compiling a new shader. A raw layer made again (new specs, the fallback of a remote source) gets the
// display once more.

import type { Viewer } from "neuroglancer/unstable/viewer.js";
import { shaderWindow } from "./view_math.js";

/** What the display traits say. */
export interface RawDisplay {
  contrast?: number[][];
  colors?: string[];
  visible?: boolean[];
}

/** Bounds of Neuroglancer's integer data types (DataType enum order), undefined for float32. */
const INTEGER_BOUNDS: Record<number, [number, number]> = {
  0: [0, 255],
  1: [-128, 127],
  2: [0, 65535],
  3: [-32768, 32767],
  4: [0, 4294967295],
  5: [-2147483648, 2147483647],
};

/** Applies the display to the viewer's raw layer, now and whenever that layer is made anew. */
export class RawDisplayControl {
  private display: RawDisplay = {};
  /** The shader control state watched (the raw layer's), and how to stop watching it. */
  private watched: unknown;
  private unwatch: (() => void) | undefined;
  private readonly unlisten: () => void;

  constructor(private viewer: Viewer, private layerName = "raw") {
    this.unlisten = viewer.layerManager.layersChanged.add(() => this.apply(false));
  }

  set(display: RawDisplay): void {
    this.display = { ...this.display, ...display };
    this.apply(true);
  }

  /** The shader control state of the raw layer, when it has one. */
  private state(): any {
    const managed = this.viewer.layerManager.getLayerByName(this.layerName);
    return (managed?.layer as any)?.shaderControlState;
  }

  private apply(force: boolean): void {
    const state = this.state();
    if (state === undefined) return;
    if (state !== this.watched) {
      // a new raw layer: apply now, and again once its shader's controls are parsed (or parsed anew)
      this.unwatch?.();
      this.watched = state;
      this.unwatch = state.controls?.changed?.add(() => this.apply(true));
      force = true;
    }
    if (!force) return;
    const controls: Map<string, any> | undefined = state.controls?.value;
    if (controls === undefined) {
      // the shader is not parsed yet: Neuroglancer applies JSON values once it is
      state.restoreState({ ...(state.toJSON() ?? {}), ...this.json(() => undefined) });
      return;
    }
    const json = this.json((name) => controls.get(name)?.dataType);
    for (const [name, value] of Object.entries(json)) {
      const trackable = state.state.get(name)?.trackable;
      if (trackable === undefined) continue;
      try {
        trackable.restoreState(value);
      } catch (error) {
        console.warn(`ilastik_widget: could not set the raw layer's ${name}`, error);
      }
    }
  }

  /** Control name -> value JSON; `dataType(name)` is an invlerp control's Neuroglancer data type. */
  private json(dataType: (name: string) => number | undefined): Record<string, unknown> {
    const out: Record<string, unknown> = {};
    const { contrast, colors, visible } = this.display;
    const composite = contrast !== undefined && contrast.length > 1 && colors !== undefined && colors.length > 0;
    (contrast ?? []).forEach((pair, i) => {
      if (!Array.isArray(pair) || pair.length !== 2) return;
      const name = `contrast${i}`;
      const range = shaderWindow(pair[0], pair[1], INTEGER_BOUNDS[dataType(name) ?? -1]);
      out[name] = contrast!.length > 1 ? { range, channel: [i] } : { range };
    });
    if (composite) {
      colors!.forEach((color, i) => {
        out[`color${i}`] = color;
      });
      (visible ?? []).forEach((on, i) => {
        out[`visible${i}`] = on;
      });
    }
    return out;
  }

  dispose(): void {
    this.unwatch?.();
    this.unlisten();
  }
}
