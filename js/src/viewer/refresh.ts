// How the viewer shows a kernel refresh (the browser end of ilastik_widget/widget/live.py's pushes): the pushed chunks
// are written into the viewer's chunks when they cover all it holds (data/chunk_update.ts), else the array's chunk
// sources are reloaded (`Reloader`), their reads answered from the pushed bytes. Either way nothing flashes empty.

import { getNormalizedChunkLayout } from "neuroglancer/unstable/sliceview/base.js";
import type { Viewer } from "neuroglancer/unstable/viewer.js";
import type { ArrayName } from "../data/chunk_keys.js";
import {
  PRECOMPUTED_SOURCE_TYPE,
  applyChunkUpdate,
  chunkKeyOf,
  heldOutOfView,
  planChunkUpdate,
  type UpdatableSource,
} from "../data/chunk_update.js";
import type { ChunkFetcher, ChunkPush } from "../data/chunk_fetcher.js";
import { memUrl, parseMemUrl } from "../data/mem_url.js";

/** How refreshes were shown: arrays updated in place or reloaded, and why the last reload was needed. */
export interface RefreshStats {
  updatedInPlace: number;
  reloaded: number;
  lastReloadReason: string;
}

/** Shows the refreshes of one viewer. */
export class Refresher {
  readonly reloader: Reloader;
  readonly stats: RefreshStats = { updatedInPlace: 0, reloaded: 0, lastReloadReason: "" };

  private readonly unlisten: Array<() => void>;

  constructor(
    private viewer: Viewer,
    private widgetId: string,
    private fetcher: ChunkFetcher,
  ) {
    this.reloader = new Reloader(viewer, memUrl(widgetId));
    // A volume's prediction planes are read only while in view (see `outOfView`); a view change may bring them back.
    fetcher.setViewFilter(() => this.outOfView());
    const viewChanged = () => fetcher.viewChanged();
    this.unlisten = [
      viewer.position.changed,
      viewer.crossSectionScale.changed,
      viewer.crossSectionOrientation.changed,
      viewer.layout.changed,
      viewer.layerManager.layersChanged,
    ].map((signal) => signal.add(viewChanged));
  }

  /**
   * A test of whether a prediction chunk of a volume is out of view: its read waits (data/kvstore_frontend.ts).
   * Neuroglancer keeps asking for the planes a scroll passed until it needs their download slots for others, and
   * each is a plane the kernel predicts. Only chunks of a level that is in view with other chunks count as out of
   * view, so a view this cannot see (a panel of another kind) is never held back.
   */
  outOfView(): (key: string) => boolean {
    const prefix = memUrl(this.widgetId, "predictions/");
    const inView = new Set<string>();
    const levels = new Set<string>();
    for (const [source, ngKeys] of chunksInView(this.viewer)) {
      const s = source as UpdatableSource;
      const url = s.parameters?.url;
      if (typeof url !== "string" || !url.startsWith(prefix) || s.RPC_TYPE_ID !== PRECOMPUTED_SOURCE_TYPE) continue;
      levels.add(levelPath(parseMemUrl(url).path));
      for (const ngKey of ngKeys) {
        const key = chunkKeyOf(s, ngKey);
        if (key !== null) inView.add(key);
      }
    }
    return (key) => levels.has(levelPath(key)) && !inView.has(key);
  }

  /** Shows the new data of `arrays` with the chunks of `push`; returns the arrays that had to be reloaded. */
  apply(arrays: readonly ArrayName[], push: ChunkPush): ArrayName[] {
    this.fetcher.receivePush(arrays, push);
    const reload = arrays.filter((array) => !this.updateInPlace(array));
    for (const array of reload) this.fetcher.forgetReads(array);
    // the same signal as chunks arriving from the worker: slice views render again, the display redraws
    if (reload.length < arrays.length) this.viewer.chunkQueueManager.visibleChunksChanged.dispatch();
    this.reloader.reload(reload);
    return reload;
  }

  private updateInPlace(array: ArrayName): boolean {
    const reason = this.inPlace(array);
    if (reason === undefined) {
      this.stats.updatedInPlace++;
      return true;
    }
    this.stats.reloaded++;
    this.stats.lastReloadReason = `${array}: ${reason}`;
    return false;
  }

  /** Puts the pushed chunks of `array` into the viewer's chunks; why it could not, or undefined once done. */
  private inPlace(array: ArrayName): string | undefined {
    const { fetcher, viewer } = this;
    if (fetcher.hasPendingReads(array)) return "reads are waiting for the kernel";
    const sources = chunkSourcesWithUrl(viewer, memUrl(this.widgetId, `${array}/`)) as unknown as UpdatableSource[];
    const plan = planChunkUpdate(sources, (key) => fetcher.pushedChunk(key));
    if (typeof plan === "string") return plan;
    for (const key of fetcher.readSinceReload(array)) {
      if (!plan.held.has(key)) return `${key} was read but is not held by the page`;
    }
    const tooMany = heldOutOfView(sources, chunksInView(viewer));
    if (tooMany !== undefined) return tooMany;
    try {
      applyChunkUpdate(plan);
    } catch (error) {
      // some chunks may have their new bytes, others not: the reload puts them all right
      console.warn("ilastik_widget: in-place chunk update failed", error);
      return `the update failed (${error instanceof Error ? error.message : String(error)})`;
    }
    fetcher.keepInWorkingSet(plan.held);
    return undefined;
  }

  dispose(): void {
    for (const unlisten of this.unlisten) unlisten();
    this.fetcher.setViewFilter(undefined);
    this.reloader.dispose();
  }
}

/** The path of a chunk's level (`predictions/3/0/` of `predictions/3/0/0-256_0-256_5-6`); a level's path as it is. */
function levelPath(path: string): string {
  return path.endsWith("/") ? path : path.slice(0, path.lastIndexOf("/") + 1);
}

/** What a refresh uses of a Neuroglancer chunk source (chunk_manager/frontend.js ships no types). */
interface ChunkSource {
  chunks: Map<string, unknown>;
  invalidateCache(): void;
  addRef(): unknown;
  dispose(): void;
  refCount: number;
  parameters?: { url?: unknown };
}

/**
 * The chunk sources (every scale) whose data URL starts with `prefix`, e.g. `mem://<widget>/predictions/`: the
 * viewer's chunk manager memoizes every source it made under a key, the zarr ones carry their URL in `parameters`.
 */
export function chunkSourcesWithUrl(viewer: Viewer, prefix: string): ChunkSource[] {
  const out: ChunkSource[] = [];
  for (const value of viewer.chunkManager.memoize.map.values()) {
    const source = value as unknown as Partial<ChunkSource>;
    const url = source.parameters?.url;
    if (typeof url === "string" && url.startsWith(prefix) && typeof source.invalidateCache === "function" &&
        source.chunks instanceof Map) {
      out.push(source as ChunkSource);
    }
  }
  return out;
}

/**
 * Keys of the chunks each chunk source has in view in some cross-section panel (or slice drawn in a 3D panel),
 * counted the way Neuroglancer's `SliceView.isReady` counts them (the chunks a draw uses).
 */
export function chunksInView(viewer: Viewer): Map<unknown, Set<string>> {
  const out = new Map<unknown, Set<string>>();
  // the cross-section panels' slice views, and those a 3D panel draws (in the four-panel layout the same ones)
  const sliceViews = new Set<any>();
  for (const panel of viewer.display.panels) {
    // a 3D panel's `sliceViews` is a WatchableMap of slice view -> shown unconditionally
    const p = panel as unknown as { sliceView?: unknown; sliceViews?: Iterable<[unknown, boolean]>; visible: boolean };
    if (!p.visible) continue;
    if (p.sliceView !== undefined) sliceViews.add(p.sliceView);
    if (typeof p.sliceViews?.[Symbol.iterator] === "function") for (const [sliceView] of p.sliceViews) sliceViews.add(sliceView);
  }
  for (const sliceView of sliceViews) {
    for (const { visibleSources } of sliceView.visibleLayers.values()) {
      for (const tsource of visibleSources) {
        const layout = getNormalizedChunkLayout(sliceView.projectionParameters.value, tsource.chunkLayout);
        let keys = out.get(tsource.source);
        if (keys === undefined) out.set(tsource.source, (keys = new Set()));
        sliceView.forEachVisibleChunk(tsource, layout, (key: string) => keys!.add(key));
      }
    }
  }
  return out;
}

/** A reload that never completes (chunks the worker dropped, a layer that never gets ready) stops counting as
 * loading after this long (ms). */
const GIVE_UP_MS = 20_000;

interface Reloading {
  started: number;
  /** Chunks the sources held when they were invalidated; the reload is done once none is left. */
  stale: Set<unknown>[];
  sources: ChunkSource[];
}

/**
 * Re-reads arrays from the kernel in place, without new layers: the chunk sources reading `<prefix><array>/` are
 * invalidated (Neuroglancer's worker drops their chunks and asks for the visible ones again), and the display keeps
 * showing its last frame until the new chunks are on the GPU, so a refreshed layer never flashes empty. Drawing
 * resumes at once when the view moves (`release()`), and after `maxHoldMs` at the latest.
 */
export class Reloader {
  private reloading: Reloading[] = [];
  private holding = false;
  private missedDraw = false;
  private timer: number | undefined;
  private holdStarted = 0;
  private readonly restoreDraw: () => void;
  private readonly drawNow: () => void;
  private readonly loadedListeners = new Set<() => void>();
  /** Longest time the display is held (ms). */
  maxHoldMs = 1500;

  constructor(
    private viewer: Viewer,
    private urlPrefix: string,
  ) {
    const display = viewer.display as unknown as { draw: () => void; scheduleRedraw: () => void };
    const draw = display.draw;
    display.draw = () => {
      if (this.holding) {
        this.missedDraw = true;
        return;
      }
      draw.call(display);
    };
    this.restoreDraw = () => {
      display.draw = draw;
    };
    this.drawNow = () => draw.call(display);
  }

  /** True while reloaded chunks are still loading. */
  get busy(): boolean {
    return this.reloading.length > 0;
  }

  /** Called once every reload started so far has loaded. */
  onLoaded(listener: () => void): () => void {
    this.loadedListeners.add(listener);
    return () => this.loadedListeners.delete(listener);
  }

  /** Re-reads `arrays`; `onLoaded` listeners run once they are shown. */
  reload(arrays: readonly ArrayName[]): void {
    for (const array of arrays) {
      const sources = chunkSourcesWithUrl(this.viewer, `${this.urlPrefix}${array}/`);
      if (sources.length === 0) continue;
      this.reloading.push({ started: performance.now(), sources, stale: sources.map((s) => new Set(s.chunks.values())) });
      // The worker answers an invalidation with a chunk update of the source even when it no longer uses the source
      // itself (a layer just hidden); the page must still know the source then, so hold a reference until a later
      // round trip to the worker has come back.
      for (const source of sources) {
        source.addRef();
        source.invalidateCache();
      }
      const release = () => sources.forEach((source) => source.dispose());
      this.viewer.chunkQueueManager.getStatistics().then(release, release);
    }
    if (this.reloading.length > 0 && !this.holding) {
      this.holding = true;
      this.holdStarted = performance.now();
    }
    this.watch();
  }

  /** Draw again now (the user moved the view); reloads still loading finish in the background. */
  release(): void {
    if (!this.holding) return;
    this.holding = false;
    if (this.missedDraw) {
      this.missedDraw = false;
      (this.viewer.display as unknown as { scheduleRedraw: () => void }).scheduleRedraw();
    }
  }

  private loaded(entry: Reloading): boolean {
    return entry.sources.every((source, i) => {
      const stale = entry.stale[i];
      // a source released meanwhile (its layer was hidden) keeps its chunk map as it was
      if (stale.size === 0 || source.refCount === 0) return true;
      for (const chunk of source.chunks.values()) if (stale.has(chunk)) return false;
      return true;
    });
  }

  private watch() {
    if (this.timer !== undefined) return;
    const check = () => {
      this.timer = undefined;
      const now = performance.now();
      const overdue = this.reloading.length > 0 && this.reloading.every((entry) => now - entry.started > GIVE_UP_MS);
      if (overdue || (this.reloading.every((entry) => this.loaded(entry)) && this.viewer.isReady())) {
        this.reloading = [];
        if (this.holding && this.missedDraw) {
          // this is an animation frame already: draw the refreshed view in it rather than in the next one
          this.holding = this.missedDraw = false;
          this.drawNow();
        }
        this.release();
        for (const listener of Array.from(this.loadedListeners)) listener();
        return;
      }
      if (this.holding && now - this.holdStarted > this.maxHoldMs) this.release();
      this.timer = requestAnimationFrame(check);
    };
    this.timer = requestAnimationFrame(check);
  }

  dispose(): void {
    if (this.timer !== undefined) cancelAnimationFrame(this.timer);
    this.timer = undefined;
    this.reloading = [];
    this.holding = false;
    this.restoreDraw();
    this.loadedListeners.clear();
  }
}
