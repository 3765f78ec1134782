// What the viewer writes over the image: the cursor readout (the voxel under the pointer in array order with the
// image's axis names, and the raw image's value there) and, on volumes, each panel's title (its plane in the image's
// axis names and the slice it shows). Neuroglancer's own widgets for these (the dimension pop-up, the layer hover
// values) stay hidden: they speak in its global coordinates, not the image's.

import type { SliceViewPanel } from "neuroglancer/unstable/sliceview/panel.js";
import type { Viewer } from "neuroglancer/unstable/viewer.js";
import { slicePanels } from "../brush/brush.js";
import type { AxisMap } from "../brush/geometry.js";
import { PanelGeometry } from "../brush/geometry.js";
import { inside, panelTitle, readoutText, voxelIndex } from "./view_math.js";

export class Overlays {
  readonly readout: HTMLElement;
  private titles = new Map<SliceViewPanel, HTMLElement>();
  private scheduled = false;
  private disposers: Array<() => void> = [];

  constructor(
    private viewer: Viewer,
    container: HTMLElement,
    private axisMap: AxisMap,
    private shape: readonly number[],
    private axes: readonly string[],
    private rawLayer = "raw",
  ) {
    this.readout = document.createElement("div");
    this.readout.className = "ilastik-readout";
    this.readout.setAttribute("data-testid", "readout");
    container.appendChild(this.readout);
    const schedule = () => this.schedule();
    this.disposers.push(
      viewer.mouseState.changed.add(schedule),
      viewer.layerSelectedValues.changed.add(schedule),
      viewer.position.changed.add(schedule),
      viewer.layout.changed.add(schedule),
      viewer.display.updateFinished.add(schedule),
    );
    this.schedule();
  }

  private schedule(): void {
    if (this.scheduled) return;
    this.scheduled = true;
    requestAnimationFrame(() => {
      this.scheduled = false;
      this.update();
    });
  }

  /** The raw image's value at a global position, from the chunks the viewer holds (undefined if none is loaded). */
  private valueAt(position: Float32Array): unknown {
    const managed = this.viewer.layerManager.getLayerByName(this.rawLayer);
    const layer = managed?.layer as any;
    if (layer === undefined || layer === null || !managed!.visible) return undefined;
    try {
      return layer.getValueAt(position, { pickedRenderLayer: null });
    } catch {
      return undefined;
    }
  }

  private update(): void {
    if (!this.axisMap.ready) return;
    const mouse = this.viewer.mouseState;
    let text = "";
    if (mouse.active && mouse.position.length === this.viewer.coordinateSpace.value.rank) {
      const index = voxelIndex(this.axisMap.toArray(mouse.position));
      const value = inside(index, this.shape) ? this.valueAt(mouse.position) : undefined;
      text = readoutText(this.axes, index, this.shape, value);
    }
    if (this.readout.textContent !== text) this.readout.textContent = text;
    this.readout.style.display = text ? "" : "none";
    if (this.shape.length === 3) this.updateTitles();
  }

  private updateTitles(): void {
    const panels = slicePanels(this.viewer);
    for (const [panel, el] of this.titles) {
      if (!panels.includes(panel)) {
        el.remove();
        this.titles.delete(panel);
      }
    }
    const index = voxelIndex(this.axisMap.toArray(this.viewer.position.value));
    for (const panel of panels) {
      const geometry = new PanelGeometry(panel);
      if (!geometry.valid) continue;
      const planeAxes = geometry.planeGlobalDims().map((d) => this.axisMap.arrayAxisOfGlobal(d));
      if (planeAxes.some((a) => a < 0)) continue;
      let el = this.titles.get(panel);
      if (el === undefined || el.parentElement !== panel.element) {
        el = document.createElement("div");
        el.className = "ilastik-panel-title";
        panel.element.appendChild(el);
        this.titles.set(panel, el);
      }
      const text = panelTitle(planeAxes, this.axes, index);
      if (el.textContent !== text) {
        el.textContent = text;
        el.setAttribute("data-testid", `panel-title-${text.split(" ")[0]}`);
      }
    }
  }

  dispose(): void {
    for (const d of this.disposers) d();
    this.disposers = [];
    for (const el of this.titles.values()) el.remove();
    this.titles.clear();
    this.readout.remove();
  }
}
