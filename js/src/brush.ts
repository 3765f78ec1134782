// Brush and eraser on Neuroglancer's cross-section panels (DESIGN.md section 4).
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

export type BrushMode = "paint" | "erase" | "navigate";

export interface BrushSettings {
  mode: BrushMode;
  /** Brush radius in voxels of the panel's plane. */
  radius: number;
  /** Colour of the active class, "#rrggbb". */
  color: string;
  /** Active class (1-based). */
  label: number;
}

export interface Stroke {
  /** Sampled centres, array index order of the spatial axes ((y, x) or (z, y, x)), voxel units (centre = index). */
  points: number[][];
  radius: number;
  /** The two array axes of the (nearest axis-aligned) plane the stroke was drawn in, ascending. */
  axes: [number, number];
  erase: boolean;
  label: number;
}

export type StrokeCallback = (stroke: Stroke) => void;

const PAINT_ACTION = "ilastik-widget-paint";

/** Geometry of one cross-section panel: maps between client (screen) pixels and global coordinates. */
export class PanelGeometry {
  constructor(public panel: SliceViewPanel) {}

  private get params() {
    return this.panel.sliceView.projectionParameters.value;
  }

  get valid(): boolean {
    const p = this.params;
    return p.width > 0 && p.height > 0 && p.displayDimensionRenderInfo.displayRank > 0;
  }

  get element(): HTMLElement {
    return this.panel.element;
  }

  /** Client rectangle of the panel's drawing area. */
  rect(): DOMRect {
    return this.panel.element.getBoundingClientRect();
  }

  private origin(): [number, number] {
    const { element } = this.panel;
    const bounds = element.getBoundingClientRect();
    return [bounds.left + element.clientLeft, bounds.top + element.clientTop];
  }

  /** Global coordinates (Neuroglancer's, voxel i spans [i, i+1)) of a client position. */
  clientToGlobal(clientX: number, clientY: number): Float32Array {
    const { width, height, invViewMatrix, globalPosition, displayDimensionRenderInfo } = this.params;
    const { displayDimensionIndices, displayRank } = displayDimensionRenderInfo;
    const [left, top] = this.origin();
    const dx = clientX - left - width / 2;
    const dy = clientY - top - height / 2;
    const out = Float32Array.from(globalPosition);
    for (let i = 0; i < displayRank; ++i) {
      const dim = displayDimensionIndices[i];
      out[dim] += invViewMatrix[i] * dx + invViewMatrix[4 + i] * dy;
    }
    return out;
  }

  /** Client position of global coordinates (ignoring the off-plane distance). */
  globalToClient(position: ArrayLike<number>): [number, number] {
    const { width, height, viewMatrix, globalPosition, displayDimensionRenderInfo } = this.params;
    const { displayDimensionIndices, displayRank } = displayDimensionRenderInfo;
    const [left, top] = this.origin();
    let px = 0;
    let py = 0;
    for (let i = 0; i < displayRank; ++i) {
      const dim = displayDimensionIndices[i];
      const d = position[dim] - globalPosition[dim];
      px += viewMatrix[4 * i] * d;
      py += viewMatrix[4 * i + 1] * d;
    }
    return [left + width / 2 + px, top + height / 2 + py];
  }

  /** Signed distance (global units, along the plane's normal) of `position` from the plane the panel shows. */
  distanceFromPlane(position: ArrayLike<number>): number {
    const { globalPosition, displayDimensionRenderInfo } = this.params;
    const { displayDimensionIndices, displayRank } = displayDimensionRenderInfo;
    if (displayRank < 3) return 0;
    const n = this.normal();
    let d = 0;
    for (let i = 0; i < 3; ++i) {
      const dim = displayDimensionIndices[i];
      d += n[i] * (position[dim] - globalPosition[dim]);
    }
    return d;
  }

  /** Voxels per screen pixel along the panel's x axis. */
  voxelsPerPixel(): number {
    const m = this.params.invViewMatrix;
    return Math.hypot(m[0], m[1], m[2]) || 1;
  }

  /** Unit normal of the panel's plane, in display dimensions. */
  normal(): [number, number, number] {
    const m = this.params.invViewMatrix;
    const a = [m[0], m[1], m[2]];
    const b = [m[4], m[5], m[6]];
    const n: [number, number, number] = [
      a[1] * b[2] - a[2] * b[1],
      a[2] * b[0] - a[0] * b[2],
      a[0] * b[1] - a[1] * b[0],
    ];
    const len = Math.hypot(...n) || 1;
    return [n[0] / len, n[1] / len, n[2] / len];
  }

  /** Global dimension indices of the plane's two axes (nearest axis-aligned plane for oblique panels). */
  planeGlobalDims(): number[] {
    const { displayDimensionIndices, displayRank } = this.params.displayDimensionRenderInfo;
    const dims: number[] = Array.from(displayDimensionIndices.slice(0, displayRank));
    if (displayRank <= 2) return dims;
    const n = this.normal();
    let off = 0;
    for (let i = 1; i < 3; ++i) if (Math.abs(n[i]) > Math.abs(n[off])) off = i;
    return dims.filter((_: number, i: number) => i !== off);
  }

  /** True if this panel shows an (approximately) axis-aligned plane spanned by global dims named x and y. */
  isXY(globalNames: readonly string[]): boolean {
    const names = this.planeGlobalDims().map((d) => globalNames[d]).sort();
    return names.length === 2 && names[0] === "x" && names[1] === "y";
  }
}

/** Cross-section panels of the viewer, in creation (layout) order. */
export function slicePanels(viewer: Viewer): SliceViewPanel[] {
  const out: SliceViewPanel[] = [];
  for (const panel of viewer.display.panels) {
    if (panel instanceof SliceViewPanel && panel.visible) out.push(panel);
  }
  return out;
}

/** Maps between Neuroglancer's global coordinates and the image's array axes (by axis name). */
export class AxisMap {
  /** Array axis names in index order, e.g. ["z", "y", "x"]. */
  constructor(
    public viewer: Viewer,
    public arrayAxes: readonly string[],
  ) {}

  private globalIndices(): number[] {
    const { names } = this.viewer.coordinateSpace.value;
    return this.arrayAxes.map((name) => names.indexOf(name));
  }

  get ready(): boolean {
    return this.globalIndices().every((i) => i >= 0);
  }

  /** Array-order voxel coordinates (centre of voxel i = i) of a global position. */
  toArray(position: ArrayLike<number>): number[] {
    return this.globalIndices().map((g) => position[g] - 0.5);
  }

  /** Global position of array-order voxel coordinates; unspecified global dims keep `base`. */
  toGlobal(point: ArrayLike<number>, base: ArrayLike<number>): Float32Array {
    const out = Float32Array.from(base);
    this.globalIndices().forEach((g, a) => {
      out[g] = point[a] + 0.5;
    });
    return out;
  }

  arrayAxisOfGlobal(dim: number): number {
    return this.globalIndices().indexOf(dim);
  }
}

interface DrawnStroke {
  geometry: PanelGeometry;
  /** Global positions. */
  positions: Float32Array[];
  radius: number;
  color: string;
  erase: boolean;
  expires?: number;
}

/** The brush tool of one viewer. */
export class BrushTool {
  settings: BrushSettings = { mode: "paint", radius: 3, color: "#ff0000", label: 1 };
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
    const radius = Number(this.settings.radius);
    this.settings.radius = Number.isFinite(radius) && radius > 0 ? radius : 0; // 0 = a single voxel
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
    const { radius, color, mode } = this.settings;
    const stroke: DrawnStroke = { geometry, positions: [], radius, color, erase: mode === "erase" };
    this.active = stroke;
    const step = Math.max(0.5, radius / 2);
    const add = (clientX: number, clientY: number) => {
      const position = geometry.clientToGlobal(clientX, clientY);
      const last = stroke.positions[stroke.positions.length - 1];
      if (last !== undefined) {
        let dist = 0;
        for (let i = 0; i < position.length; ++i) dist += (position[i] - last[i]) ** 2;
        dist = Math.sqrt(dist);
        if (dist < step * 0.5) return;
        // Fill the gap between pointer samples so fast drags give continuous strokes.
        const n = Math.ceil(dist / step);
        for (let k = 1; k < n; ++k) {
          const t = k / n;
          stroke.positions.push(last.map((v, i) => v + (position[i] - v) * t) as Float32Array);
        }
      }
      stroke.positions.push(position);
      this.requestRedraw();
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
    const planeDims = stroke.geometry.planeGlobalDims();
    const axes = planeDims.map((d) => this.axisMap.arrayAxisOfGlobal(d)).sort((a, b) => a - b);
    const result: Stroke = {
      points: stroke.positions.map((p) => {
        // Off-plane coordinates snap to the voxel the panel shows (voxel i spans [i, i+1) in global coordinates).
        const q = Float32Array.from(p);
        for (let d = 0; d < q.length; ++d) if (!planeDims.includes(d)) q[d] = Math.floor(q[d]) + 0.5;
        return this.axisMap.toArray(q).map((v) => Math.round(v * 100) / 100);
      }),
      radius: stroke.radius,
      axes: [axes[0], axes[1]],
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
      const { geometry, x, y } = this.cursor;
      const r = (this.settings.radius + 0.5) / geometry.voxelsPerPixel();
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
    // voxels within `radius` of a point are painted: they reach half a voxel further
    const r = Math.max(0.5, (stroke.radius + 0.5) / geometry.voxelsPerPixel());
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
