// Unit tests of data/chunk_update.ts: planning and applying the in-place update of a viewer's chunks from a refresh's
// pushed data, with fake chunk sources shaped like Neuroglancer's (frontend zarr volume sources).

import assert from "node:assert/strict";
import { test } from "node:test";
import { ChunkState } from "neuroglancer/unstable/chunk_manager/base.js";
import { DataType } from "neuroglancer/unstable/util/data_type.js";
import {
  PRECOMPUTED_SOURCE_TYPE,
  applyChunkUpdate,
  chunkKeyOf,
  heldOutOfView,
  planChunkUpdate,
  precomputedChunkKey,
  zarrChunkKey,
  type PushedLookup,
  type UpdatableChunk,
  type UpdatableSource,
} from "../src/data/chunk_update.js";

const FILL = { texture: "fill-texture", textureLayout: "fill-layout" };

/** A chunk that records GPU calls: copyToGPU gives it its own texture (as Neuroglancer's does for data). */
class FakeChunk implements UpdatableChunk {
  calls: string[] = [];
  texture: unknown;
  textureLayout: unknown;
  constructor(
    public data: Uint8Array | null,
    public state: number = ChunkState.GPU_MEMORY,
    public chunkDataSize: number[] = [2, 2],
  ) {
    this.texture = data === null ? FILL.texture : "own-texture-0";
    this.textureLayout = data === null ? FILL.textureLayout : "own-layout";
  }
  copyToGPU(gl: unknown) {
    assert.equal(gl, "gl");
    this.calls.push(`copyToGPU(texture was ${String(this.texture)})`);
    this.state = ChunkState.GPU_MEMORY;
    if (this.data !== null) this.texture = `own-texture-${this.calls.length}`;
  }
  freeGPUMemory(gl: unknown) {
    assert.equal(gl, "gl");
    this.calls.push("freeGPUMemory");
    this.state = ChunkState.SYSTEM_MEMORY;
  }
}

function source(url: string, chunks: Record<string, FakeChunk>, fill = true): UpdatableSource {
  return {
    chunks: new Map(Object.entries(chunks)),
    parameters: { url },
    spec: { dataType: DataType.UINT8, chunkDataSize: [2, 2] },
    chunkFormatHandler: fill ? { fillValueChunk: FILL } : {},
    gl: "gl",
  };
}

const bytes = (...values: number[]) => new Uint8Array(values);

function lookupFrom(pushed: Record<string, Uint8Array | null>): PushedLookup {
  return (key) => (key in pushed ? pushed[key] : undefined);
}

test("zarrChunkKey: the source's path plus Neuroglancer's grid position reversed, '.'-separated", () => {
  assert.equal(zarrChunkKey("mem://w1/predictions/5/0/", "0,2,1"), "predictions/5/0/1.2.0");
  assert.equal(zarrChunkKey("mem://w1/labels/1", "3,4"), "labels/1/4.3");
  assert.equal(zarrChunkKey("mem://w1/labels/0/", "0,0,7"), "labels/0/7.0.0");
  assert.equal(zarrChunkKey("mem://w1/predictions/0/", "0,0,0"), null, "a layout without a level");
  assert.equal(zarrChunkKey("mem://w1/labels/0/", "x,1"), null);
});

test("no plan for a source whose URL names no level of a widget array", () => {
  const plan = planChunkUpdate([source("mem://w/labels/", { "0,0": new FakeChunk(bytes(1, 1, 1, 1)) })],
    lookupFrom({ "labels/0/0.0": bytes(2, 2, 2, 2) }));
  assert.match(String(plan), /chunk 0,0 of mem:\/\/w\/labels\/ has no key of the widget/);
});

test("a plan covers every chunk the page holds, on the GPU or not, and names the chunks by key", () => {
  const a = new FakeChunk(bytes(1, 1, 1, 1));
  const b = new FakeChunk(null, ChunkState.SYSTEM_MEMORY);
  const plan = planChunkUpdate([source("mem://w/labels/0/", { "0,0": a, "1,0": b })], lookupFrom({
    "labels/0/0.0": bytes(2, 2, 2, 2),
    "labels/0/0.1": bytes(3, 3, 3, 3),
  }));
  assert.notEqual(typeof plan, "string", String(plan));
  if (typeof plan === "string") return;
  assert.deepEqual([...plan.held], ["labels/0/0.0", "labels/0/0.1"]);
  assert.equal(plan.changes.length, 2);
  assert.deepEqual(a.calls, [], "planning changes nothing");
});

test("no plan when a held chunk was not pushed or its bytes do not fit", () => {
  const held = { "0,0": new FakeChunk(bytes(1, 1, 1, 1)), "1,0": new FakeChunk(bytes(1, 1, 1, 1)) };
  const notPushed = planChunkUpdate([source("mem://w/labels/0/", held)], lookupFrom({ "labels/0/0.0": bytes(0, 0, 0, 0) }));
  assert.match(String(notPushed), /labels\/0\/0\.1 was not pushed/);
  const wrongSize = planChunkUpdate([source("mem://w/labels/0/", held)], lookupFrom({
    "labels/0/0.0": bytes(0, 0, 0, 0),
    "labels/0/0.1": bytes(0, 0),
  }));
  assert.match(String(wrongSize), /2 bytes do not fit/);
  assert.deepEqual(planChunkUpdate([], lookupFrom({})), { changes: [], held: new Set() },
    "no source holds chunks: nothing to update");
});

test("a chunk pushed as missing: unchanged if it was missing, else it needs the fill-value texture", () => {
  const wasMissing = new FakeChunk(null);
  const plan = planChunkUpdate([source("mem://w/labels/0/", { "0,0": wasMissing })], lookupFrom({ "labels/0/0.0": null }));
  assert.ok(typeof plan !== "string");
  if (typeof plan === "string") return;
  assert.equal(plan.changes.length, 0, "nothing to do");
  assert.deepEqual([...plan.held], ["labels/0/0.0"], "still shown: the kernel keeps it in its working set");
  const erased = planChunkUpdate([source("mem://w/labels/0/", { "0,0": new FakeChunk(bytes(1, 1, 1, 1)) }, false)],
    lookupFrom({ "labels/0/0.0": null }));
  assert.match(String(erased), /no fill value texture/);
});

test("apply: new bytes (a copy) in every chunk, textures re-uploaded for the chunks on the GPU", () => {
  const onGpu = new FakeChunk(bytes(1, 1, 1, 1));
  const inMemory = new FakeChunk(bytes(1, 1, 1, 1), ChunkState.SYSTEM_MEMORY);
  const message = new Uint8Array([9, 5, 6, 7, 8, 9]);
  const pushed = message.subarray(1, 5); // a view into a larger message buffer
  const plan = planChunkUpdate([source("mem://w/predictions/3/0/", { "0,0,0": onGpu, "0,1,0": inMemory })],
    lookupFrom({ "predictions/3/0/0.0.0": pushed, "predictions/3/0/0.1.0": bytes(4, 3, 2, 1) }));
  if (typeof plan === "string") assert.fail(plan);
  applyChunkUpdate(plan);
  assert.deepEqual(onGpu.data, bytes(5, 6, 7, 8));
  assert.notEqual(onGpu.data!.buffer, message.buffer, "the chunk does not keep the message alive");
  assert.deepEqual(onGpu.calls, ["freeGPUMemory", "copyToGPU(texture was own-texture-0)"]);
  assert.equal(onGpu.state, ChunkState.GPU_MEMORY);
  assert.deepEqual(inMemory.data, bytes(4, 3, 2, 1));
  assert.deepEqual(inMemory.calls, [], "uploaded by Neuroglancer when it needs it");
  assert.equal(inMemory.state, ChunkState.SYSTEM_MEMORY);
});

test("apply: a missing chunk that gets data leaves the shared fill texture; an erased one goes back to it", () => {
  const painted = new FakeChunk(null);
  const erased = new FakeChunk(bytes(1, 1, 1, 1));
  const plan = planChunkUpdate([source("mem://w/labels/0/", { "0,0": painted, "1,0": erased })],
    lookupFrom({ "labels/0/0.0": bytes(2, 0, 0, 2), "labels/0/0.1": null }));
  if (typeof plan === "string") assert.fail(plan);
  applyChunkUpdate(plan);
  // the fill texture is shared by every missing chunk: it must not be freed or overwritten
  assert.deepEqual(painted.calls, ["freeGPUMemory", "copyToGPU(texture was null)"]);
  assert.deepEqual(painted.data, bytes(2, 0, 0, 2));
  assert.notEqual(painted.texture, FILL.texture);
  assert.equal(erased.data, null);
  assert.equal(erased.texture, FILL.texture);
  assert.equal(erased.textureLayout, FILL.textureLayout);
  assert.deepEqual(erased.calls, ["freeGPUMemory", "copyToGPU(texture was fill-texture)"]);
  assert.equal(erased.state, ChunkState.GPU_MEMORY);
});

test("heldOutOfView: at most 2 chunks held per chunk in view, plus 8", () => {
  const chunks = (n: number) => Object.fromEntries(Array.from({ length: n }, (_, i) => [`${i},0`, new FakeChunk(null)]));
  const a = source("mem://w/labels/0/", chunks(12));
  const b = source("mem://w/labels/1/", chunks(2));
  const keys = (...names: string[]) => new Set(names);
  // 14 held, 3 in view (2 of a, 1 of b): 14 <= 2 * 3 + 8
  assert.equal(heldOutOfView([a, b], new Map<unknown, Set<string>>([[a, keys("0,0", "1,0")], [b, keys("0,0", "9,9")]])),
    undefined);
  // 14 held, 2 in view: 14 > 12
  assert.equal(heldOutOfView([a, b], new Map<unknown, Set<string>>([[a, keys("0,0", "1,0")]])),
    "the page holds 14 chunks, 2 in view");
  assert.equal(heldOutOfView([b], new Map()), undefined, "a few chunks held, none in view: within the slack");
});

/**
 * A precomputed source of one chunk layout of a level, as Neuroglancer makes it from the kernel's info: sizes in
 * (x, y, z[, channels]) order, the channels stored whole in every chunk.
 */
function precomputedSource(
  url: string,
  chunkDataSize: number[],
  upperVoxelBound: number[],
  chunks: Record<string, FakeChunk>,
): UpdatableSource {
  return {
    chunks: new Map(Object.entries(chunks)),
    parameters: { url },
    spec: { dataType: DataType.UINT8, chunkDataSize, upperVoxelBound, baseVoxelOffset: chunkDataSize.map(() => 0) },
    chunkFormatHandler: { fillValueChunk: FILL },
    gl: "gl",
    RPC_TYPE_ID: PRECOMPUTED_SOURCE_TYPE,
  };
}

test("precomputedChunkKey: the chunk's box in its level's voxels, clipped at the level's size, x first", () => {
  // a 120 x 512 x 300 (z, y, x) level with two classes: chunks flat along z, along y, along x
  const size = [300, 512, 120, 2];
  const url = "mem://w1/predictions/3/0/";
  const flatZ = { chunkDataSize: [256, 256, 1, 2], upperVoxelBound: size };
  assert.equal(precomputedChunkKey(url, flatZ, "0,1,5,0"), "predictions/3/0/0-256_256-512_5-6");
  assert.equal(precomputedChunkKey(url, flatZ, "1,0,119,0"), "predictions/3/0/256-300_0-256_119-120", "an edge chunk");
  const flatY = { chunkDataSize: [256, 1, 256, 2], upperVoxelBound: size };
  assert.equal(precomputedChunkKey(url, flatY, "1,7,0,0"), "predictions/3/0/256-300_7-8_0-120");
  const flatX = { chunkDataSize: [1, 256, 256, 2], upperVoxelBound: size };
  assert.equal(precomputedChunkKey(url, flatX, "299,1,0,0"), "predictions/3/0/299-300_256-512_0-120");
  // one channel: no channel dimension
  const labels = { chunkDataSize: [256, 256, 1], upperVoxelBound: [300, 512, 120] };
  assert.equal(precomputedChunkKey("mem://w1/labels/2", labels, "1,1,3"), "labels/2/256-300_256-512_3-4");
  const offset = { ...labels, baseVoxelOffset: [10, 0, 0] };
  assert.equal(precomputedChunkKey("mem://w1/labels/2", offset, "0,0,0"), "labels/2/10-266_0-256_0-1");
  assert.equal(precomputedChunkKey(url, flatZ, "0,0,5,1"), null, "channels are stored whole");
  assert.equal(precomputedChunkKey(url, flatZ, "0,0,5"), null, "a key of another rank");
  assert.equal(precomputedChunkKey(url, flatZ, "0,x,5,0"), null);
  assert.equal(precomputedChunkKey("mem://w1/predictions/3/", flatZ, "0,0,5,0"), null, "a layout without a level");
});

test("chunkKeyOf: a precomputed source's chunks by box, a zarr source's by grid index", () => {
  const pre = precomputedSource("mem://w/labels/0/", [4, 4, 1], [6, 4, 3], {});
  assert.equal(chunkKeyOf(pre, "1,0,2"), "labels/0/4-6_0-4_2-3");
  const zarr = source("mem://w/labels/0/", {});
  assert.equal(chunkKeyOf(zarr, "1,0,2"), "labels/0/2.0.1");
  assert.equal(chunkKeyOf({ ...pre, spec: undefined }, "1,0,2"), null, "a precomputed source without its spec");
  assert.equal(chunkKeyOf({ ...pre, parameters: {} }, "1,0,2"), null, "a source without a URL");
});

test("a plan over the three plane-shaped layouts of a precomputed level: each chunk by its box, edge chunks sized", () => {
  // 3 x 4 x 6 (z, y, x) volume, chunks of 4 in-plane: x splits into 4 + 2
  const size = [6, 4, 3];
  const xy = new FakeChunk(bytes(...Array(16).fill(1)), ChunkState.GPU_MEMORY, [4, 4, 1]);
  const xyEdge = new FakeChunk(bytes(...Array(8).fill(1)), ChunkState.GPU_MEMORY, [2, 4, 1]);
  const xz = new FakeChunk(null, ChunkState.GPU_MEMORY, [4, 1, 3]);
  const yz = new FakeChunk(bytes(...Array(12).fill(1)), ChunkState.SYSTEM_MEMORY, [1, 4, 3]);
  const sources = [
    precomputedSource("mem://w/labels/0/", [4, 4, 1], size, { "0,0,1": xy, "1,0,1": xyEdge }),
    precomputedSource("mem://w/labels/0/", [4, 1, 4], size, { "0,2,0": xz }),
    precomputedSource("mem://w/labels/0/", [1, 4, 4], size, { "5,0,0": yz }),
  ];
  const pushed = {
    "labels/0/0-4_0-4_1-2": bytes(...Array(16).fill(2)),
    "labels/0/4-6_0-4_1-2": bytes(...Array(8).fill(3)),
    "labels/0/0-4_2-3_0-3": bytes(...Array(12).fill(4)),
    "labels/0/5-6_0-4_0-3": null,
  };
  const plan = planChunkUpdate(sources, lookupFrom(pushed));
  if (typeof plan === "string") assert.fail(plan);
  assert.deepEqual([...plan.held].sort(), Object.keys(pushed).sort());
  applyChunkUpdate(plan);
  assert.deepEqual(xy.data, bytes(...Array(16).fill(2)));
  assert.deepEqual(xyEdge.data, bytes(...Array(8).fill(3)));
  assert.deepEqual(xz.data, bytes(...Array(12).fill(4)), "a missing chunk gets data");
  assert.equal(yz.data, null, "an erased chunk is missing again");
  assert.equal(yz.texture, FILL.texture);

  const wrongSize = planChunkUpdate(sources, lookupFrom({ ...pushed, "labels/0/4-6_0-4_1-2": bytes(...Array(16).fill(3)) }));
  assert.match(String(wrongSize), /labels\/0\/4-6_0-4_1-2: 16 bytes do not fit the chunk/);
  const { "labels/0/0-4_2-3_0-3": _, ...withoutXz } = pushed;
  assert.match(String(planChunkUpdate(sources, lookupFrom(withoutXz))), /labels\/0\/0-4_2-3_0-3 was not pushed/);
});
