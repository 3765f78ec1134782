// Reads of the `mem://<widget-id>/` kvstore batched into `chunks` widget messages (the browser end of
// ilastik_widget/widget/chunk_requests.py), the chunks a refresh pushed, and the `seen` reports of what the page
// still shows (serving/working_set.py).
//
// Every read becomes one key of a `chunks` message: all keys asked for within one animation frame go out in one
// message, a bounded number of messages are in flight, and keys whose reader gave up (AbortSignal) before they were
// sent are dropped. A prediction chunk out of view (`setViewFilter`) waits unsent until it is in view again:
// Neuroglancer gives up on a read only when it needs the slot for another, so without this a scroll through a volume
// had the kernel predict every plane passed. After the user's Stop, prediction reads wait until the view changes or
// new data comes (the kernel answers those under way with an error; the ones queued here would start the work again).

import type { ChunksReply, ChunksRequest, SeenRequest } from "../protocol.js";
import { MAX_KEYS } from "../protocol.js";
import type { ArrayName } from "./chunk_keys.js";
import { BoxKey, ChunkKey, MetadataKey, parseKey } from "./chunk_keys.js";

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

/**
 * Made once per batch of reads: a test of whether a chunk key is out of view now (its read can wait unsent). See
 * viewer/refresh.ts `Refresher.outOfView`.
 */
export type ViewFilter = () => (key: string) => boolean;

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
  lane: Lane;
  /** The message's keys and their waiters. */
  waiters: Map<string, Waiter[]>;
  /** Cancelled because its chunks went out of view: its waiters are queued again, its reply is ignored. */
  preempted?: boolean;
}

function toUint8Array(buffer: Buffer): Uint8Array {
  if (buffer instanceof Uint8Array) return buffer;
  if (buffer instanceof ArrayBuffer) return new Uint8Array(buffer);
  return new Uint8Array(buffer.buffer, buffer.byteOffset, buffer.byteLength);
}

/** The kernel's answer to the requests under way when the user pressed Stop (widget/chunk_requests.py STOPPED). */
const STOPPED_BY_USER = /^Stopped by the user/;

function stoppedByUser(error: unknown): boolean {
  return error instanceof Error && (error as { kind?: unknown }).kind === "error" && STOPPED_BY_USER.test(error.message);
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
  private viewFilter: ViewFilter | undefined;
  /** Prediction keys left unsent by the last flush because they were out of view. */
  private waiting = new Set<string>();
  /** Messages waiting for the kernel's reply. */
  private sending = new Set<InFlightBatch>();
  /**
   * The user stopped the predictions: prediction reads wait, unsent and unanswered, until the view changes or new
   * data comes (they are not failed: Neuroglancer would never ask for those chunks again).
   */
  private stopped = false;
  private waitingTimer: ReturnType<typeof setTimeout> | undefined;
  /** While reads wait out of view, they are looked at again this often (ms), besides every `viewChanged()`. */
  waitingCheckMs = 300;
  /** How long reads are collected before a message goes out (ms). */
  batchDelayMs = 8;
  readonly maxInFlight: number;
  readonly maxKeysPerMessage: number;
  /**
   * Prediction chunks are computed on demand: fewer per message than image data so the first ones show sooner, but
   * enough that a whole view goes out in one round (each round waits for a busy main thread to take the replies).
   */
  readonly maxPredictionKeysPerMessage: number;
  /**
   * Counters for tests and benchmarks (`waiting`: reads held back out of view at the last flush; `preempted`:
   * messages cancelled because all their chunks went out of view, their reads queued again).
   */
  stats = { messages: 0, keys: 0, bytes: 0, dropped: 0, cancelled: 0, pushed: 0, waiting: 0, preempted: 0 };

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
    this.stopped = false;
    if (this.waiting.size > 0) this.scheduleFlush(); // reads waiting may be answered by this push, or sent now
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

  /**
   * True while a read of a chunk of `array` waits to be sent or for the kernel's reply. A read waiting out of view
   * does not count: it is sent, and answered with the data of that time, only once its chunk is in view again.
   */
  hasPendingReads(array: ArrayName): boolean {
    for (const key of this.queued.keys()) if (arrayOf(key) === array && !this.waiting.has(key)) return true;
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

  /** A chunk read is answered from a push or sent to the kernel: from now on it may sit in the worker. */
  private noteRead(key: string): void {
    const parsed = parseKey(key);
    if (!(parsed instanceof ChunkKey || parsed instanceof BoxKey) || !PUSHED_ARRAYS.includes(parsed.array)) return;
    let chunks = this.reads.get(parsed.array);
    if (chunks === undefined) this.reads.set(parsed.array, (chunks = new Set()));
    chunks.add(key);
  }

  /**
   * Prediction chunks out of view, as `filter` says, are not sent until they are in view again; undefined sends
   * every read.
   */
  setViewFilter(filter: ViewFilter | undefined): void {
    this.viewFilter = filter;
    this.viewChanged();
  }

  /**
   * The user pressed Stop: prediction reads not sent yet wait from now on, as after the kernel's "Stopped by the
   * user" answer, so that none leaves between the press and that answer (the kernel would compute it).
   */
  stopPredictions(): void {
    this.stopped = true;
  }

  /** The view changed: reads waiting out of view may be in view now, prediction messages under way out of it. */
  viewChanged(): void {
    this.stopped = false;
    this.lookAgain();
  }

  /** Flushes again if reads wait or prediction messages are under way: the view test may say otherwise now. */
  private lookAgain(): void {
    if (this.waiting.size > 0 || this.inFlight.predictions > 0) this.scheduleFlush();
  }

  /** Stops the pending `seen` message (the view is closing). */
  dispose(): void {
    if (this.workingSetTimer !== undefined) clearTimeout(this.workingSetTimer);
    this.workingSetTimer = undefined;
    if (this.waitingTimer !== undefined) clearTimeout(this.waitingTimer);
    this.waitingTimer = undefined;
    this.viewFilter = undefined;
    this.pushed.clear();
  }

  /** True when no read is queued or waiting for the kernel (reads waiting out of view aside). */
  isIdle(): boolean {
    return this.queued.size === this.waiting.size && this.inFlight.data === 0 && this.inFlight.predictions === 0;
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
    const pushed = this.pushed.get(key);
    if (pushed !== undefined) {
      this.stats.pushed++;
      this.noteRead(key);
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
              this.waiting.delete(key);
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
    this.answerFromPushes();
    const outOfView = this.outOfViewTest();
    for (const lane of ["data", "predictions"] as const) {
      const limit = lane === "data" ? this.maxKeysPerMessage : this.maxPredictionKeysPerMessage;
      while (this.inFlight[lane] < this.maxInFlight) {
        const batch = new Map<string, Waiter[]>();
        for (const [key, waiters] of this.queued) {
          if (laneOf(key) !== lane || outOfView(key)) continue;
          batch.set(key, waiters);
          if (batch.size >= limit) break;
        }
        if (batch.size === 0) break;
        for (const key of batch.keys()) this.queued.delete(key);
        this.send(lane, batch);
      }
    }
    if (this.waiting.size > 0 && this.waitingTimer === undefined) {
      this.waitingTimer = setTimeout(() => {
        this.waitingTimer = undefined;
        this.lookAgain();
      }, this.waitingCheckMs);
    }
  }

  /**
   * The out-of-view test of this flush. Prediction messages whose chunks all went out of view are cancelled and
   * their reads queued again; the queued prediction reads out of view are marked as waiting.
   */
  private outOfViewTest(): (key: string) => boolean {
    this.waiting.clear();
    if (this.stopped) {
      for (const key of this.queued.keys()) if (laneOf(key) === "predictions") this.waiting.add(key);
      this.stats.waiting = this.waiting.size;
      return (key) => this.waiting.has(key);
    }
    if (this.viewFilter === undefined) return () => false;
    let filter: (key: string) => boolean;
    try {
      filter = this.viewFilter();
    } catch (error) {
      console.warn("ilastik_widget: the view filter failed; every read is sent", error);
      return () => false;
    }
    for (const batch of Array.from(this.sending)) {
      if (batch.lane === "predictions" && !batch.preempted && [...batch.waiters.keys()].every(filter)) {
        this.preempt(batch);
      }
    }
    for (const key of this.queued.keys()) {
      if (laneOf(key) === "predictions" && filter(key)) this.waiting.add(key);
    }
    this.stats.waiting = this.waiting.size;
    return (key) => this.waiting.has(key);
  }

  /** Cancels a message whose chunks went out of view; its readers wait in the queue again. */
  private preempt(batch: InFlightBatch): void {
    this.requeue(batch);
    batch.controller.abort();
    this.stats.preempted++;
  }

  /** The readers of a message wait in the queue again; its reply, if any, is ignored. */
  private requeue(batch: InFlightBatch): void {
    batch.preempted = true;
    for (const [key, waiters] of batch.waiters) {
      const live = waiters.filter((waiter) => !waiter.done);
      if (live.length === 0) continue;
      for (const waiter of live) waiter.batch = undefined;
      const queued = this.queued.get(key);
      if (queued === undefined) this.queued.set(key, live);
      else queued.push(...live);
      // never answered: not in the worker
      const parsed = parseKey(key);
      if (parsed instanceof ChunkKey || parsed instanceof BoxKey) this.reads.get(parsed.array)?.delete(key);
    }
  }

  /** Queued reads of chunks pushed since they were asked for are answered from the push. */
  private answerFromPushes(): void {
    for (const [key, waiters] of Array.from(this.queued)) {
      const pushed = this.pushed.get(key);
      if (pushed === undefined) continue;
      this.queued.delete(key);
      this.stats.pushed++;
      this.noteRead(key);
      this.keepInWorkingSet([key]);
      for (const waiter of waiters) {
        if (waiter.done) continue;
        waiter.done = true;
        waiter.resolve(pushed ?? undefined);
      }
    }
  }

  private async send(lane: Lane, batch: Map<string, Waiter[]>) {
    const keys = Array.from(batch.keys());
    const inFlight: InFlightBatch = { live: 0, controller: new AbortController(), lane, waiters: batch };
    this.sending.add(inFlight);
    for (const waiters of batch.values()) {
      for (const waiter of waiters) {
        waiter.batch = inFlight;
        inFlight.live++;
      }
    }
    this.inFlight[lane]++;
    for (const key of keys) {
      this.sentKeys.set(key, (this.sentKeys.get(key) ?? 0) + 1);
      this.noteRead(key);
    }
    this.stats.messages++;
    this.stats.keys += keys.length;
    const settle = (waiter: Waiter, fn: () => void) => {
      if (waiter.done || inFlight.preempted) return;
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
      if (lane === "predictions" && !inFlight.preempted && stoppedByUser(error)) {
        this.stopped = true;
        this.requeue(inFlight);
      }
      for (const waiters of batch.values()) for (const waiter of waiters) settle(waiter, () => waiter.reject(error));
    } finally {
      this.sending.delete(inFlight);
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
