// The one transport of the messages between a widget view and the kernel; the messages themselves are the types of
// protocol.ts, generated from ilastik_widget/widget/protocol.py.
//
// One `Transport` per widget view: it numbers requests, matches replies by their correlation id, times out requests
// the kernel never answers, and dispatches the kernel's own messages ("refresh", an "error" without a pending
// request) to handlers registered with `on(type, handler)`.

import type { KernelMessage, Reply, RequestBody } from "../protocol.js";
import type { Buffer } from "../data/kvstore_frontend.js";

export type { Buffer } from "../data/kvstore_frontend.js";

/** The subset of the anywidget model the transport uses. */
export interface MessageModel {
  send(content: any, callbacks?: any, buffers?: ArrayBuffer[] | ArrayBufferView[]): void;
  on(event: string, handler: (...args: any[]) => void): void;
  off(event?: string | null, handler?: ((...args: any[]) => void) | null): void;
}

/** The requests the kernel does not answer (protocol.ts: "No reply"). */
export type Notification = Extract<RequestBody, { type: "seen" | "cancel" | "source-fallback" }>;
/** The requests the kernel answers, with a reply or an error. */
export type Question = Exclude<RequestBody, Notification>;

/**
 * The kernel's reply to a request of type `T`: the kernel message of type `<T>-reply`, or a plain `Reply` when the
 * protocol names no reply of that type.
 */
export type ReplyTo<T extends Question["type"]> = [KernelMessageOf<`${T}-reply`>] extends [never]
  ? Reply
  : KernelMessageOf<`${T}-reply`>;

/** A kernel message of type `T` (a message type may be one of several literals, as "undo-reply" | "redo-reply"). */
export type KernelMessageOf<T extends string> = KernelMessage extends infer M
  ? M extends { type: infer U }
    ? T extends U
      ? M
      : never
    : never
  : never;

/** A message with the binary buffers that came with it. */
export interface Received<M> {
  content: M;
  buffers: Buffer[];
}

export interface RequestOptions {
  /** Milliseconds before the request fails with a timeout (default: the transport's). 0 = never. */
  timeout?: number;
  /** Aborting rejects the promise and tells the kernel to skip the request if it has not started it. */
  signal?: AbortSignal;
}

export class RequestError extends Error {
  constructor(
    message: string,
    public readonly kind: "error" | "timeout" | "aborted" | "closed",
  ) {
    super(message);
    this.name = "RequestError";
  }
}

interface Pending {
  resolve(reply: Received<any>): void;
  reject(error: unknown): void;
  timer: ReturnType<typeof setTimeout> | undefined;
}

type Handler = (content: any, buffers: Buffer[]) => void;

// Request ids are unique on the page: two views of the same widget receive each other's replies.
let nextRequestId = 1;

export class Transport {
  private pending = new Map<number, Pending>();
  private handlers = new Map<string, Set<Handler>>();
  private closed = false;
  private readonly listener: (content: any, buffers?: Buffer[]) => void;
  /** Counters for tests and benchmarks. */
  stats = { sent: 0, replies: 0, errors: 0, timeouts: 0 };

  constructor(
    private model: MessageModel,
    private defaultTimeout = 300_000,
  ) {
    this.listener = (content: any, buffers?: Buffer[]) => this.dispatch(content, buffers ?? []);
    model.on("msg:custom", this.listener);
  }

  /** Number of requests waiting for a reply. */
  get inFlight(): number {
    return this.pending.size;
  }

  /** Sends `body` with a fresh correlation id; resolves with the kernel's reply (rejects on an error reply). */
  request<B extends Question>(
    body: B,
    buffers?: ArrayBuffer[],
    options: RequestOptions = {},
  ): Promise<Received<ReplyTo<B["type"]>>> {
    if (this.closed) return Promise.reject(new RequestError("the widget was closed", "closed"));
    const id = nextRequestId++;
    const signal = options.signal;
    if (signal?.aborted) return Promise.reject(new RequestError("request aborted", "aborted"));
    return new Promise((resolve, reject) => {
      const timeout = options.timeout ?? this.defaultTimeout;
      const entry: Pending = {
        resolve,
        reject,
        timer:
          timeout > 0
            ? setTimeout(() => {
                if (this.pending.delete(id)) {
                  this.stats.timeouts++;
                  reject(new RequestError(`the kernel did not answer a '${body.type}' request within ${timeout / 1000} s`, "timeout"));
                }
              }, timeout)
            : undefined,
      };
      this.pending.set(id, entry);
      signal?.addEventListener(
        "abort",
        () => {
          if (this.settle(id)) {
            this.notify({ type: "cancel", ids: [id] });
            reject(new RequestError("request aborted", "aborted"));
          }
        },
        { once: true },
      );
      try {
        this.model.send({ ...body, id }, undefined, buffers);
      } catch (error) {
        // e.g. the comm is closed: nothing will answer, so do not count it as in flight until its timeout
        this.settle(id);
        reject(error);
        return;
      }
      this.stats.sent++;
    });
  }

  /** Sends a request the kernel does not answer (it still carries an id, as every request does). */
  notify(body: Notification): void {
    if (this.closed) return;
    this.model.send({ ...body, id: nextRequestId++ });
  }

  /** Registers a handler for kernel messages of `type`; returns a function that removes it. */
  on<T extends KernelMessage["type"]>(
    type: T,
    handler: (content: KernelMessageOf<T>, buffers: Buffer[]) => void,
  ): () => void {
    let set = this.handlers.get(type);
    if (set === undefined) {
      set = new Set();
      this.handlers.set(type, set);
    }
    set.add(handler);
    return () => set!.delete(handler);
  }

  private settle(id: number): Pending | undefined {
    const entry = this.pending.get(id);
    if (entry === undefined) return undefined;
    this.pending.delete(id);
    if (entry.timer !== undefined) clearTimeout(entry.timer);
    return entry;
  }

  /** The one dispatcher of kernel messages. */
  dispatch(content: any, buffers: Buffer[]): void {
    if (content === null || typeof content !== "object" || typeof content.type !== "string") return;
    const { type, id } = content;
    if (typeof id === "number" && (type.endsWith("-reply") || type === "error")) {
      const entry = this.settle(id);
      if (entry !== undefined) {
        if (type === "error") {
          this.stats.errors++;
          entry.reject(new RequestError(String(content.message ?? "the kernel reported an error"), "error"));
        } else {
          this.stats.replies++;
          entry.resolve({ content, buffers });
        }
        return;
      }
    }
    const handlers = this.handlers.get(type);
    if (handlers === undefined) return;
    for (const handler of Array.from(handlers)) {
      try {
        handler(content, buffers);
      } catch (error) {
        console.error(`ilastik_widget: handler for '${type}' failed`, error);
      }
    }
  }

  /** Rejects every pending request and stops listening. */
  dispose(): void {
    if (this.closed) return;
    this.closed = true;
    this.model.off("msg:custom", this.listener);
    for (const id of Array.from(this.pending.keys())) {
      this.settle(id)?.reject(new RequestError("the widget was closed", "closed"));
    }
    this.handlers.clear();
  }
}
