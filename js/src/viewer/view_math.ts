// The arithmetic of navigating and reading the view, without Neuroglancer: the zoom of one wheel event, the zoom
// that fits the image in a panel, the region a panel shows (the `view_region` the kernel measures class shares in),
// and the cursor readout. Pure functions: they run without a browser (js/test).

/** Zoom factor of one wheel notch (a mouse's usual 100 px of deltaY). */
export const WHEEL_NOTCH_ZOOM = 1.2;
/** Pixels of deltaY in one notch; larger deltas (fast wheels, line or page modes) count as one notch. */
const NOTCH_PX = 100;
/** WheelEvent.deltaMode values. */
const DOM_DELTA_LINE = 1;
const DOM_DELTA_PAGE = 2;

/**
 * The zoom factor of one wheel event (> 1 zooms out, as Neuroglancer's scale grows): a notch zooms by
 * WHEEL_NOTCH_ZOOM, a trackpad's small deltas (and its pinch, which arrives as ctrl+wheel) by proportionally less,
 * and no single event by more than about 1.25x.
 */
export function wheelZoomFactor(deltaY: number, deltaMode = 0): number {
  if (!Number.isFinite(deltaY) || deltaY === 0) return 1;
  const px = deltaMode === DOM_DELTA_LINE ? deltaY * 40 : deltaMode === DOM_DELTA_PAGE ? deltaY * 400 : deltaY;
  const limited = Math.max(-1.2 * NOTCH_PX, Math.min(1.2 * NOTCH_PX, px));
  return Math.exp((limited / NOTCH_PX) * Math.log(WHEEL_NOTCH_ZOOM));
}

/**
 * How much a panel must zoom out (a factor of its current scale) so that points at these pixel offsets from its
 * centre are all inside it, with `margin` to spare: 2 x the largest offset over the panel's width and height.
 */
export function fitFactor(offsets: ReadonlyArray<readonly [number, number]>, width: number, height: number, margin = 1.05):
  number | undefined {
  if (!(width > 0 && height > 0) || offsets.length === 0) return undefined;
  let need = 0;
  for (const [dx, dy] of offsets) {
    need = Math.max(need, (2 * Math.abs(dx)) / width, (2 * Math.abs(dy)) / height);
  }
  return need > 0 && Number.isFinite(need) ? need * margin : undefined;
}

/** The corners of the image's box in array coordinates (voxel i spans [i - 0.5, i + 0.5)). */
export function boxCorners(shape: readonly number[]): number[][] {
  const out: number[][] = [[]];
  for (const n of shape) {
    const next: number[][] = [];
    for (const c of out) next.push([...c, -0.5], [...c, n - 0.5]);
    out.splice(0, out.length, ...next);
  }
  return out;
}

/**
 * The voxels a panel shows, `[[start, stop], ...]` per axis in array order (half-open), clipped to the image; from
 * the array coordinates of the panel's corners. `offPlane` is the axis a volume's panel cuts and `slice` the
 * coordinate it cuts it at: that axis gets the one voxel there. Undefined when the panel shows nothing of the image.
 */
export function viewRegion(corners: readonly number[][], shape: readonly number[], offPlane?: number, slice?: number):
  [number, number][] | undefined {
  if (corners.length === 0) return undefined;
  const out: [number, number][] = [];
  for (let a = 0; a < shape.length; ++a) {
    let start: number;
    let stop: number;
    if (a === offPlane && slice !== undefined && Number.isFinite(slice)) {
      start = Math.floor(slice + 0.5);
      stop = start + 1;
    } else {
      const values = corners.map((c) => c[a]);
      start = Math.floor(Math.min(...values) + 0.5);
      stop = Math.floor(Math.max(...values) + 0.5) + 1;
    }
    start = Math.max(0, start);
    stop = Math.min(shape[a], stop);
    if (!(stop > start)) return undefined;
    out.push([start, stop]);
  }
  return out;
}

/** The voxel index (array order) holding array coordinates `point` (centre of voxel i at i). */
export function voxelIndex(point: readonly number[]): number[] {
  return point.map((v) => Math.floor(v + 0.5));
}

/** Whether voxel `index` lies inside an image of `shape`. */
export function inside(index: readonly number[], shape: readonly number[]): boolean {
  return index.length === shape.length && index.every((v, i) => v >= 0 && v < shape[i]);
}

function formatNumber(value: unknown): string {
  if (typeof value === "bigint") return value.toString();
  if (typeof value !== "number" || Number.isNaN(value)) return String(value);
  if (Number.isInteger(value)) return String(value);
  const abs = Math.abs(value);
  if (abs !== 0 && (abs < 1e-3 || abs >= 1e6)) return value.toExponential(3);
  return String(Number(value.toPrecision(5)));
}

/** A value under the cursor as the readout shows it: a number, or one per channel. */
export function formatPixelValue(value: unknown): string {
  if (value === null || value === undefined) return "";
  if (Array.isArray(value) || ArrayBuffer.isView(value)) {
    return Array.from(value as ArrayLike<unknown>, formatNumber).join(", ");
  }
  return formatNumber(value);
}

/**
 * The cursor readout: the voxel in array order with the image's axis names and, when known, the value there
 * ("z 12, y 40, x 87: 1234"); "outside the image" beyond it.
 */
export function readoutText(axes: readonly string[], index: readonly number[], shape: readonly number[], value: unknown):
  string {
  const where = index.map((v, i) => `${axes[i] ?? `axis ${i}`} ${v}`).join(", ");
  if (!inside(index, shape)) return `${where} (outside the image)`;
  const shown = formatPixelValue(value);
  return shown === "" ? where : `${where}: ${shown}`;
}

/**
 * A volume panel's title: the plane it shows in the image's axis names (the nearest axis-aligned plane) and the
 * slice it cuts: "xy · z 12".
 */
export function panelTitle(planeAxes: readonly number[], axes: readonly string[], index: readonly number[]): string {
  const inPlane = new Set(planeAxes);
  const off = axes.map((_, i) => i).filter((i) => !inPlane.has(i));
  // written as Neuroglancer and napari name the planes: the horizontal axis first ("xy", "xz", "yz")
  const plane = [...planeAxes].sort((a, b) => b - a).map((a) => axes[a]).join("");
  const slices = off.map((a) => `${axes[a]} ${index[a]}`).join(", ");
  return slices ? `${plane} · ${slices}` : plane;
}

/**
 * A display window as an invlerp control of a layer of integer data takes it: whole numbers within the data type's
 * `bounds` (Neuroglancer refuses others), low < high kept. Float data (`bounds` undefined) passes unchanged.
 */
export function shaderWindow(low: number, high: number, bounds?: readonly [number, number]): [number, number] {
  if (bounds === undefined) return [low, high];
  const clamp = (v: number) => Math.min(bounds[1], Math.max(bounds[0], v));
  let lo = clamp(Math.round(low));
  let hi = clamp(Math.round(high));
  if (hi <= lo) {
    if (hi < bounds[1]) hi = lo + 1;
    else lo = hi - 1;
  }
  return [lo, hi];
}
