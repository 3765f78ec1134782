// Unit tests of data/chunk_fetcher.ts (`ChunkFetcher` with a fake transport), data/kvstore_frontend.ts (the per-view
// fetcher registry and `MemKvStore` reads, byte ranges) and data/mem_url.ts. Importing kvstore_frontend also
// registers the mem:// scheme with Neuroglancer's kvstore registry, which runs under Node.

import assert from "node:assert/strict";
import { test } from "node:test";
import { settled, sleep } from "./helpers.js";
import type { ChunkPush, ChunkTransport } from "../src/data/kvstore_frontend.js";
import {
  ChunkFetcher,
  MemKvStore,
  chunkFetcherCount,
  getChunkFetcher,
  registerChunkFetcher,
} from "../src/data/kvstore_frontend.js";
import { MEM_SCHEME, memSource, memUrl, parseMemUrl } from "../src/data/mem_url.js";
import { RequestError } from "../src/widget/transport.js";
import type { ChunksReply, ChunksRequest, SeenRequest } from "../src/protocol.js";

interface SentRequest {
  keys: string[];
  signal?: AbortSignal;
  /** The kernel answers: `data[key]` is the chunk, a missing key is "not found". */
  answer(data: Record<string, Uint8Array | undefined>): void;
  fail(error: unknown): void;
}

/** A transport whose kernel answers when the test says so. */
class FakeTransport implements ChunkTransport {
  requests: SentRequest[] = [];
  notes: Array<{ type: string; keys: string[] }> = [];

  request(
    body: Omit<ChunksRequest, "id">,
    _buffers?: ArrayBuffer[],
    options?: { signal?: AbortSignal },
  ): Promise<{ content: ChunksReply; buffers: Uint8Array[] }> {
    assert.equal(body.type, "chunks");
    return new Promise((resolve, reject) => {
      const keys = [...body.keys];
      const signal = options?.signal;
      // Like Transport: aborting rejects the request.
      signal?.addEventListener("abort", () => reject(new Error("request aborted")), { once: true });
      this.requests.push({
        keys,
        signal,
        answer(data) {
          const found = keys.map((k) => data[k] !== undefined);
          const buffers = keys.filter((k) => data[k] !== undefined).map((k) => data[k]!);
          resolve({ content: { type: "chunks-reply", id: 0, found }, buffers });
        },
        fail: reject,
      });
    });
  }

  notify(body: Omit<SeenRequest, "id">): void {
    this.notes.push({ type: body.type, keys: [...body.keys] });
  }

  /** Keys of every message sent so far, one list per message. */
  get sentKeys(): string[][] {
    return this.requests.map((r) => r.keys);
  }
}

/** Longer than the fetcher's batch delay: the burst read before it has gone out. */
const flushed = () => sleep(25);

const bytes = (...values: number[]) => new Uint8Array(values);

/** A refresh's chunks: `keys[i]` in `buffers[i]`, and the keys now missing. */
const push = (keys: string[], buffers: ChunkPush["buffers"] = [], missing: string[] = []): ChunkPush => ({
  keys,
  buffers,
  missing,
});

/** Chunk data that names its key, so a mix-up shows. */
const chunk = (key: string) => new TextEncoder().encode(key);
const text = (data: Uint8Array | undefined) => (data === undefined ? undefined : new TextDecoder().decode(data));

function answerAll(request: SentRequest) {
  request.answer(Object.fromEntries(request.keys.map((k) => [k, chunk(k)])));
}

test("keys read in one burst go out in one chunks message; each read gets its key's bytes", async () => {
  const t = new FakeTransport();
  const f = new ChunkFetcher(t);
  const keys = ["raw/0/0.0", "raw/0/0.1", "labels/0/0.0", "raw/1/0.0"];
  const reads = keys.map((k) => f.fetch(k));
  assert.equal(t.requests.length, 0, "nothing is sent before the burst is over");
  assert.equal(f.isIdle(), false);
  await flushed();
  assert.deepEqual(t.sentKeys, [keys]);
  t.requests[0].answer({ "raw/0/0.0": bytes(1), "raw/0/0.1": bytes(2, 2), "raw/1/0.0": bytes(4, 4, 4, 4) });
  const results = await Promise.all(reads);
  assert.deepEqual(results, [bytes(1), bytes(2, 2), undefined, bytes(4, 4, 4, 4)]);
  assert.deepEqual(f.stats, { messages: 1, keys: 4, bytes: 7, dropped: 0, cancelled: 0, pushed: 0, waiting: 0, preempted: 0 });
  assert.equal(f.isIdle(), true);
});

test("reply buffers of any kind (ArrayBuffer, DataView into a larger buffer) become the key's bytes", async () => {
  const t = new FakeTransport();
  const f = new ChunkFetcher(t);
  const a = f.fetch("raw/0/0.0");
  const b = f.fetch("raw/0/0.1");
  await flushed();
  const big = new Uint8Array([9, 9, 1, 2, 3, 9]).buffer;
  t.requests[0].answer({
    "raw/0/0.0": new Uint8Array([5, 6]).buffer as unknown as Uint8Array,
    "raw/0/0.1": new DataView(big, 2, 3) as unknown as Uint8Array,
  });
  assert.deepEqual(await a, bytes(5, 6));
  assert.deepEqual(await b, bytes(1, 2, 3));
});

test("the same key read twice in a burst is sent once and answers both reads", async () => {
  const t = new FakeTransport();
  const f = new ChunkFetcher(t);
  const a = f.fetch("raw/0/0.0");
  const b = f.fetch("raw/0/0.0");
  await flushed();
  assert.deepEqual(t.sentKeys, [["raw/0/0.0"]]);
  answerAll(t.requests[0]);
  assert.equal(text(await a), "raw/0/0.0");
  assert.equal(text(await b), "raw/0/0.0");
});

test("reads in separate bursts go out in separate messages", async () => {
  const t = new FakeTransport();
  const f = new ChunkFetcher(t);
  void f.fetch("raw/0/0.0");
  await flushed();
  void f.fetch("raw/0/0.1");
  await flushed();
  assert.deepEqual(t.sentKeys, [["raw/0/0.0"], ["raw/0/0.1"]]);
});

test("default limits: 4 messages in flight per lane, 128 data keys and 12 prediction keys per message", async () => {
  const t = new FakeTransport();
  const f = new ChunkFetcher(t);
  assert.equal(f.maxInFlight, 4);
  assert.equal(f.maxKeysPerMessage, 128);
  assert.equal(f.maxPredictionKeysPerMessage, 12);
  for (let i = 0; i < 130; ++i) void f.fetch(`raw/0/0.${i}`);
  for (let i = 0; i < 13; ++i) void f.fetch(`predictions/1/0/0.${i}.0`);
  await flushed();
  assert.deepEqual(
    t.sentKeys.map((k) => k.length),
    [128, 2, 12, 1],
  );
});

test("two lanes: predictions never share a message with image/label keys, each lane has its own bounds", async () => {
  const t = new FakeTransport();
  const f = new ChunkFetcher(t, { maxInFlight: 2, maxKeysPerMessage: 8, maxPredictionKeysPerMessage: 5 });
  const data = Array.from({ length: 20 }, (_, i) => (i % 2 ? `raw/0/0.${i}` : `labels/0/0.${i}`));
  const preds = Array.from({ length: 12 }, (_, i) => `predictions/3/0/0.${i}.0`);
  const reads = new Map<string, Promise<Uint8Array | undefined>>();
  // Interleaved, as Neuroglancer's worker would ask for them.
  for (let i = 0; i < 20; ++i) {
    reads.set(data[i], f.fetch(data[i]));
    if (i < preds.length) reads.set(preds[i], f.fetch(preds[i]));
  }
  await flushed();
  const isPrediction = (k: string) => k.startsWith("predictions/");
  assert.equal(t.requests.length, 4, "2 data + 2 prediction messages in flight");
  for (const keys of t.sentKeys) {
    assert.ok(keys.every(isPrediction) || !keys.some(isPrediction), `mixed lanes: ${keys}`);
  }
  const dataMessages = t.requests.filter((r) => !isPrediction(r.keys[0]));
  const predictionMessages = t.requests.filter((r) => isPrediction(r.keys[0]));
  assert.deepEqual(dataMessages.map((r) => r.keys), [data.slice(0, 8), data.slice(8, 16)]);
  assert.deepEqual(predictionMessages.map((r) => r.keys), [preds.slice(0, 5), preds.slice(5, 10)]);

  // A full prediction lane does not hold up data: answering one data message sends the next data keys...
  answerAll(dataMessages[0]);
  await flushed();
  assert.equal(t.requests.length, 5);
  assert.deepEqual(t.requests[4].keys, data.slice(16));
  // ...and the predictions wait for their own lane.
  answerAll(predictionMessages[0]);
  await flushed();
  assert.equal(t.requests.length, 6);
  assert.deepEqual(t.requests[5].keys, preds.slice(10));

  for (const r of t.requests) answerAll(r);
  for (const [key, read] of reads) assert.equal(text(await read), key);
  assert.equal(f.isIdle(), true);
  assert.equal(f.stats.messages, 6);
  assert.equal(f.stats.keys, 32);
});

test("an error reply rejects every read of that message; the lane is free again", async () => {
  const t = new FakeTransport();
  const f = new ChunkFetcher(t, { maxInFlight: 1 });
  const a = f.fetch("raw/0/0.0");
  const b = f.fetch("raw/0/0.1");
  await flushed();
  const c = f.fetch("raw/0/0.2");
  await flushed();
  assert.equal(t.requests.length, 1, "one message in flight at most");
  const failure = new Error("kernel error");
  t.requests[0].fail(failure);
  await assert.rejects(a, (e) => e === failure);
  await assert.rejects(b, (e) => e === failure);
  await flushed();
  assert.deepEqual(t.sentKeys[1], ["raw/0/0.2"]);
  answerAll(t.requests[1]);
  assert.equal(text(await c), "raw/0/0.2");
});

test("metadata keys are read from the kernel once (also when missing), chunks every time", async () => {
  const t = new FakeTransport();
  const f = new ChunkFetcher(t);
  const first = f.fetch("raw/0/.zarray");
  const missing = f.fetch("raw/.zgroup");
  void f.fetch("raw/0/0.0");
  await flushed();
  t.requests[0].answer({ "raw/0/.zarray": chunk("zarray"), "raw/0/0.0": bytes(1) });
  assert.equal(text(await first), "zarray");
  assert.equal(await missing, undefined);

  assert.equal(text(await f.fetch("raw/0/.zarray")), "zarray");
  assert.equal(await f.fetch("raw/.zgroup"), undefined);
  void f.fetch("raw/0/0.0");
  await flushed();
  assert.deepEqual(t.sentKeys.slice(1), [["raw/0/0.0"]], "only the chunk is read again");
});

test("metadata the kernel sent ahead is answered without a message", async () => {
  const t = new FakeTransport();
  const f = new ChunkFetcher(t);
  f.preloadMetadata({ "raw/.zattrs": '{"multiscales": []}', "raw/.zarray": null });
  assert.equal(text(await f.fetch("raw/.zattrs")), '{"multiscales": []}');
  assert.equal(await f.fetch("raw/.zarray"), undefined);
  f.preloadMetadata(undefined);
  void f.fetch("raw/0/.zarray");
  await flushed();
  assert.deepEqual(t.sentKeys, [["raw/0/.zarray"]], "only the key not sent ahead goes to the kernel");
});

test("keys go to the kernel as read: the predictions of each layout are keys of their own", async () => {
  const t = new FakeTransport();
  const f = new ChunkFetcher(t);
  const old = f.fetch("predictions/1/.zattrs");
  const chunk1 = f.fetch("predictions/1/0/1.2.0");
  await flushed();
  assert.deepEqual(t.sentKeys, [["predictions/1/.zattrs", "predictions/1/0/1.2.0"]], "both in the predictions lane");
  answerAll(t.requests[0]);
  assert.equal(text(await old), "predictions/1/.zattrs");
  assert.equal(text(await chunk1), "predictions/1/0/1.2.0");
  assert.equal(text(await f.fetch("predictions/1/.zattrs")), "predictions/1/.zattrs", "metadata is read once");
  // a new class: the layers read the next layout, metadata included
  const attrs2 = f.fetch("predictions/2/.zattrs");
  await flushed();
  assert.deepEqual(t.sentKeys[1], ["predictions/2/.zattrs"]);
  answerAll(t.requests[1]);
  assert.equal(text(await attrs2), "predictions/2/.zattrs");
});

test("a metadata read that failed is not cached", async () => {
  const t = new FakeTransport();
  const f = new ChunkFetcher(t);
  const a = f.fetch("raw/.zattrs");
  await flushed();
  t.requests[0].fail(new Error("timeout"));
  await assert.rejects(a);
  const b = f.fetch("raw/.zattrs");
  await flushed();
  assert.equal(t.requests.length, 2);
  answerAll(t.requests[1]);
  assert.equal(text(await b), "raw/.zattrs");
});

test("a read aborted before its message went out is dropped from the message", async () => {
  const t = new FakeTransport();
  const f = new ChunkFetcher(t);
  const controller = new AbortController();
  const dropped = f.fetch("raw/0/0.0", controller.signal);
  const kept = f.fetch("raw/0/0.1");
  controller.abort(new Error("not visible any more"));
  await assert.rejects(dropped, /not visible any more/);
  assert.equal(f.stats.dropped, 1);
  await flushed();
  assert.deepEqual(t.sentKeys, [["raw/0/0.1"]]);
  answerAll(t.requests[0]);
  assert.equal(text(await kept), "raw/0/0.1");
});

test("a key stays in the message while another reader still wants it", async () => {
  const t = new FakeTransport();
  const f = new ChunkFetcher(t);
  const controller = new AbortController();
  const gaveUp = f.fetch("raw/0/0.0", controller.signal);
  const waits = f.fetch("raw/0/0.0");
  controller.abort();
  await assert.rejects(gaveUp);
  assert.equal(f.stats.dropped, 0);
  await flushed();
  assert.deepEqual(t.sentKeys, [["raw/0/0.0"]]);
  answerAll(t.requests[0]);
  assert.equal(text(await waits), "raw/0/0.0");
});

test("an already aborted read rejects at once and sends nothing", async () => {
  const t = new FakeTransport();
  const f = new ChunkFetcher(t);
  const controller = new AbortController();
  controller.abort(new Error("gone"));
  await assert.rejects(f.fetch("raw/0/0.0", controller.signal), /gone/);
  await flushed();
  assert.equal(t.requests.length, 0);
  assert.equal(f.isIdle(), true);
});

test("a sent message is cancelled only once every read of every key in it was aborted", async () => {
  const t = new FakeTransport();
  const f = new ChunkFetcher(t);
  const c1 = new AbortController();
  const c2 = new AbortController();
  const c3 = new AbortController();
  const a1 = f.fetch("raw/0/0.0", c1.signal);
  const a2 = f.fetch("raw/0/0.0", c2.signal);
  const b = f.fetch("raw/0/0.1", c3.signal);
  await flushed();
  assert.equal(t.requests.length, 1);
  const { signal } = t.requests[0];
  assert.ok(signal !== undefined, "chunk requests carry an AbortSignal");
  c1.abort();
  c3.abort();
  await assert.rejects(a1);
  await assert.rejects(b);
  assert.equal(signal.aborted, false, "one reader of raw/0/0.0 still waits");
  assert.equal(f.stats.cancelled, 0);
  c2.abort();
  await assert.rejects(a2);
  assert.equal(signal.aborted, true);
  assert.equal(f.stats.cancelled, 1);
  await flushed();
  assert.equal(f.isIdle(), true, "the lane is free once the cancelled request settled");
});

test("aborting some reads of a sent message keeps the others", async () => {
  const t = new FakeTransport();
  const f = new ChunkFetcher(t);
  const controller = new AbortController();
  const aborted = f.fetch("raw/0/0.0", controller.signal);
  const kept = f.fetch("raw/0/0.1");
  await flushed();
  controller.abort();
  await assert.rejects(aborted);
  assert.equal(t.requests[0].signal?.aborted, false);
  answerAll(t.requests[0]);
  assert.equal(text(await kept), "raw/0/0.1");
  assert.equal(await settled(aborted), "rejected", "the reply does not resolve an aborted read");
});

test("receivePush: pushed chunks answer reads locally without a message", async () => {
  const t = new FakeTransport();
  const f = new ChunkFetcher(t);
  const view = new DataView(new Uint8Array([0, 1, 2, 3, 4]).buffer, 1, 3);
  f.receivePush(["labels"], push(["labels/0/0.0", "labels/0/0.1"], [bytes(7, 7), view]));
  assert.deepEqual(await f.fetch("labels/0/0.0"), bytes(7, 7));
  assert.deepEqual(await f.fetch("labels/0/0.1"), bytes(1, 2, 3));
  assert.deepEqual(await f.fetch("labels/0/0.0"), bytes(7, 7), "served as often as it is read");
  const other = f.fetch("labels/0/1.0");
  await flushed();
  assert.deepEqual(t.sentKeys, [["labels/0/1.0"]], "keys not pushed still go to the kernel");
  answerAll(t.requests[0]);
  await other;
  assert.equal(f.stats.pushed, 3);
  f.dispose();
});

test("receivePush: the next push of an array drops its older pushed chunks, other arrays keep theirs", async () => {
  const t = new FakeTransport();
  const f = new ChunkFetcher(t);
  f.receivePush(["labels", "predictions"], push(["labels/0/0.0", "predictions/1/0/0.0.0"], [bytes(1), bytes(2)]));
  f.receivePush(["labels"], push(["labels/0/0.1"], [bytes(3)]));
  assert.deepEqual(await f.fetch("labels/0/0.1"), bytes(3));
  assert.deepEqual(await f.fetch("predictions/1/0/0.0.0"), bytes(2), "predictions were not refreshed");
  const stale = f.fetch("labels/0/0.0");
  await flushed();
  assert.deepEqual(t.sentKeys, [["labels/0/0.0"]], "the older labels chunk is out of date: read from the kernel");
  t.requests[0].answer({ "labels/0/0.0": bytes(9) });
  assert.deepEqual(await stale, bytes(9));
  // A push without chunks still drops the array's pushed chunks.
  f.receivePush(["predictions"], push([], []));
  void f.fetch("predictions/1/0/0.0.0");
  await flushed();
  assert.deepEqual(t.sentKeys[1], ["predictions/1/0/0.0.0"]);
  f.dispose();
});

test("receivePush: a pushed chunk answers reads of its own key only (a layer of another layout reads the kernel)", async () => {
  const t = new FakeTransport();
  const f = new ChunkFetcher(t);
  f.receivePush(["predictions"], push(["predictions/5/0/0.0.0"], [bytes(5)]));
  assert.deepEqual(await f.fetch("predictions/5/0/0.0.0"), bytes(5));
  const older = f.fetch("predictions/4/0/0.0.0");
  await flushed();
  assert.deepEqual(t.sentKeys, [["predictions/4/0/0.0.0"]]);
  t.requests[0].answer({});
  assert.equal(await older, undefined);
  f.dispose();
});
test("receivePush: keys served locally go to the kernel in one seen message per burst", async () => {
  const t = new FakeTransport();
  const f = new ChunkFetcher(t);
  f.receivePush(["labels"], push(["labels/0/0.0", "labels/0/0.1", "labels/0/0.2"], [bytes(1), bytes(2), bytes(3)]));
  await f.fetch("labels/0/0.0");
  await f.fetch("labels/0/0.1");
  await f.fetch("labels/0/0.0");
  await sleep(10);
  assert.equal(t.notes.length, 0, "the report waits for the burst to end");
  await sleep(80);
  assert.deepEqual(t.notes, [{ type: "seen", keys: ["labels/0/0.0", "labels/0/0.1"] }]);
  await f.fetch("labels/0/0.2");
  await sleep(80);
  assert.deepEqual(t.notes[1], { type: "seen", keys: ["labels/0/0.2"] });
  assert.equal(t.notes.length, 2);
  assert.equal(t.requests.length, 0, "no chunks message at all");
  f.dispose();
});

test("receivePush: a large burst of seen keys is split into messages of at most 1024 keys", async () => {
  const t = new FakeTransport();
  const f = new ChunkFetcher(t);
  const keys = Array.from({ length: 1030 }, (_, i) => `labels/0/${i}.0`);
  f.receivePush(["labels"], push(keys, keys.map(() => bytes(0))));
  await Promise.all(keys.map((k) => f.fetch(k)));
  await sleep(80);
  assert.deepEqual(
    t.notes.map((n) => n.keys.length),
    [1024, 6],
  );
  assert.deepEqual(t.notes.flatMap((n) => n.keys), keys);
  f.dispose();
});

test("receivePush: keys pushed as missing are answered 'not found' without a message", async () => {
  const t = new FakeTransport();
  const f = new ChunkFetcher(t);
  f.receivePush(["labels"], push(["labels/0/0.0"], [bytes(1)], ["labels/0/0.1", "labels/0/0.0"]));
  assert.deepEqual(await f.fetch("labels/0/0.0"), bytes(1), "a key with bytes keeps them");
  assert.equal(await f.fetch("labels/0/0.1"), undefined);
  assert.equal(f.pushedChunk("labels/0/0.1"), null);
  assert.equal(f.pushedChunk("labels/0/0.2"), undefined, "not pushed at all");
  await sleep(80);
  assert.equal(t.requests.length, 0);
  assert.deepEqual(t.notes, [{ type: "seen", keys: ["labels/0/0.0", "labels/0/0.1"] }]);
  f.receivePush(["labels"], push([], []));
  assert.equal(f.pushedChunk("labels/0/0.1"), undefined, "the next refresh of the array drops them");
  f.dispose();
});

test("readSinceReload: label and prediction chunks read since forgetReads, whatever answered them", async () => {
  const t = new FakeTransport();
  const f = new ChunkFetcher(t);
  f.receivePush(["labels"], push(["labels/0/0.0"], [bytes(1)]));
  await f.fetch("labels/0/0.0"); // from the push
  const reads = [f.fetch("labels/0/0.1"), f.fetch("predictions/3/0/0.0.0"), f.fetch("raw/0/0.0"),
    f.fetch("labels/.zattrs"), f.fetch("labels/0/x.0"), f.fetch("labels/1/0-8_0-8_2-3"), f.fetch("labels/info")];
  await flushed();
  for (const r of t.requests) answerAll(r);
  await Promise.all(reads);
  assert.deepEqual([...f.readSinceReload("labels")].sort(), ["labels/0/0.0", "labels/0/0.1", "labels/1/0-8_0-8_2-3"],
    "chunks of zarr and precomputed levels; no metadata, no malformed key");
  assert.deepEqual([...f.readSinceReload("predictions")], ["predictions/3/0/0.0.0"]);
  assert.deepEqual([...f.readSinceReload("raw")], [], "only arrays a refresh changes are recorded");
  f.forgetReads("labels");
  assert.deepEqual([...f.readSinceReload("labels")], []);
  assert.equal(f.readSinceReload("predictions").size, 1, "other arrays keep their record");
  f.dispose();
});

test("hasPendingReads: while a read of the array is queued or waits for the kernel", async () => {
  const t = new FakeTransport();
  const f = new ChunkFetcher(t);
  assert.equal(f.hasPendingReads("labels"), false);
  const read = f.fetch("labels/0/0.0");
  assert.equal(f.hasPendingReads("labels"), true, "queued");
  assert.equal(f.hasPendingReads("predictions"), false);
  await flushed();
  assert.equal(t.requests.length, 1);
  assert.equal(f.hasPendingReads("labels"), true, "sent, no reply yet");
  answerAll(t.requests[0]);
  await read;
  assert.equal(f.hasPendingReads("labels"), false);
  f.dispose();
});

test("keepInWorkingSet: keys the page shows go to the kernel in the next seen message", async () => {
  const t = new FakeTransport();
  const f = new ChunkFetcher(t);
  f.keepInWorkingSet(["labels/0/0.0", "predictions/2/0/0.0.0"]);
  f.keepInWorkingSet(["labels/0/0.0"]);
  await sleep(80);
  assert.deepEqual(t.notes, [{ type: "seen", keys: ["labels/0/0.0", "predictions/2/0/0.0.0"] }]);
  f.dispose();
});

test("dispose stops a pending seen message and forgets pushed chunks", async () => {
  const t = new FakeTransport();
  const f = new ChunkFetcher(t);
  f.receivePush(["labels"], push(["labels/0/0.0"], [bytes(1)]));
  await f.fetch("labels/0/0.0");
  f.dispose();
  await sleep(80);
  assert.equal(t.notes.length, 0);
  void f.fetch("labels/0/0.0");
  await flushed();
  assert.deepEqual(t.sentKeys, [["labels/0/0.0"]]);
});

test("parseMemUrl and memUrl: widget id and path, each the other's inverse", () => {
  assert.deepEqual(parseMemUrl("mem://w1/raw/0/0.0"), { widgetId: "w1", path: "raw/0/0.0" });
  assert.deepEqual(parseMemUrl("mem://w1/labels/"), { widgetId: "w1", path: "labels/" });
  assert.deepEqual(parseMemUrl("mem://w1"), { widgetId: "w1", path: "" });
  assert.deepEqual(parseMemUrl("mem://w1/"), { widgetId: "w1", path: "" });
  assert.deepEqual(parseMemUrl("mem://a%20b/raw"), { widgetId: "a b", path: "raw" });
  for (const bad of ["http://w1/raw", "mem:///raw", "mem:/w1/raw", "", "mem://"]) {
    assert.throws(() => parseMemUrl(bad), /Invalid mem:\/\/ URL/, bad);
  }
  assert.equal(memUrl("a b", "raw/0/0.0"), "mem://a%20b/raw/0/0.0");
  assert.deepEqual(parseMemUrl(memUrl("a b", "labels/")), { widgetId: "a b", path: "labels/" });
  assert.equal(memUrl("w1"), "mem://w1/");
});

test("memSource: the mem:// URL of a layer's data source, null for a source the kernel does not serve", () => {
  assert.deepEqual(memSource("mem://w1/predictions/2/|zarr2:"), { widgetId: "w1", path: "predictions/2/" });
  assert.deepEqual(memSource("mem://w1/labels/"), { widgetId: "w1", path: "labels/" });
  assert.equal(memSource("https://example.org/image.zarr/|zarr2:"), null);
  assert.equal(memSource("zarr2://mem://w1/raw/"), null);
  assert.equal(memSource("mem://"), null);
});

test("fetchers are routed per view: by the viewer's chunk manager, else the newest of the widget", () => {
  const t = new FakeTransport();
  const f1 = new ChunkFetcher(t);
  const f2 = new ChunkFetcher(t);
  const owner1 = {};
  const owner2 = {};
  const id = "routing-widget";
  assert.equal(getChunkFetcher(id), undefined);
  const un1 = registerChunkFetcher(id, f1, owner1);
  const un2 = registerChunkFetcher(id, f2, owner2);
  assert.equal(chunkFetcherCount(id), 2);
  assert.equal(getChunkFetcher(id, owner1), f1);
  assert.equal(getChunkFetcher(id, owner2), f2);
  assert.equal(getChunkFetcher(id, {}), f2, "an unknown viewer gets the newest");
  assert.equal(getChunkFetcher(id), f2);
  un2();
  assert.equal(getChunkFetcher(id, owner2), f1, "closing one view leaves the other loading");
  un2(); // twice is harmless
  assert.equal(chunkFetcherCount(id), 1);
  un1();
  assert.equal(chunkFetcherCount(id), 0);
  assert.equal(getChunkFetcher(id), undefined);
});

test("MemKvStore reads whole keys and byte ranges through the view's fetcher", async () => {
  const t = new FakeTransport();
  const f = new ChunkFetcher(t);
  const owner = {};
  const unregister = registerChunkFetcher("store-widget", f, owner);
  try {
    const store = new MemKvStore("store-widget", owner);
    assert.equal(store.getUrl("raw/0/0.0"), `${MEM_SCHEME}://store-widget/raw/0/0.0`);
    f.receivePush(["raw"], push(["raw/0/0.0"], [bytes(0, 1, 2, 3, 4, 5, 6, 7, 8, 9)]));
    const signal = new AbortController().signal;

    const whole = await store.read("raw/0/0.0", { signal });
    assert.ok(whole !== undefined);
    assert.deepEqual([whole.offset, whole.length, whole.totalSize], [0, 10, 10]);
    assert.deepEqual(new Uint8Array(await whole.response.arrayBuffer()), bytes(0, 1, 2, 3, 4, 5, 6, 7, 8, 9));

    const range = await store.read("raw/0/0.0", { signal, byteRange: { offset: 2, length: 3 } });
    assert.ok(range !== undefined);
    assert.deepEqual([range.offset, range.length, range.totalSize], [2, 3, 10]);
    assert.deepEqual(new Uint8Array(await range.response.arrayBuffer()), bytes(2, 3, 4));

    const suffix = await store.read("raw/0/0.0", { signal, byteRange: { suffixLength: 4 } });
    assert.ok(suffix !== undefined);
    assert.deepEqual([suffix.offset, suffix.length, suffix.totalSize], [6, 4, 10]);
    assert.deepEqual(new Uint8Array(await suffix.response.arrayBuffer()), bytes(6, 7, 8, 9));

    const beyond = await store.read("raw/0/0.0", { signal, byteRange: { offset: 8, length: 5 } });
    assert.deepEqual([beyond?.offset, beyond?.length], [8, 2]);

    assert.deepEqual(await store.stat("raw/0/0.0", { signal }), { totalSize: 10 });

    const missing = store.read("raw/0/9.9", { signal });
    await flushed();
    t.requests[0].answer({});
    assert.equal(await missing, undefined);
    assert.deepEqual(await store.list(), { entries: [], directories: [] });

    await assert.rejects(new MemKvStore("no-such-widget").read("raw/.zattrs", { signal }), /No ilastik widget/);
  } finally {
    unregister();
    f.dispose();
  }
});

test("setViewFilter: prediction reads out of view wait unsent, and go once in view; other reads never wait", async () => {
  const t = new FakeTransport();
  const f = new ChunkFetcher(t);
  const inView = new Set(["predictions/0/0/0-4_0-4_5-6"]);
  let made = 0;
  f.setViewFilter(() => {
    made++;
    return (key) => !inView.has(key);
  });
  const shown = f.fetch("predictions/0/0/0-4_0-4_5-6");
  const left = f.fetch("predictions/0/0/0-4_0-4_2-3"); // a plane scrolled past
  const labels = f.fetch("labels/0/0-4_0-4_2-3");
  await flushed();
  assert.deepEqual(t.sentKeys.sort(), [["labels/0/0-4_0-4_2-3"], ["predictions/0/0/0-4_0-4_5-6"]]);
  assert.ok(made >= 1, "the filter is made per flush");
  assert.equal(f.stats.waiting, 1);
  answerAll(t.requests[0]);
  answerAll(t.requests[1]);
  await Promise.all([shown, labels]);
  await flushed();
  assert.equal(f.isIdle(), true, "a read waiting out of view does not keep the page busy");
  assert.equal(f.hasPendingReads("predictions"), false, "nor does it hold back an in-place update");
  assert.deepEqual([...f.readSinceReload("predictions")], ["predictions/0/0/0-4_0-4_5-6"],
    "an unsent read is in no chunk of the worker");
  assert.equal(await settled(left), "pending");
  // back on that plane
  inView.add("predictions/0/0/0-4_0-4_2-3");
  f.viewChanged();
  await flushed();
  assert.deepEqual(t.sentKeys[2], ["predictions/0/0/0-4_0-4_2-3"]);
  assert.equal(f.isIdle(), false);
  answerAll(t.requests[2]);
  assert.equal(text(await left), "predictions/0/0/0-4_0-4_2-3");
  f.dispose();
});

test("a read waiting out of view is dropped when aborted, answered from a later push, or sent by the periodic check", async () => {
  const t = new FakeTransport();
  const f = new ChunkFetcher(t);
  f.waitingCheckMs = 20;
  let inView = false;
  f.setViewFilter(() => () => !inView);
  const controller = new AbortController();
  const aborted = f.fetch("predictions/0/0/0-4_0-4_1-2", controller.signal);
  const pushedLater = f.fetch("predictions/0/0/0-4_0-4_2-3");
  const sentLater = f.fetch("predictions/0/0/0-4_0-4_3-4");
  await flushed();
  assert.equal(t.requests.length, 0);
  assert.equal(f.stats.waiting, 3);
  controller.abort(new Error("evicted"));
  await assert.rejects(aborted, /evicted/);
  f.receivePush(["predictions"], push(["predictions/0/0/0-4_0-4_2-3"], [bytes(4)]));
  await sleep(40); // the periodic check looks again
  assert.deepEqual(await pushedLater, bytes(4), "answered from the push, nothing sent");
  assert.equal(t.requests.length, 0);
  assert.deepEqual(t.notes, [], "the seen report waits for its burst");
  inView = true; // in view again without a view change the fetcher heard of (a panel resized)
  await sleep(60);
  assert.deepEqual(t.sentKeys, [["predictions/0/0/0-4_0-4_3-4"]]);
  answerAll(t.requests[0]);
  assert.equal(text(await sentLater), "predictions/0/0/0-4_0-4_3-4");
  await sleep(80);
  assert.deepEqual(t.notes, [{ type: "seen", keys: ["predictions/0/0/0-4_0-4_2-3"] }]);
  f.dispose();
});

test("a view filter that throws sends every read", async () => {
  const t = new FakeTransport();
  const f = new ChunkFetcher(t);
  const warn = console.warn;
  console.warn = () => {};
  try {
    f.setViewFilter(() => {
      throw new Error("no panels yet");
    });
    const read = f.fetch("predictions/0/0/0-4_0-4_1-2");
    await flushed();
    assert.deepEqual(t.sentKeys, [["predictions/0/0/0-4_0-4_1-2"]]);
    answerAll(t.requests[0]);
    await read;
  } finally {
    console.warn = warn;
    f.dispose();
  }
});

test("a prediction message whose chunks all went out of view is cancelled and its reads wait again", async () => {
  const t = new FakeTransport();
  const f = new ChunkFetcher(t);
  const inView = new Set(["predictions/0/0/0-4_0-4_1-2", "predictions/0/0/4-8_0-4_1-2", "predictions/0/0/0-4_0-4_7-8"]);
  f.setViewFilter(() => (key) => !inView.has(key));
  const plane1 = ["predictions/0/0/0-4_0-4_1-2", "predictions/0/0/4-8_0-4_1-2"].map((k) => f.fetch(k));
  const other = f.fetch("predictions/0/0/0-4_0-4_7-8");
  await flushed();
  assert.equal(t.requests.length, 1);
  const [sent] = t.requests;
  assert.deepEqual(sent.keys.length, 3);
  // scrolled on: plane 1 leaves the view, the chunk of plane 7 stays; one chunk in view keeps the message
  inView.delete("predictions/0/0/0-4_0-4_1-2");
  inView.delete("predictions/0/0/4-8_0-4_1-2");
  f.viewChanged();
  await flushed();
  assert.equal(sent.signal?.aborted, false);
  sent.answer(Object.fromEntries(sent.keys.map((k) => [k, chunk(k)])));
  assert.equal(text(await other), "predictions/0/0/0-4_0-4_7-8");
  await Promise.all(plane1);

  // a message of plane 2 alone, then plane 2 leaves the view
  inView.add("predictions/0/0/0-4_0-4_2-3");
  const plane2 = f.fetch("predictions/0/0/0-4_0-4_2-3");
  await flushed();
  const second = t.requests[1];
  assert.deepEqual(second.keys, ["predictions/0/0/0-4_0-4_2-3"]);
  inView.delete("predictions/0/0/0-4_0-4_2-3");
  f.viewChanged();
  await flushed();
  assert.equal(second.signal?.aborted, true, "the kernel is told to skip it");
  assert.equal(f.stats.preempted, 1);
  assert.equal(await settled(plane2), "pending", "the reader still waits, unanswered");
  assert.equal(f.isIdle(), true);
  assert.ok(!f.readSinceReload("predictions").has("predictions/0/0/0-4_0-4_2-3"), "never answered: not in the worker");
  // back on plane 2: sent again
  inView.add("predictions/0/0/0-4_0-4_2-3");
  f.viewChanged();
  await flushed();
  assert.deepEqual(t.requests[2].keys, ["predictions/0/0/0-4_0-4_2-3"]);
  answerAll(t.requests[2]);
  assert.equal(text(await plane2), "predictions/0/0/0-4_0-4_2-3");
  f.dispose();
});

/** Six prediction reads on a fetcher that sends one message of two keys at a time: the first message is under way. */
async function sixPredictionReadsTwoSent() {
  const t = new FakeTransport();
  const f = new ChunkFetcher(t, { maxInFlight: 1, maxPredictionKeysPerMessage: 2 });
  f.waitingCheckMs = 20;
  const keys = Array.from({ length: 6 }, (_, i) => `predictions/0/0/0-4_0-4_${i}-${i + 1}`);
  const reads = keys.map((k) => f.fetch(k));
  await flushed();
  assert.deepEqual(t.sentKeys, [keys.slice(0, 2)], "one message in flight, the others queued");
  return { t, f, keys, reads };
}

test("from the moment the user presses Stop, queued prediction reads wait, before the kernel has answered", async () => {
  const { t, f, keys, reads } = await sixPredictionReadsTwoSent();
  f.stopPredictions();
  answerAll(t.requests[0]); // the message under way was answered before the kernel heard of the Stop
  await flushed();
  await sleep(2 * f.waitingCheckMs);
  assert.equal(t.requests.length, 1, "no queued read leaves after the press (the kernel would compute it)");
  assert.deepEqual((await Promise.all(reads.slice(0, 2))).map(text), keys.slice(0, 2));
  f.viewChanged();
  for (let i = 1; i < 3; ++i) {
    await flushed();
    assert.equal(t.requests.length, i + 1);
    answerAll(t.requests[i]);
  }
  assert.deepEqual((await Promise.all(reads)).map(text), keys);
  f.dispose();
});

test("after the user's Stop, prediction reads wait unsent until the view changes or new data comes", async () => {
  const { t, f, keys, reads } = await sixPredictionReadsTwoSent();
  t.requests[0].fail(new RequestError("Stopped by the user: these chunks were not computed.", "error"));
  await flushed();
  assert.equal(t.requests.length, 1, "the queued reads do not start the work again");
  await sleep(2 * f.waitingCheckMs);
  assert.equal(t.requests.length, 1, "not when the fetcher looks at waiting reads again either");
  assert.deepEqual(await Promise.all(reads.map(settled)), Array(6).fill("pending"), "no read fails: none is lost");
  assert.equal(f.isIdle(), true);
  const image = f.fetch("raw/0/0-4_0-4_0-1");
  await flushed();
  assert.deepEqual(t.sentKeys[1], ["raw/0/0-4_0-4_0-1"], "image and labels are not held back");
  answerAll(t.requests[1]);
  await image;
  // the user moves the view: what is asked for goes again
  f.viewChanged();
  for (let i = 2; i < 5; ++i) {
    await flushed();
    assert.equal(t.requests.length, i + 1);
    answerAll(t.requests[i]);
  }
  assert.deepEqual((await Promise.all(reads)).map(text), keys);
  assert.deepEqual(t.sentKeys.slice(2).flat().sort(), keys, "each sent once more");
  // another error is an error
  const failed = f.fetch("predictions/0/0/0-4_0-4_9-10");
  await flushed();
  t.requests[5].fail(new RequestError("Could not read chunks: out of memory", "error"));
  await assert.rejects(failed, /out of memory/);
  // and after a Stop, a refresh's data lets the reads go too
  const again = f.fetch("predictions/0/0/0-4_0-4_8-9");
  await flushed();
  t.requests[6].fail(new RequestError("Stopped by the user: these chunks were not computed.", "error"));
  await flushed();
  assert.equal(t.requests.length, 7);
  f.receivePush(["labels"], push([], []));
  await flushed();
  assert.deepEqual(t.sentKeys[7], ["predictions/0/0/0-4_0-4_8-9"]);
  answerAll(t.requests[7]);
  assert.equal(text(await again), "predictions/0/0/0-4_0-4_8-9");
  f.dispose();
});
