// Navigating the viewer as a person expects: the wheel zooms in steps of about 1.2x (a 2D image; ctrl+wheel and a
// trackpad's pinch on volumes) instead of Neuroglancer's ~1.8x, "fit" brings the whole image back into view, centred,
// the slice keys step through a volume from the panel under the pointer, and a click (no drag) is reported with the
// voxel it landed on (objects answer with their row).

import type { SliceViewPanel } from "neuroglancer/unstable/sliceview/panel.js";
import type { ActionEvent } from "neuroglancer/unstable/util/event_action_map.js";
import { EventActionMap } from "neuroglancer/unstable/util/event_action_map.js";
import type { Viewer } from "neuroglancer/unstable/viewer.js";
import { slicePanels } from "../brush/brush.js";
import type { AxisMap } from "../brush/geometry.js";
import { PanelGeometry } from "../brush/geometry.js";
import { boxCorners, fitFactor, voxelIndex, wheelZoomFactor } from "./view_math.js";

const ZOOM_ACTION = "ilastik-widget-zoom-via-wheel";
/** A press and release closer than this (pixels) is a click, not a drag. */
const CLICK_SLOP_PX = 4;

/** A click on a slice panel: the voxel (array order) it landed on, and the plane of the panel. */
export interface VoxelClick {
  voxel: number[];
  planeAxes: number[];
  event: PointerEvent;
}

export class Navigation {
  private hovered: SliceViewPanel | undefined;
  private clickListeners = new Set<(click: VoxelClick) => void>();
  private disposers: Array<() => void> = [];

  constructor(
    private viewer: Viewer,
    private container: HTMLElement,
    private axisMap: AxisMap,
    private shape: readonly number[],
    /** Moves the view centre to array coordinates (the viewer's own setter: it waits for the dimensions). */
    private setPosition: (point: number[]) => void,
  ) {
    viewer.bindAction(ZOOM_ACTION, (event: ActionEvent<WheelEvent>) => this.zoom(event));
    const bindings: Record<string, unknown> = { "at:control+wheel": { action: ZOOM_ACTION, preventDefault: true } };
    // a 2D image has no slices to step through: the plain wheel zooms
    if (shape.length === 2) bindings["at:wheel"] = { action: ZOOM_ACTION, preventDefault: true };
    const map = EventActionMap.fromObject(bindings as any);
    viewer.inputEventBindings.sliceView.addParent(map, 1000);
    this.disposers.push(() => viewer.inputEventBindings.sliceView.removeParent(map));

    const onMove = (e: PointerEvent) => {
      this.hovered = this.panelAt(e.target) ?? this.hovered;
    };
    let press: { x: number; y: number; button: number } | undefined;
    const onDown = (e: PointerEvent) => {
      press = { x: e.clientX, y: e.clientY, button: e.button };
    };
    const onUp = (e: PointerEvent) => {
      const p = press;
      press = undefined;
      if (p === undefined || p.button !== e.button || e.button !== 0) return;
      if (Math.hypot(e.clientX - p.x, e.clientY - p.y) > CLICK_SLOP_PX) return;
      this.reportClick(e);
    };
    container.addEventListener("pointermove", onMove, { passive: true });
    container.addEventListener("pointerdown", onDown, true);
    window.addEventListener("pointerup", onUp, true);
    this.disposers.push(() => {
      container.removeEventListener("pointermove", onMove);
      container.removeEventListener("pointerdown", onDown, true);
      window.removeEventListener("pointerup", onUp, true);
    });
  }

  private panelAt(target: EventTarget | null): SliceViewPanel | undefined {
    if (!(target instanceof Node)) return undefined;
    return slicePanels(this.viewer).find((p) => p.element === target || p.element.contains(target));
  }

  private zoom(event: ActionEvent<WheelEvent>): void {
    const e = event.detail;
    const panel = this.panelAt(e.target) as any;
    if (panel === undefined) return;
    event.stopPropagation();
    panel.context?.flagContinuousCameraMotion?.();
    panel.onMousemove?.(e, false); // zoom about the pointer
    panel.zoomByMouse(wheelZoomFactor(e.deltaY, e.deltaMode));
  }

  /** Calls `listener` for every click (press and release without a drag) on a slice panel. */
  onClick(listener: (click: VoxelClick) => void): () => void {
    this.clickListeners.add(listener);
    return () => this.clickListeners.delete(listener);
  }

  private reportClick(e: PointerEvent): void {
    if (this.clickListeners.size === 0 || !this.axisMap.ready) return;
    const panel = this.panelAt(e.target);
    if (panel === undefined) return;
    const geometry = new PanelGeometry(panel);
    if (!geometry.valid) return;
    const voxel = voxelIndex(this.axisMap.toArray(geometry.clientToGlobal(e.clientX, e.clientY)));
    const planeAxes = geometry.planeGlobalDims().map((d) => this.axisMap.arrayAxisOfGlobal(d)).sort();
    for (const listener of this.clickListeners) listener({ voxel, planeAxes, event: e });
  }

  /**
   * Shows the whole image, centred: the panels' canonical orientation, the centre of the image in their planes (a
   * volume keeps the slice it shows along z, as napari's home keeps the slice), and the zoom at which every panel
   * shows the whole box.
   */
  fit(): void {
    const { viewer } = this;
    viewer.crossSectionOrientation.restoreState([0, 0, 0, 1]);
    const centre = this.shape.map((n) => (n - 1) / 2);
    if (this.shape.length === 3 && this.axisMap.ready) {
      centre[0] = this.axisMap.toArray(viewer.position.value)[0];
    }
    this.setPosition(centre);
    this.fitZoom(centre);
    // the panels take a new orientation in their next frame: measure again then
    requestAnimationFrame(() => this.fitZoom(centre));
  }

  /**
   * Zooms so that every panel shows the whole image around `centre` (array coordinates; default the view's centre).
   * Returns false when no panel is laid out yet.
   */
  fitZoom(centre?: number[]): boolean {
    if (!this.axisMap.ready) return false;
    centre ??= this.axisMap.toArray(this.viewer.position.value);
    const scale = this.viewer.crossSectionScale.value;
    const centreGlobal = this.axisMap.toGlobal(centre, this.viewer.position.value);
    const corners = boxCorners(this.shape).map((c) => this.axisMap.toGlobal(c, centreGlobal));
    let factor: number | undefined;
    for (const panel of slicePanels(this.viewer)) {
      const geometry = new PanelGeometry(panel);
      if (!geometry.valid) continue;
      const { width, height } = geometry.size();
      const offsets = corners.map((c) => geometry.offsetToPixels(c.map((v, i) => v - centreGlobal[i])));
      const f = fitFactor(offsets, width, height);
      if (f !== undefined) factor = Math.max(factor ?? 0, f);
    }
    if (factor === undefined) return false;
    if (Math.abs(factor - 1) > 1e-3) this.viewer.crossSectionScale.value = scale * factor;
    return true;
  }

  /**
   * Moves the panel under the pointer (else the first) `delta` slices along the array axis it cuts (for an oblique
   * panel the nearest one): "next" is always the higher index, as the panel's title counts.
   */
  stepSlice(delta: number): void {
    if (this.shape.length !== 3 || !this.axisMap.ready) return;
    const panels = slicePanels(this.viewer);
    const panel = this.hovered !== undefined && panels.includes(this.hovered) ? this.hovered : panels[0];
    if (panel === undefined) return;
    const geometry = new PanelGeometry(panel);
    if (!geometry.valid) return;
    const inPlane = geometry.planeGlobalDims().map((d) => this.axisMap.arrayAxisOfGlobal(d));
    const axis = [0, 1, 2].find((a) => !inPlane.includes(a));
    if (axis === undefined) return;
    const point = voxelIndex(this.axisMap.toArray(this.viewer.position.value));
    const index = Math.min(this.shape[axis] - 1, Math.max(0, point[axis] + delta));
    if (index === point[axis]) return;
    const position = this.axisMap.toArray(this.viewer.position.value);
    position[axis] = index;
    this.setPosition(position);
  }

  dispose(): void {
    for (const d of this.disposers) d();
    this.disposers = [];
    this.clickListeners.clear();
  }
}
