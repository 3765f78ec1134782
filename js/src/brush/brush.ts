// Brush and eraser on Neuroglancer's cross-section panels.
//
// In paint/erase mode an EventActionMap binding `at:mousedown0` (stopPropagation) is added with top priority to the
// slice-view bindings, so a left drag paints instead of panning; in navigate mode the map is removed and the mouse
// works as in plain Neuroglancer. Positions come from our own projection of the pointer through the panel under it
// (the same arithmetic Neuroglancer uses for zooming at the mouse), gaps between pointer samples are filled, the
// stroke is drawn on a 2D canvas overlay while dragging and until the labels layer shows it, and on release the
// `onStroke` callback gets the stroke in array index order.

import { SliceViewPanel } from "neuroglancer/unstable/sliceview/panel.js";
import type { ActionEvent } from "neuroglancer/unstable/util/event_action_map.js";
import { EventActionMap } from "neuroglancer/unstable/util/event_action_map.js";
import { startRelativeMouseDrag } from "neuroglancer/unstable/util/mouse_drag.js";
import type { Viewer } from "neuroglancer/unstable/viewer.js";
import type { Mode } from "../protocol.js";
import { BRUSH_SIZE_MAX, BRUSH_SIZE_MIN } from "../protocol.js";
import { AxisMap, PanelGeometry, brushRadius, gapFill, snapToGrid, strokeToArray } from "./geometry.js";

export { AxisMap, PanelGeometry } from "./geometry.js";

export interface BrushSettings {
  mode: Mode;
  /** Brush size: the diameter in pixels of its footprint in the panel's plane (the `brush_size` trait). */
  size: number;
  /** Colour of the active class, "#rrggbb". */
  color: string;
  /** Active class (1-based). */
  label: number;
}

export interface Stroke {
  /** Sampled centres, array index order of the spatial axes ((y, x) or (z, y, x)), voxel units (centre = index). */
  points: number[][];
  /** The brush's radius in pixels, as the kernel takes it: (size - 1) / 2 (half a pixel for size 1). */
  radius: number;
  /** The two array axes of the (nearest axis-aligned) plane the stroke was drawn in, ascending. */
  axes: [number, number];
  erase: boolean;
  label: number;
}

export type StrokeCallback = (stroke: Stroke) => void;

const PAINT_ACTION = "ilastik-widget-paint";

/** Cross-section panels of the viewer, in creation (layout) order. */
export function slicePanels(viewer: Viewer): SliceViewPanel[] {
  const out: SliceViewPanel[] = [];
  for (const panel of viewer.display.panels) {
    if (panel instanceof SliceViewPanel && panel.visible) out.push(panel);
  }
  return out;
}

interface DrawnStroke {
  geometry: PanelGeometry;
  /** Global positions. */
  positions: Float32Array[];
  radius: number;
  /** The brush size: the footprint is drawn `size` voxels across, as the kernel paints it. */
  size: number;
  color: string;
  erase: boolean;
  expires?: number;
}

/** The brush tool of one viewer. */
export class BrushTool {
  settings: BrushSettings = { mode: "paint", size: BRUSH_SIZE_MIN, color: "#ff0000", label: 1 };
  // Left drag paints; right drag pans (Neuroglancer's right click would move the view centre instead).
  private bindings = EventActionMap.fromObject({
    "at:mousedown0": { action: PAINT_ACTION, stopPropagation: true, preventDefault: true },
    "at:mousedown2": { action: "translate-via-mouse-drag", stopPropagation: true },
  });
  private bound = false;
  private listeners = new Set<StrokeCallback>();
  private overlay: HTMLCanvasElement;
  private drawn: DrawnStroke[] = [];
  private active: DrawnStroke | undefined;
  private cursor: { x: number; y: number; geometry: PanelGeometry } | undefined;
  private disposers: Array<() => void> = [];
  private redrawRequested = false;

  constructor(
    public viewer: Viewer,
    public root: HTMLElement,
    public axisMap: AxisMap,
  ) {
    viewer.bindAction(PAINT_ACTION, (event: ActionEvent<MouseEvent>) => this.startStroke(event));
    this.overlay = document.createElement("canvas");
    this.overlay.className = "ilastik-brush-overlay";
    Object.assign(this.overlay.style, {
      position: "absolute",
      left: "0",
      top: "0",
      width: "100%",
      height: "100%",
      pointerEvents: "none",
      zIndex: "5",
    });
    if (getComputedStyle(root).position === "static") root.style.position = "relative";
    root.appendChild(this.overlay);
    const onMove = (e: PointerEvent) => this.updateCursor(e);
    const onLeave = () => {
      this.cursor = undefined;
      this.requestRedraw();
    };
    root.addEventListener("pointermove", onMove);
    root.addEventListener("pointerleave", onLeave);
    this.disposers.push(() => {
      root.removeEventListener("pointermove", onMove);
      root.removeEventListener("pointerleave", onLeave);
    });
    this.disposers.push(viewer.display.updateFinished.add(() => this.requestRedraw()));
    this.setSettings({});
  }

  onStroke(callback: StrokeCallback): () => void {
    this.listeners.add(callback);
    return () => this.listeners.delete(callback);
  }

  setSettings(settings: Partial<BrushSettings>): void {
    Object.assign(this.settings, settings);
    const size = Math.round(Number(this.settings.size));
    this.settings.size = Number.isFinite(size) ? Math.min(BRUSH_SIZE_MAX, Math.max(BRUSH_SIZE_MIN, size)) : BRUSH_SIZE_MIN;
    const wantBound = this.settings.mode !== "navigate";
    const { sliceView } = this.viewer.inputEventBindings;
    if (wantBound && !this.bound) {
      sliceView.addParent(this.bindings, Number.POSITIVE_INFINITY);
      this.bound = true;
    } else if (!wantBound && this.bound) {
      sliceView.removeParent(this.bindings);
      this.bound = false;
    }
    this.root.classList.toggle("ilastik-brush-active", wantBound);
    this.requestRedraw();
  }

  /** Forget drawn strokes (call once the labels layer shows them). */
  clearDrawn(delayMs = 0): void {
    if (delayMs <= 0) {
      this.drawn = [];
    } else {
      const expires = performance.now() + delayMs;
      for (const stroke of this.drawn) stroke.expires = Math.min(stroke.expires ?? Infinity, expires);
      setTimeout(() => this.requestRedraw(), delayMs + 20);
    }
    this.requestRedraw();
  }

  get isDrawing(): boolean {
    return this.active !== undefined;
  }

  private panelAt(target: EventTarget | null): PanelGeometry | undefined {
    if (!(target instanceof Node)) return undefined;
    for (const panel of slicePanels(this.viewer)) {
      if (panel.element === target || panel.element.contains(target)) return new PanelGeometry(panel);
    }
    return undefined;
  }

  private updateCursor(e: PointerEvent) {
    if (this.settings.mode === "navigate") {
      if (this.cursor !== undefined) {
        this.cursor = undefined;
        this.requestRedraw();
      }
      return;
    }
    const geometry = this.active?.geometry ?? this.panelAt(e.target);
    this.cursor = geometry === undefined ? undefined : { x: e.clientX, y: e.clientY, geometry };
    this.requestRedraw();
  }

  private startStroke(event: ActionEvent<MouseEvent>) {
    const mouseEvent = event.detail;
    const geometry = this.panelAt(mouseEvent.target);
    if (geometry === undefined || !geometry.valid || !this.axisMap.ready || this.settings.mode === "navigate") return;
    event.stopPropagation();
    const { size, color, mode } = this.settings;
    const radius = brushRadius(size);
    const stroke: DrawnStroke = { geometry, positions: [], radius, size, color, erase: mode === "erase" };
    this.active = stroke;
    const step = Math.max(0.5, radius / 2);
    const dims = geometry.planeGlobalDims();
    const add = (clientX: number, clientY: number) => {
      const last = stroke.positions[stroke.positions.length - 1];
      const samples = gapFill(last, geometry.clientToGlobal(clientX, clientY), step);
      let added = false;
      for (const sample of samples) {
        // on the voxel grid, so the footprint is `size` voxels across wherever the pointer is within a voxel
        const snapped = snapToGrid(sample, dims);
        const previous = stroke.positions[stroke.positions.length - 1];
        if (previous !== undefined && previous.every((v, i) => v === snapped[i])) continue;
        stroke.positions.push(snapped);
        added = true;
      }
      if (added) this.requestRedraw();
    };
    add(mouseEvent.clientX, mouseEvent.clientY);
    startRelativeMouseDrag(
      mouseEvent,
      (e) => add(e.clientX, e.clientY),
      (e) => {
        add(e.clientX, e.clientY);
        this.finishStroke(stroke);
      },
    );
  }

  private finishStroke(stroke: DrawnStroke) {
    this.active = undefined;
    if (stroke.positions.length === 0) return;
    this.drawn.push(stroke);
    const result: Stroke = {
      ...strokeToArray(stroke.positions, stroke.geometry.planeGlobalDims(), this.axisMap),
      radius: stroke.radius,
      erase: stroke.erase,
      label: this.settings.label,
    };
    this.requestRedraw();
    for (const listener of this.listeners) {
      try {
        listener(result);
      } catch (error) {
        console.error("ilastik-widget: stroke callback failed", error);
      }
    }
  }

  requestRedraw() {
    if (this.redrawRequested) return;
    this.redrawRequested = true;
    requestAnimationFrame(() => {
      this.redrawRequested = false;
      this.redraw();
    });
  }

  private redraw() {
    const canvas = this.overlay;
    const dpr = window.devicePixelRatio || 1;
    const rootRect = this.root.getBoundingClientRect();
    const w = Math.max(1, Math.round(rootRect.width * dpr));
    const h = Math.max(1, Math.round(rootRect.height * dpr));
    if (canvas.width !== w || canvas.height !== h) {
      canvas.width = w;
      canvas.height = h;
    }
    const ctx = canvas.getContext("2d");
    if (ctx === null) return;
    ctx.setTransform(dpr, 0, 0, dpr, -rootRect.left * dpr, -rootRect.top * dpr);
    ctx.clearRect(rootRect.left, rootRect.top, rootRect.width, rootRect.height);
    const now = performance.now();
    this.drawn = this.drawn.filter((s) => s.expires === undefined || s.expires > now);
    const strokes = this.active === undefined ? this.drawn : [...this.drawn, this.active];
    for (const stroke of strokes) this.drawStroke(ctx, stroke);
    if (this.cursor !== undefined && this.settings.mode !== "navigate") {
      const { geometry } = this.cursor;
      // the outline where the brush paints: on the voxel grid, as the stroke's points are
      const [x, y] = geometry.valid
        ? geometry.globalToClient(snapToGrid(geometry.clientToGlobal(this.cursor.x, this.cursor.y),
          geometry.planeGlobalDims()))
        : [this.cursor.x, this.cursor.y];
      const r = this.settings.size / 2 / geometry.voxelsPerPixel();
      ctx.save();
      this.clipToPanel(ctx, geometry);
      ctx.beginPath();
      ctx.arc(x, y, Math.max(1, r), 0, 2 * Math.PI);
      ctx.lineWidth = 1.5;
      ctx.strokeStyle = this.settings.mode === "erase" ? "#ffffff" : this.settings.color;
      if (this.settings.mode === "erase") ctx.setLineDash([4, 3]);
      ctx.stroke();
      ctx.restore();
    }
  }

  private clipToPanel(ctx: CanvasRenderingContext2D, geometry: PanelGeometry) {
    const r = geometry.rect();
    ctx.beginPath();
    ctx.rect(r.left, r.top, r.width, r.height);
    ctx.clip();
  }

  private drawStroke(ctx: CanvasRenderingContext2D, stroke: DrawnStroke) {
    const { geometry } = stroke;
    if (!geometry.valid || !geometry.panel.visible || stroke.positions.length === 0) return;
    // In a volume, only while the panel still shows the stroke's plane (not after moving to another slice).
    if (Math.abs(geometry.distanceFromPlane(stroke.positions[0])) > 0.5) return;
    // `size` voxels across: the voxels within `radius` of a point are painted, and they reach half a voxel further
    const r = Math.max(0.5, stroke.size / 2 / geometry.voxelsPerPixel());
    ctx.save();
    this.clipToPanel(ctx, geometry);
    ctx.globalAlpha = stroke.erase ? 0.5 : 0.6;
    ctx.strokeStyle = ctx.fillStyle = stroke.erase ? "#000000" : stroke.color;
    ctx.lineCap = "round";
    ctx.lineJoin = "round";
    ctx.lineWidth = 2 * r;
    const pts = stroke.positions.map((p) => geometry.globalToClient(p));
    ctx.beginPath();
    if (pts.length === 1) {
      ctx.arc(pts[0][0], pts[0][1], r, 0, 2 * Math.PI);
      ctx.fill();
    } else {
      ctx.moveTo(pts[0][0], pts[0][1]);
      for (const [x, y] of pts.slice(1)) ctx.lineTo(x, y);
      ctx.stroke();
    }
    ctx.restore();
  }

  dispose(): void {
    if (this.bound) this.viewer.inputEventBindings.sliceView.removeParent(this.bindings);
    this.bound = false;
    for (const d of this.disposers) d();
    this.overlay.remove();
    this.listeners.clear();
  }
}
