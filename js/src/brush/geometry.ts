// Pure geometry of the brush: panel projection, global <-> array coordinates, gap filling and
// the stroke sent to the kernel. Only type imports from Neuroglancer, so it runs without a browser (js/test/).

import type { SliceViewPanel } from "neuroglancer/unstable/sliceview/panel.js";
import type { Viewer } from "neuroglancer/unstable/viewer.js";
import { MAX_STROKE_POINTS } from "../protocol.js";

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

  /** The panel's drawing area in pixels. */
  size(): { width: number; height: number } {
    const { width, height } = this.params;
    return { width, height };
  }

  /** Pixels (right, down) on the panel of a displacement in global coordinates (ignoring the off-plane part). */
  offsetToPixels(delta: ArrayLike<number>): [number, number] {
    const { viewMatrix, displayDimensionRenderInfo } = this.params;
    const { displayDimensionIndices, displayRank } = displayDimensionRenderInfo;
    let px = 0;
    let py = 0;
    for (let i = 0; i < displayRank; ++i) {
      const d = delta[displayDimensionIndices[i]];
      px += viewMatrix[4 * i] * d;
      py += viewMatrix[4 * i + 1] * d;
    }
    return [px, py];
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

  /** The (nearest axis-aligned) plane this panel shows, as the names of its two global dims in order: "xy", "xz"... */
  planeName(globalNames: readonly string[]): string {
    return this.planeGlobalDims().map((d) => globalNames[d]).sort().join("");
  }
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

/**
 * The samples to append to a stroke whose last sample is `last` when the pointer reaches global `position`: none if
 * it moved less than `step / 2`, else the points that fill the gap (spaced at most `step`) and `position` itself, so
 * fast drags give continuous strokes.
 */
export function gapFill(last: Float32Array | undefined, position: Float32Array, step: number): Float32Array[] {
  const out: Float32Array[] = [];
  if (last !== undefined) {
    let dist = 0;
    for (let i = 0; i < position.length; ++i) dist += (position[i] - last[i]) ** 2;
    dist = Math.sqrt(dist);
    if (dist < step * 0.5) return out;
    const n = Math.ceil(dist / step);
    for (let k = 1; k < n; ++k) {
      const t = k / n;
      out.push(last.map((v, i) => v + (position[i] - v) * t) as Float32Array);
    }
  }
  out.push(position);
  return out;
}

/**
 * A stroke's global sample positions as the kernel takes them: points in array index order (centre of voxel i = i,
 * rounded to 1/100 voxel) and the two array axes of its plane, ascending. Off-plane coordinates snap to the voxel
 * the panel shows (voxel i spans [i, i+1) in global coordinates).
 */
export function strokeToArray(
  positions: readonly Float32Array[],
  planeDims: readonly number[],
  axisMap: AxisMap,
): { points: number[][]; axes: [number, number] } {
  const axes = planeDims.map((d) => axisMap.arrayAxisOfGlobal(d)).sort((a, b) => a - b);
  return {
    points: positions.map((p) => {
      const q = Float32Array.from(p);
      for (let d = 0; d < q.length; ++d) if (!planeDims.includes(d)) q[d] = Math.floor(q[d]) + 0.5;
      return axisMap.toArray(q).map((v) => Math.round(v * 100) / 100);
    }),
    axes: [axes[0], axes[1]],
  };
}

/**
 * `position` (global coordinates, voxel i spanning [i, i + 1)) moved in the plane's dimensions `dims` to the centre
 * of its voxel. The kernel paints the voxels whose centres lie within the radius, (size - 1) / 2, of each point: from
 * a voxel's centre a brush of odd size paints exactly `size` voxels across (from anywhere else one less), an even
 * size one less (so the panel offers odd sizes). A new array.
 */
export function snapToGrid(position: ArrayLike<number>, dims: readonly number[]): Float32Array {
  const out = Float32Array.from(position);
  for (const d of dims) out[d] = Math.floor(out[d]) + 0.5;
  return out;
}

/**
 * The radius (pixels of the panel's plane) the kernel paints a brush size with: (size - 1) / 2, the voxels whose
 * centres lie within it of the stroke's points; for size 1 half a voxel (the kernel takes no radius 0, and from a
 * voxel's centre half a voxel reaches that voxel alone).
 */
export function brushRadius(size: number): number {
  return Math.max(0.5, (size - 1) / 2);
}

/**
 * A stroke of at most `max` points (the kernel refuses longer ones): every `step`-th point of a longer stroke, and
 * always its last point.
 */
export function decimateStroke(points: number[][], max = MAX_STROKE_POINTS): number[][] {
  const n = points.length;
  if (n <= max) return points;
  // at most max - 1 points before the last one
  const step = Math.ceil((n - 1) / (max - 1));
  const out = points.filter((_, i) => i % step === 0 && i < n - 1);
  out.push(points[n - 1]);
  return out;
}
