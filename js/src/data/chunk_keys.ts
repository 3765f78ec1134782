// The zarr keys the viewer reads from the kernel, parsed in one place (mirrors ilastik_widget/serving/chunk_keys.py;
// both parsers are tested on the cases of tests/chunk_key_cases.json).
//
// Keys are relative to the widget's root `mem://<widget-id>/`. Four arrays, each an OME-Zarr multiscale group whose
// levels are zarr v2 arrays:
//   raw/<level>/<i>.<j>[.<k>][.0]                      the image (a trailing channel index when shown in colour)
//   labels/<level>/<i>.<j>[.<k>]                       the painted labels
//   predictions/<layout>/<level>/<i>.<j>[.<k>].0       the class probabilities, classes as a trailing channel axis;
//                                                      `layout` changes when the number of classes does, so the
//                                                      prediction layers get a new URL exactly then
//   objects/<version>/<level>/<i>.<j>[.<k>]            the label image of the last objects; every result has a new
//                                                      `version`, so the layer never mixes chunks of two results
// Metadata keys are `<array>/.zgroup`, `<array>/.zattrs` and `<array>/<level>/.zarray` (`.zattrs`), the number of a
// numbered array after its name.
// Volumes may be served in Neuroglancer's precomputed format instead (flat chunks along each axis at every level): the
// metadata is `<array>/info` and a chunk is `<array>/<level>/<x0>-<x1>_<y0>-<y1>_<z0>-<z1>` (a `BoxKey`).

import { MAX_KEY_LENGTH } from "../protocol.js";

/** The arrays of a widget, in the order of their layers. */
export const ARRAYS = ["raw", "labels", "predictions", "objects"] as const;
export type ArrayName = (typeof ARRAYS)[number];
/** The arrays whose path carries a number (the predictions' layout, the objects' version): a new number is a new URL. */
export const NUMBERED_ARRAYS: readonly ArrayName[] = ["predictions", "objects"];
/** Metadata files of a zarr v2 group or array. */
export const METADATA_NAMES = [".zgroup", ".zattrs", ".zarray"] as const;
export type MetadataName = (typeof METADATA_NAMES)[number] | "info";

// The same expression as the Python parser's: numbers without leading zeros, at most 9 digits; a box of three
// start-stop ranges, or 2 to 4 chunk indices.
const NUMBER = "(0|[1-9][0-9]{0,8})";
const BOX = `${NUMBER}-${NUMBER}_${NUMBER}-${NUMBER}_${NUMBER}-${NUMBER}`;
const KEY = new RegExp(
  `^(raw|labels|predictions|objects)(?:/${NUMBER})?(?:/${NUMBER})?` +
    `/(\\.zgroup|\\.zattrs|\\.zarray|info|${BOX}|${NUMBER}(?:\\.${NUMBER}){1,3})$`,
);

/**
 * A chunk of one level of one array: `index` is the chunk's grid index over all axes of that level's zarr array
 * (spatial, then a channel axis when the array has one).
 */
export class ChunkKey {
  constructor(
    readonly array: ArrayName,
    readonly level: number,
    readonly index: readonly number[],
    readonly layout: number | null = null,
  ) {}

  /** `<level>/<i>.<j>...`: the key without array and layout (the same chunk in any layout). */
  get address(): string {
    return `${this.level}/${this.index.join(".")}`;
  }

  toString(): string {
    return `${arrayPath(this.array, this.layout)}/${this.address}`;
  }
}

/**
 * A chunk of a precomputed level, named by its box: `box` holds [start, stop) per spatial axis in array order
 * ((z, y, x)), in voxels of that level.
 */
export class BoxKey {
  constructor(
    readonly array: ArrayName,
    readonly level: number,
    readonly box: readonly (readonly [number, number])[],
    readonly layout: number | null = null,
  ) {}

  /** `<level>/<x0>-<x1>_<y0>-<y1>_<z0>-<z1>`: the key without array and layout (x first, as precomputed writes it). */
  get address(): string {
    return `${this.level}/${[...this.box].reverse().map(([a, b]) => `${a}-${b}`).join("_")}`;
  }

  toString(): string {
    return `${arrayPath(this.array, this.layout)}/${this.address}`;
  }
}

/**
 * A `.zgroup` / `.zattrs` / `.zarray` file of an array's group (`level` null) or of one of its levels, or the `info`
 * of a precomputed array.
 */
export class MetadataKey {
  constructor(
    readonly array: ArrayName,
    readonly name: MetadataName,
    readonly level: number | null = null,
    readonly layout: number | null = null,
  ) {}

  toString(): string {
    const level = this.level === null ? "" : `/${this.level}`;
    return `${arrayPath(this.array, this.layout)}${level}/${this.name}`;
  }
}

/**
 * The path of an array's group below the widget's root: `raw`, `labels`, `predictions/<layout>` or
 * `objects/<version>` (`layout` is the number of a numbered array).
 */
export function arrayPath(array: ArrayName, layout: number | null = null): string {
  if (!(ARRAYS as readonly string[]).includes(array)) {
    throw new Error(`unknown array ${JSON.stringify(array)}; the arrays are ${ARRAYS.join(", ")}`);
  }
  if (NUMBERED_ARRAYS.includes(array) !== (layout !== null)) {
    throw new Error(`the ${NUMBERED_ARRAYS.join(" and ")} arrays, and only they, have a number in their path`);
  }
  return layout === null ? array : `${array}/${layout}`;
}

/**
 * The chunk or metadata file a key names; null for anything else (malformed keys are not errors: the viewer reads
 * them as missing).
 */
export function parseKey(key: unknown): ChunkKey | BoxKey | MetadataKey | null {
  if (typeof key !== "string" || key.length > MAX_KEY_LENGTH) return null;
  const m = KEY.exec(key);
  if (m === null) return null;
  const array = m[1] as ArrayName;
  let layout = m[2] === undefined ? null : Number(m[2]);
  let level = m[3] === undefined ? null : Number(m[3]);
  const numbered = NUMBERED_ARRAYS.includes(array);
  if (numbered && layout === null) return null;
  if (!numbered && layout !== null) {
    // `raw/0/.zarray` matches with a layout and no level: for raw and labels that number is the level
    if (level !== null) return null;
    [layout, level] = [null, layout];
  }
  const leaf = m[4];
  if (leaf.startsWith(".") || leaf === "info") {
    if ((leaf === ".zgroup" || leaf === "info") && level !== null) return null;
    return new MetadataKey(array, leaf as MetadataName, level, layout);
  }
  if (level === null) return null;
  if (leaf.includes("-")) {
    const xyz = leaf.split("_").map((part) => part.split("-").map(Number) as [number, number]);
    if (xyz.some(([a, b]) => b <= a)) return null;
    return new BoxKey(array, level, xyz.reverse(), layout);
  }
  return new ChunkKey(array, level, leaf.split(".").map(Number), layout);
}

/**
 * The array (and its layout) whose group is at `path` ("labels", "predictions/3/"), or null if `path` is none.
 * Read with the one parser, as the group's `.zgroup` key.
 */
export function parseArrayPath(path: string): { array: ArrayName; layout: number | null } | null {
  const key = parseKey(`${trimSlash(path)}/.zgroup`);
  return key instanceof MetadataKey ? { array: key.array, layout: key.layout } : null;
}

/**
 * The chunk at grid `index` of the level whose path is `path` ("labels/0", "predictions/3/1/", a chunk source's
 * URL path), or null if `path` names no level of a widget array.
 */
export function chunkKeyAt(path: string, index: readonly number[]): ChunkKey | null {
  const key = parseKey(`${trimSlash(path)}/${index.join(".")}`);
  return key instanceof ChunkKey ? key : null;
}

/**
 * The precomputed chunk of the level whose path is `path` ("labels/0/", a chunk source's URL path) covering `box`
 * ([start, stop) per spatial axis in array order, (z, y, x)), or null if `path` names no level of a widget array or
 * `box` is no box.
 */
export function boxKeyAt(path: string, box: readonly (readonly [number, number])[]): BoxKey | null {
  const leaf = [...box].reverse().map(([a, b]) => `${a}-${b}`).join("_");
  const key = parseKey(`${trimSlash(path)}/${leaf}`);
  return key instanceof BoxKey ? key : null;
}

function trimSlash(path: string): string {
  return path.endsWith("/") ? path.slice(0, -1) : path;
}
