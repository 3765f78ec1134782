// The `mem://<widget-id>/<path>` kvstore, main-thread side: the browser end of ilastik_widget/serving/chunk_store.py
// (what it reads) and serving/working_set.py (what it tells the kernel it shows).
//
// Neuroglancer's zarr code reads `.zattrs`, `.zarray` and chunk keys through a kvstore. Reads made on the main thread
// (metadata) come here directly; reads made in the chunk worker (chunks) are proxied here by kvstore_worker.ts.
// Every read becomes one key of a `chunks` widget message: all keys asked for within one animation frame go out in
// one message, a bounded number of messages are in flight, and keys whose reader gave up (AbortSignal) before they
// were sent are dropped.

import "neuroglancer/unstable/kvstore/proxy.js";
import type { BaseKvStoreProvider } from "neuroglancer/unstable/kvstore/context.js";
import { frontendOnlyKvStoreProviderRegistry } from "neuroglancer/unstable/kvstore/frontend.js";
import type {
  ByteRangeRequest,
  DriverReadOptions,
  KvStore,
  ReadResponse,
  StatOptions,
  StatResponse,
} from "neuroglancer/unstable/kvstore/index.js";
import type { UrlWithParsedScheme } from "neuroglancer/unstable/kvstore/url.js";
import type { ChunksReply, ChunksRequest, SeenRequest } from "../protocol.js";
import { MAX_KEYS } from "../protocol.js";
import type { ArrayName } from "./chunk_keys.js";
import { BoxKey, ChunkKey, MetadataKey, parseKey } from "./chunk_keys.js";
import { MEM_SCHEME, memUrl, parseMemUrl } from "./mem_url.js";

/** A binary buffer of a widget message, as anywidget hands it over. */
export type Buffer = DataView | ArrayBuffer | Uint8Array;

/** What the fetcher needs from the widget's message transport (widget/transport.ts `Transport` has it). */
export interface ChunkTransport {
  request(
    body: Omit<ChunksRequest, "id">,
    buffers?: ArrayBuffer[],
    options?: { signal?: AbortSignal },
  ): Promise<{ content: ChunksReply; buffers: Buffer[] }>;
  notify(body: Omit<SeenRequest, "id">): void;
}

/**
 * The chunks a kernel refresh carries (mirrors serving/working_set.py `ChunkPush`): `keys[i]` holds `buffers[i]`,
 * the `missing` keys now have no data (their fill value).
 */
export interface ChunkPush {
  keys: readonly string[];
  buffers: readonly Buffer[];
  missing: readonly string[];
}

export interface ChunkFetcherOptions {
  /** Messages in flight at once. */
  maxInFlight?: number;
  /** Keys per message (each reply buffer is one key). */
  maxKeysPerMessage?: number;
  /** Keys per message for prediction chunks. */
  maxPredictionKeysPerMessage?: number;
}

interface Waiter {
  resolve(data: Uint8Array | undefined): void;
  reject(reason: unknown): void;
  /** Set once the waiter got its answer or gave up. */
  done?: boolean;
  /** The message carrying this waiter's key, once sent. */
  batch?: InFlightBatch;
}

interface InFlightBatch {
  /** Waiters still interested in the reply; at zero the request is cancelled. */
  live: number;
  controller: AbortController;
}

function toUint8Array(buffer: Buffer): Uint8Array {
  if (buffer instanceof Uint8Array) return buffer;
  if (buffer instanceof ArrayBuffer) return new Uint8Array(buffer);
  return new Uint8Array(buffer.buffer, buffer.byteOffset, buffer.byteLength);
}

/** Keys are sent in two lanes so that slow, computed chunks (predictions) never hold up image and label data. */
type Lane = "data" | "predictions";

/** The arrays a refresh changes (serving/working_set.py PUSHED_ARRAYS). */
export const PUSHED_ARRAYS: readonly ArrayName[] = ["labels", "predictions"];

function arrayOf(key: string): ArrayName | undefined {
  return parseKey(key)?.array;
}

function laneOf(key: string): Lane {
  return arrayOf(key) === "predictions" ? "predictions" : "data";
}

/**
 * Batches key reads of one widget into `chunks` messages.
 *
 * Chunks the kernel pushed with a refresh (`receivePush`) are answered here without a message; the keys answered that
 * way go back to the kernel in a `seen` message (`keepInWorkingSet`), so its next push covers what is on screen.
 */
export class ChunkFetcher {
  /** Chunks pushed with the last refresh of their array: bytes, or null for a chunk that is now missing. */
  private pushed = new Map<string, Uint8Array | null>();
  /**
   * Chunk keys of each array read since the array was last reloaded (`forgetReads`): they may sit in Neuroglancer's
   * worker, so an in-place update must cover them all. (The kernel's working set is another record: the chunks read
   * since its last push.)
   */
  private reads = new Map<ArrayName, Set<string>>();
  /** Keys in messages waiting for the kernel's reply, with how many messages carry each. */
  private sentKeys = new Map<string, number>();
  /** Keys for the next `seen` message. */
  private workingSet = new Set<string>();
  private workingSetTimer: ReturnType<typeof setTimeout> | undefined;
  private queued = new Map<string, Waiter[]>();
  private inFlight: Record<Lane, number> = { data: 0, predictions: 0 };
  private flushScheduled = false;
  /** How long reads are collected before a message goes out (ms). */
  batchDelayMs = 8;
  readonly maxInFlight: number;
  readonly maxKeysPerMessage: number;
  /**
   * Prediction chunks are computed on demand: fewer per message than image data so the first ones show sooner, but
   * enough that a whole view goes out in one round (each round waits for a busy main thread to take the replies).
   */
  readonly maxPredictionKeysPerMessage: number;
  /** Counters for tests and benchmarks. */
  stats = { messages: 0, keys: 0, bytes: 0, dropped: 0, cancelled: 0, pushed: 0 };

  constructor(
    private transport: ChunkTransport,
    options: ChunkFetcherOptions = {},
  ) {
    this.maxInFlight = options.maxInFlight ?? 4;
    this.maxKeysPerMessage = Math.min(MAX_KEYS, options.maxKeysPerMessage ?? 128);
    this.maxPredictionKeysPerMessage = Math.min(MAX_KEYS, options.maxPredictionKeysPerMessage ?? 12);
  }

  /**
   * New data of `arrays`: chunks pushed before are dropped (they are out of date), and the chunks of `push` answer
   * the next reads of their keys. Pushed keys are the keys the layers read (the current layout of the predictions).
   */
  receivePush(arrays: readonly ArrayName[], push: ChunkPush): void {
    for (const key of Array.from(this.pushed.keys())) {
      const array = arrayOf(key);
      if (array !== undefined && arrays.includes(array)) this.pushed.delete(key);
    }
    push.keys.forEach((key, i) => {
      const buffer = push.buffers[i];
      if (typeof key === "string" && buffer !== undefined) this.pushed.set(key, toUint8Array(buffer));
    });
    for (const key of push.missing) if (typeof key === "string" && !this.pushed.has(key)) this.pushed.set(key, null);
  }

  /** What the last refresh pushed for `key`: its bytes, null if the chunk is now missing, undefined if nothing. */
  pushedChunk(key: string): Uint8Array | null | undefined {
    return this.pushed.get(key);
  }

  /** Chunk keys of `array` read since `forgetReads(array)`. */
  readSinceReload(array: ArrayName): ReadonlySet<string> {
    return this.reads.get(array) ?? new Set();
  }

  /** The viewer dropped every chunk of `array` (a reload): what it reads from now on starts a new record. */
  forgetReads(array: ArrayName): void {
    this.reads.delete(array);
  }

  /** True while a read of a chunk of `array` waits to be sent or for the kernel's reply. */
  hasPendingReads(array: ArrayName): boolean {
    for (const key of this.queued.keys()) if (arrayOf(key) === array) return true;
    for (const key of this.sentKeys.keys()) if (arrayOf(key) === array) return true;
    return false;
  }

  /**
   * Tells the kernel (in the next `seen` message) that the page still shows these pushed chunks: they stay in its
   * working set, so its next push brings them up to date.
   */
  keepInWorkingSet(keys: Iterable<string>): void {
    for (const key of keys) this.workingSet.add(key);
    if (this.workingSetTimer !== undefined) return;
    // One message per burst of reads (a view update reads all its chunks back to back).
    this.workingSetTimer = setTimeout(() => {
      this.workingSetTimer = undefined;
      const keys = Array.from(this.workingSet);
      this.workingSet.clear();
      for (let i = 0; i < keys.length; i += MAX_KEYS) {
        this.transport.notify({ type: "seen", keys: keys.slice(i, i + MAX_KEYS) });
      }
    }, 50);
  }

  private noteRead(key: ChunkKey | BoxKey): void {
    if (!PUSHED_ARRAYS.includes(key.array)) return;
    let chunks = this.reads.get(key.array);
    if (chunks === undefined) this.reads.set(key.array, (chunks = new Set()));
    chunks.add(String(key));
  }

  /** Stops the pending `seen` message (the view is closing). */
  dispose(): void {
    if (this.workingSetTimer !== undefined) clearTimeout(this.workingSetTimer);
    this.workingSetTimer = undefined;
    this.pushed.clear();
  }

  /** True when no read is queued or waiting for the kernel. */
  isIdle(): boolean {
    return this.queued.size === 0 && this.inFlight.data === 0 && this.inFlight.predictions === 0;
  }

  /**
   * Metadata keys (.zattrs/.zarray/.zgroup) already read: a key's metadata never changes (the predictions' path
   * changes with their shape), so a reloaded layer needs no round trip before its chunks.
   */
  private metadata = new Map<string, Uint8Array | undefined>();

  /** Metadata keys the kernel sent ahead (`source_info.metadata`: text, or null for a missing key). */
  preloadMetadata(metadata: Record<string, string | null> | undefined): void {
    const encoder = new TextEncoder();
    for (const [key, text] of Object.entries(metadata ?? {})) {
      this.metadata.set(key, typeof text === "string" ? encoder.encode(text) : undefined);
    }
  }

  /** Bytes of `key`, or undefined if the kernel has no such key. */
  fetch(key: string, signal?: AbortSignal): Promise<Uint8Array | undefined> {
    const parsed = parseKey(key);
    if (parsed instanceof MetadataKey) {
      if (this.metadata.has(key)) return Promise.resolve(this.metadata.get(key));
      return this.fetchFromKernel(key, signal).then((data) => {
        this.metadata.set(key, data);
        return data;
      });
    }
    if (parsed instanceof ChunkKey || parsed instanceof BoxKey) this.noteRead(parsed);
    const pushed = this.pushed.get(key);
    if (pushed !== undefined) {
      this.stats.pushed++;
      this.keepInWorkingSet([key]);
      return Promise.resolve(pushed ?? undefined);
    }
    // a malformed key goes to the kernel too, which answers it as missing
    return this.fetchFromKernel(key, signal);
  }

  private fetchFromKernel(key: string, signal?: AbortSignal): Promise<Uint8Array | undefined> {
    return new Promise((resolve, reject) => {
      if (signal?.aborted) {
        reject(signal.reason);
        return;
      }
      const waiter: Waiter = { resolve, reject };
      let waiters = this.queued.get(key);
      if (waiters === undefined) {
        waiters = [];
        this.queued.set(key, waiters);
      }
      waiters.push(waiter);
      signal?.addEventListener(
        "abort",
        () => {
          if (waiter.done) return;
          waiter.done = true;
          reject(signal.reason);
          const { batch } = waiter;
          if (batch !== undefined) {
            // Already sent: cancel the whole message once nobody waits for any of its keys.
            if (--batch.live === 0) {
              batch.controller.abort();
              this.stats.cancelled++;
            }
            return;
          }
          const list = this.queued.get(key);
          if (list !== undefined) {
            const i = list.indexOf(waiter);
            if (i >= 0) list.splice(i, 1);
            if (list.length === 0) {
              this.queued.delete(key);
              this.stats.dropped++;
            }
          }
        },
        { once: true },
      );
      this.scheduleFlush();
    });
  }

  private scheduleFlush() {
    if (this.flushScheduled) return;
    this.flushScheduled = true;
    const run = () => {
      this.flushScheduled = false;
      this.flush();
    };
    // Collect the burst of reads Neuroglancer makes for one view update (its worker posts them back to back) into
    // one message. A short timer rather than the next animation frame: with a slow renderer a frame can take
    // tens of milliseconds, which would delay every request by that much.
    setTimeout(run, this.batchDelayMs);
  }

  private flush() {
    for (const lane of ["data", "predictions"] as const) {
      const limit = lane === "data" ? this.maxKeysPerMessage : this.maxPredictionKeysPerMessage;
      while (this.inFlight[lane] < this.maxInFlight) {
        const batch = new Map<string, Waiter[]>();
        for (const [key, waiters] of this.queued) {
          if (laneOf(key) !== lane) continue;
          batch.set(key, waiters);
          if (batch.size >= limit) break;
        }
        if (batch.size === 0) break;
        for (const key of batch.keys()) this.queued.delete(key);
        this.send(lane, batch);
      }
    }
  }

  private async send(lane: Lane, batch: Map<string, Waiter[]>) {
    const keys = Array.from(batch.keys());
    const inFlight: InFlightBatch = { live: 0, controller: new AbortController() };
    for (const waiters of batch.values()) {
      for (const waiter of waiters) {
        waiter.batch = inFlight;
        inFlight.live++;
      }
    }
    this.inFlight[lane]++;
    for (const key of keys) this.sentKeys.set(key, (this.sentKeys.get(key) ?? 0) + 1);
    this.stats.messages++;
    this.stats.keys += keys.length;
    const settle = (waiter: Waiter, fn: () => void) => {
      if (waiter.done) return;
      waiter.done = true;
      fn();
    };
    try {
      const reply = await this.transport.request({ type: "chunks", keys }, undefined, {
        signal: inFlight.controller.signal,
      });
      const found: boolean[] = reply.content?.found ?? [];
      const buffers = reply.buffers ?? [];
      let next = 0;
      keys.forEach((key, i) => {
        let data: Uint8Array | undefined;
        if (found[i]) {
          const buffer = buffers[next++];
          data = buffer === undefined ? undefined : toUint8Array(buffer);
          if (data !== undefined) this.stats.bytes += data.byteLength;
        }
        for (const waiter of batch.get(key)!) settle(waiter, () => waiter.resolve(data));
      });
    } catch (error) {
      for (const waiters of batch.values()) for (const waiter of waiters) settle(waiter, () => waiter.reject(error));
    } finally {
      for (const key of keys) {
        const n = (this.sentKeys.get(key) ?? 1) - 1;
        if (n > 0) this.sentKeys.set(key, n);
        else this.sentKeys.delete(key);
      }
      this.inFlight[lane]--;
      if (this.queued.size > 0) this.scheduleFlush();
    }
  }
}

/** One view's fetcher; `owner` is its viewer's chunk manager (one per Neuroglancer viewer). */
interface Registration {
  fetcher: ChunkFetcher;
  owner: unknown;
}

/**
 * Fetchers by widget id. The same widget can be shown in several views (`display(w)` twice), each with its own
 * viewer and fetcher: reads are routed to the fetcher of the viewer that makes them, so closing one view leaves the
 * others loading.
 */
const fetchers = new Map<string, Registration[]>();

/**
 * Makes `mem://<widgetId>/...` reads of the viewer whose chunk manager is `owner` go to `fetcher` (reads whose
 * viewer registered nothing go to the newest fetcher of the widget). Returns a function that unregisters it.
 */
export function registerChunkFetcher(widgetId: string, fetcher: ChunkFetcher, owner?: unknown): () => void {
  const registration: Registration = { fetcher, owner };
  let list = fetchers.get(widgetId);
  if (list === undefined) fetchers.set(widgetId, (list = []));
  list.push(registration);
  return () => {
    const current = fetchers.get(widgetId);
    if (current === undefined) return;
    const i = current.indexOf(registration);
    if (i >= 0) current.splice(i, 1);
    if (current.length === 0) fetchers.delete(widgetId);
  };
}

/** The fetcher for reads of `widgetId` made by the viewer with chunk manager `owner` (else the newest one). */
export function getChunkFetcher(widgetId: string, owner?: unknown): ChunkFetcher | undefined {
  const list = fetchers.get(widgetId);
  if (list === undefined || list.length === 0) return undefined;
  if (owner !== undefined) {
    for (const r of list) if (r.owner === owner) return r.fetcher;
  }
  return list[list.length - 1].fetcher;
}

/** Number of views registered for `widgetId` (tests). */
export function chunkFetcherCount(widgetId: string): number {
  return fetchers.get(widgetId)?.length ?? 0;
}

function sliceByteRange(data: Uint8Array, byteRange: ByteRangeRequest | undefined) {
  if (byteRange === undefined) return { data, offset: 0 };
  if ("suffixLength" in byteRange) {
    const offset = Math.max(0, data.byteLength - byteRange.suffixLength);
    return { data: data.subarray(offset), offset };
  }
  const offset = Math.min(byteRange.offset, data.byteLength);
  return { data: data.subarray(offset, offset + byteRange.length), offset };
}

export class MemKvStore implements KvStore {
  constructor(
    public widgetId: string,
    /** The chunk manager of the viewer this store belongs to (selects that view's fetcher). */
    public owner?: unknown,
  ) {}

  getUrl(key: string): string {
    return memUrl(this.widgetId, key);
  }

  get supportsOffsetReads() {
    return true;
  }

  get supportsSuffixReads() {
    return true;
  }

  async read(key: string, options: DriverReadOptions): Promise<ReadResponse | undefined> {
    const fetcher = getChunkFetcher(this.widgetId, this.owner);
    if (fetcher === undefined) throw new Error(`No ilastik widget ${JSON.stringify(this.widgetId)} on this page`);
    const full = await fetcher.fetch(key, options.signal);
    if (full === undefined) return undefined;
    const { data, offset } = sliceByteRange(full, options.byteRange);
    // Copy into a standalone ArrayBuffer: the reply buffer may be a view into a larger message.
    const copy = data.slice();
    return {
      response: new Response(copy),
      offset,
      length: copy.byteLength,
      totalSize: full.byteLength,
    };
  }

  async stat(key: string, options: StatOptions): Promise<StatResponse | undefined> {
    const response = await this.read(key, { signal: options.signal });
    if (response === undefined) return undefined;
    return { totalSize: response.totalSize };
  }

  async list(): Promise<{ entries: { key: string }[]; directories: string[] }> {
    return { entries: [], directories: [] };
  }
}

let registered = false;

/** Registers the mem:// scheme with Neuroglancer's main-thread kvstore registry (once per page). */
export function registerMemKvStore(): void {
  if (registered) return;
  registered = true;
  frontendOnlyKvStoreProviderRegistry.registerBaseKvStoreProvider(
    // One provider per viewer (Neuroglancer applies the factory to each viewer's kvstore context).
    (context: { chunkManager?: unknown }): BaseKvStoreProvider => ({
      scheme: MEM_SCHEME,
      description: "ilastik widget: data served by the Python kernel",
      hidden: true,
      getKvStore(url: UrlWithParsedScheme) {
        const { widgetId, path } = parseMemUrl(url.url);
        return { store: new MemKvStore(widgetId, context?.chunkManager), path };
      },
    }),
  );
}

registerMemKvStore();
