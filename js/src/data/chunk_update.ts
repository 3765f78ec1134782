// Updates the chunks a kernel refresh pushed straight in the viewer's chunk sources (the browser end of
// ilastik_widget/serving/working_set.py `take_push`).
//
// The general way to show new data (viewer/refresh.ts `Reloader`) invalidates the sources: Neuroglancer's worker drops
// every chunk, asks for them again, decodes them and hands them back, and only then can the view be drawn. When the
// refresh carries every chunk the viewer holds, the page can instead put the new bytes into those chunks and
// re-upload their textures, and draw in the next frame: no worker round trip and no frame held back. That saves
// about a tenth of a second per live update on a software-rendered page (benchmarks/bench_browser.py).
//
// It is only done when nothing can be left stale; otherwise the caller reloads:
// - every chunk the page holds (on the GPU or not) has pushed bytes or is pushed as missing (`planChunkUpdate`);
// - every chunk read since the last invalidation is among them (anything else may sit, old, in the worker's memory);
// - no read of the array is waiting for the kernel (its answer could be the old data).
// The last two are checked by the caller (viewer/refresh.ts) with the fetcher's records (kvstore_frontend.ts). And it
// is not done while the page holds many chunks out of view (`heldOutOfView`): the kernel would have to compute them
// all on every update.

import { ChunkState } from "neuroglancer/unstable/chunk_manager/base.js";
import { DATA_TYPE_ARRAY_CONSTRUCTOR, DATA_TYPE_BYTES } from "neuroglancer/unstable/util/data_type.js";
import { boxKeyAt, chunkKeyAt } from "./chunk_keys.js";
import { parseMemUrl } from "./mem_url.js";

/** What the update uses of a frontend volume chunk (sliceview/uncompressed_chunk_format.js, no exported type). */
export interface UpdatableChunk {
  state: number;
  data: ArrayBufferView | null;
  chunkDataSize?: ArrayLike<number>;
  texture?: unknown;
  textureLayout?: unknown;
  copyToGPU(gl: unknown): void;
  freeGPUMemory(gl: unknown): void;
}

/** What the update uses of a chunk source's spec (sliceview/volume/base.js `VolumeChunkSpecification`). */
export interface UpdatableSpec {
  dataType?: number;
  chunkDataSize?: ArrayLike<number>;
  /** Exclusive upper bound of the chunk grid in voxels (precomputed: the level's size), Neuroglancer's axis order. */
  upperVoxelBound?: ArrayLike<number>;
  baseVoxelOffset?: ArrayLike<number>;
}

/** What the update uses of a frontend zarr or precomputed chunk source served from `mem://`. */
export interface UpdatableSource {
  chunks: Map<string, UpdatableChunk>;
  parameters?: { url?: unknown };
  spec?: UpdatableSpec;
  chunkFormatHandler?: { fillValueChunk?: { texture: unknown; textureLayout: unknown } };
  gl?: unknown;
  /** The shared-object type of the source (on its prototype): which data source made it. */
  RPC_TYPE_ID?: unknown;
}

/** The shared-object type of Neuroglancer's precomputed volume chunk sources (datasource/precomputed/base.js). */
export const PRECOMPUTED_SOURCE_TYPE = "precomputed/VolumeChunkSource";

/** `chunk`'s new content: bytes, or null for missing (the fill value). */
interface ChunkChange {
  source: UpdatableSource;
  chunk: UpdatableChunk;
  data: Uint8Array | null;
}

export interface ChunkUpdatePlan {
  changes: ChunkChange[];
  /** The key of every chunk the page holds in these sources (all pushed): the kernel's next working set. */
  held: Set<string>;
}

/** What the last refresh pushed for a key: bytes, null for missing, undefined if nothing was pushed. */
export type PushedLookup = (key: string) => Uint8Array | null | undefined;

/**
 * The zarr key of a chunk of a `mem://` chunk source, or null if the source's URL names no level of a widget array.
 * Neuroglancer's chunk key is the grid position in its own order, the reverse of the zarr array's (C order).
 */
export function zarrChunkKey(sourceUrl: string, neuroglancerKey: string): string | null {
  const index = neuroglancerKey.split(",").reverse().map(Number);
  return chunkKeyAt(parseMemUrl(sourceUrl).path, index)?.toString() ?? null;
}

/**
 * The precomputed key of a chunk of a `mem://` chunk source: its box `<x0>-<x1>_<y0>-<y1>_<z0>-<z1>` in the level's
 * voxels, found as Neuroglancer's worker finds the path it reads (sliceview/volume/backend.js `computeChunkBounds`):
 * the grid position (x, y, z[, channel]) times the chunk size, clipped to the level's size, plus the base offset.
 * Each chunk layout of a level (flat along z, y or x) is its own source with its own chunk size. Null if the URL
 * names no level of a widget array or the key is not a grid position of the source (a channel position other than
 * 0: channels are stored whole).
 */
export function precomputedChunkKey(sourceUrl: string, spec: UpdatableSpec, neuroglancerKey: string): string | null {
  const { chunkDataSize: size, upperVoxelBound: upper, baseVoxelOffset: base } = spec;
  const position = neuroglancerKey.split(",").map(Number);
  if (size === undefined || upper === undefined || position.length !== size.length || position.length < 3) return null;
  const box: [number, number][] = [];
  for (let i = 0; i < position.length; ++i) {
    const g = position[i];
    if (!Number.isInteger(g) || g < 0) return null;
    if (i >= 3) {
      if (g !== 0) return null;
      continue;
    }
    const start = g * size[i];
    const stop = Math.min(upper[i], start + size[i]);
    const offset = base?.[i] ?? 0;
    box.push([start + offset, stop + offset]);
  }
  return boxKeyAt(parseMemUrl(sourceUrl).path, box.reverse())?.toString() ?? null;
}

/** The widget's key of a chunk of a `mem://` chunk source (zarr or precomputed), or null if it has none. */
export function chunkKeyOf(source: UpdatableSource, neuroglancerKey: string): string | null {
  const url = source.parameters?.url;
  if (typeof url !== "string") return null;
  if (source.RPC_TYPE_ID === PRECOMPUTED_SOURCE_TYPE) {
    return source.spec === undefined ? null : precomputedChunkKey(url, source.spec, neuroglancerKey);
  }
  return zarrChunkKey(url, neuroglancerKey);
}

function chunkBytes(source: UpdatableSource, chunk: UpdatableChunk): number | undefined {
  const size = chunk.chunkDataSize ?? source.spec?.chunkDataSize;
  const dataType = source.spec?.dataType;
  if (size === undefined || dataType === undefined || DATA_TYPE_BYTES[dataType as 0] === undefined) return undefined;
  let n = DATA_TYPE_BYTES[dataType as 0];
  for (let i = 0; i < size.length; ++i) n *= size[i];
  return n;
}

/**
 * The changes that put the pushed data into every chunk of `sources`, or why that cannot be done (a string).
 * Nothing is changed here.
 */
export function planChunkUpdate(sources: UpdatableSource[], lookup: PushedLookup): ChunkUpdatePlan | string {
  // No source (every layer of the array hidden): nothing held, nothing to update. The caller still checks that
  // nothing was read since the last invalidation.
  const plan: ChunkUpdatePlan = { changes: [], held: new Set() };
  for (const source of sources) {
    const url = source.parameters?.url;
    if (typeof url !== "string") return "a chunk source without a URL";
    for (const [ngKey, chunk] of source.chunks) {
      const key = chunkKeyOf(source, ngKey);
      if (key === null) return `chunk ${ngKey} of ${url} has no key of the widget`;
      plan.held.add(key);
      const data = lookup(key);
      if (data === undefined) return `${key} was not pushed`;
      if (data !== null) {
        if (chunkBytes(source, chunk) !== data.byteLength) return `${key}: ${data.byteLength} bytes do not fit the chunk`;
      } else if (chunk.data !== null && source.chunkFormatHandler?.fillValueChunk === undefined) {
        return `${key}: no fill value texture for a chunk that is now missing`;
      }
      if (data === null && chunk.data === null) continue; // missing before and after
      plan.changes.push({ source, chunk, data });
    }
  }
  return plan;
}

/**
 * An in-place update is done while the page holds at most this many chunks of an array per chunk in view, plus the
 * slack: the chunks Neuroglancer prefetches around the view (coarser levels, neighbouring slabs of a volume) fit in
 * it, the chunks of views the user has left do not.
 */
export const MAX_HELD_PER_SHOWN = 2;
export const MAX_HELD_SLACK = 8;

/**
 * Why the sources hold too many chunks out of view for an in-place update, or undefined. Neuroglancer keeps the
 * chunks of earlier views in memory, and updating them in place needs the kernel to compute them all on every
 * update; a reload keeps only what is in view. `inView` maps a source to the Neuroglancer keys of its chunks in view.
 */
export function heldOutOfView(sources: UpdatableSource[], inView: Map<unknown, Set<string>>): string | undefined {
  let held = 0;
  let shown = 0;
  for (const source of sources) {
    const keys = inView.get(source);
    for (const key of source.chunks.keys()) {
      ++held;
      if (keys?.has(key)) ++shown;
    }
  }
  return held > MAX_HELD_PER_SHOWN * shown + MAX_HELD_SLACK ? `the page holds ${held} chunks, ${shown} in view` : undefined;
}

/** Puts the planned bytes into the chunks and re-uploads the textures of those on the GPU. */
export function applyChunkUpdate(plan: ChunkUpdatePlan): void {
  for (const { source, chunk, data } of plan.changes) {
    const gl = source.gl;
    const onGpu = chunk.state === ChunkState.GPU_MEMORY;
    // with data, this deletes the chunk's own texture; a missing chunk only points at the shared fill-value one
    if (onGpu) chunk.freeGPUMemory(gl);
    if (data === null) {
      const fill = source.chunkFormatHandler!.fillValueChunk!;
      chunk.data = null;
      chunk.texture = fill.texture;
      chunk.textureLayout = fill.textureLayout;
    } else {
      if (chunk.data === null) {
        chunk.texture = null; // was the shared fill-value texture: copyToGPU makes the chunk its own
        chunk.textureLayout = null;
      }
      const Array = DATA_TYPE_ARRAY_CONSTRUCTOR[source.spec!.dataType as 0];
      // a copy: the pushed bytes may be a view into the whole message
      const copy = data.slice();
      chunk.data = new Array(copy.buffer, 0, copy.byteLength / Array.BYTES_PER_ELEMENT);
    }
    if (onGpu) chunk.copyToGPU(gl);
  }
}
