// The `mem://<widget-id>/<path>` kvstore, main-thread side: the browser end of ilastik_widget/serving/chunk_store.py
// (what it reads) and serving/working_set.py (what it tells the kernel it shows).
//
// Neuroglancer's zarr and precomputed code reads metadata and chunk keys through a kvstore. Reads made on the main
// thread (metadata) come here directly; reads made in the chunk worker (chunks) are proxied here by
// kvstore_worker.ts. Each view's reads go to its `ChunkFetcher` (chunk_fetcher.ts), which batches them into `chunks`
// messages to the kernel.

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
import type { ChunkFetcher } from "./chunk_fetcher.js";
import { MEM_SCHEME, memUrl, parseMemUrl } from "./mem_url.js";

export type { Buffer, ChunkFetcherOptions, ChunkPush, ChunkTransport, ViewFilter } from "./chunk_fetcher.js";
export { ChunkFetcher, PUSHED_ARRAYS } from "./chunk_fetcher.js";

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
