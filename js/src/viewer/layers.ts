// Layers of the viewer: the JSON layer specs made by ilastik_widget/chunk_server.py (`layer_specs()`), the user's
// visibility/opacity settings, and cache invalidation when the kernel says an array changed.

import { makeLayer } from "neuroglancer/unstable/layer/index.js";
import { getNormalizedChunkLayout } from "neuroglancer/unstable/sliceview/base.js";
import type { Viewer } from "neuroglancer/unstable/viewer.js";

/** One Neuroglancer layer definition, as chunk_server.layer_specs() makes it. */
export interface LayerSpec {
  name: string;
  type: string;
  source: string | object;
  shader?: string;
  opacity?: number;
  visible?: boolean;
  /**
   * The layer to show instead if `source` fails to load. chunk_server gives one to a raw layer read straight from a
   * web server: the same layer served by the kernel (the browser may not reach a URL the kernel reads).
   */
  fallback?: LayerSpec;
  [key: string]: unknown;
}

export interface LayerSetting {
  visible?: boolean;
  opacity?: number;
}

export type LayerSettings = Record<string, LayerSetting>;

/** Layer names the widget knows, in the order of the panel's controls. */
export const LAYER_NAMES = ["raw", "labels", "probabilities", "segmentation", "uncertainty"] as const;

function sourceUrl(spec: LayerSpec): string {
  const { source } = spec;
  if (typeof source === "string") return source;
  const url = (source as { url?: unknown }).url;
  return typeof url === "string" ? url : JSON.stringify(source);
}

function withSettings(spec: LayerSpec, settings: LayerSettings): LayerSpec {
  const s = settings[spec.name];
  if (s === undefined) return spec;
  const out = { ...spec };
  if (s.visible !== undefined) out.visible = s.visible;
  if (s.opacity !== undefined) out.opacity = s.opacity;
  return out;
}

function currentSourceUrl(layer: any): string | undefined {
  const json = layer?.layer?.toJSON?.() as { source?: unknown } | undefined;
  const source = json?.source;
  if (typeof source === "string") return source;
  const url = (source as { url?: unknown } | undefined)?.url;
  return typeof url === "string" ? url : undefined;
}

/**
 * Shows `specs` in the viewer, in their order. A layer whose name and source are unchanged is updated in place
 * (shader, opacity, visibility) and keeps its loaded chunks; a layer whose source changed (e.g. the prediction
 * layers after the classes changed) is replaced on its own; layers not in `specs` are removed.
 */
export function applyLayerSpecs(viewer: Viewer, specs: LayerSpec[], settings: LayerSettings = {}): void {
  const { layerManager, layerSpecification } = viewer;
  if (layerManager.managedLayers.length === 0) {
    layerSpecification.restoreState(specs.map((spec) => withSettings(spec, settings)));
    return;
  }
  const wanted = new Set(specs.map((spec) => spec.name));
  for (const managed of [...layerManager.managedLayers]) {
    if (!wanted.has(managed.name)) layerManager.removeManagedLayer(managed);
  }
  specs.forEach((spec, index) => {
    const merged = withSettings(spec, settings);
    const existing = layerManager.getLayerByName(spec.name);
    const current = currentSourceUrl(existing);
    if (existing !== undefined && current !== undefined && current === sourceUrl(spec)) {
      const layer = existing.layer as any;
      if (merged.shader !== undefined && layer?.fragmentMain !== undefined && layer.fragmentMain.value !== merged.shader) {
        layer.fragmentMain.value = merged.shader;
      }
      applyLayerSetting(viewer, spec.name, { visible: merged.visible ?? true, opacity: merged.opacity });
      const at = layerManager.managedLayers.indexOf(existing);
      if (at !== index) layerManager.reorderManagedLayer(at, index);
      return;
    }
    if (existing !== undefined) layerManager.removeManagedLayer(existing);
    const managed = makeLayer(layerSpecification, spec.name, merged);
    layerSpecification.add(managed, index);
  });
}

/** Sets visibility and/or opacity of the named layer; unknown names are ignored. */
export function applyLayerSetting(viewer: Viewer, name: string, setting: LayerSetting): void {
  const managed = viewer.layerManager.getLayerByName(name);
  if (managed === undefined) return;
  if (setting.visible !== undefined && managed.visible !== setting.visible) {
    managed.setVisible(setting.visible);
  }
  const layer = managed.layer as any;
  if (setting.opacity !== undefined && layer?.opacity !== undefined) {
    const value = Math.min(1, Math.max(0, setting.opacity));
    if (layer.opacity.value !== value) layer.opacity.value = value;
  }
}

/** Current visibility/opacity of every layer. */
export function getLayerSettings(viewer: Viewer): LayerSettings {
  const out: LayerSettings = {};
  for (const managed of viewer.layerManager.managedLayers) {
    const layer = managed.layer as any;
    out[managed.name] = {
      visible: managed.visible,
      opacity: layer?.opacity?.value,
    };
  }
  return out;
}

/** Called when a layer switches to its fallback: layer name, the source URL that failed, Neuroglancer's error. */
export type FallbackListener = (layer: string, url: string, message: string) => void;

/**
 * Layer specs with a `fallback`: the viewer shows each with its own source until Neuroglancer fails to load it
 * (unreachable server, no CORS headers: the data source's `loadState` becomes `{error}`), then replaces the layer by
 * its fallback, and keeps using the fallback for that URL when the specs are given again.
 */
export class SourceFallbacks {
  /** Source URLs that failed to load. */
  private readonly failed = new Set<string>();
  /** Layers shown with their own source, by name. */
  private readonly watched = new Map<string, { own: LayerSpec; fallback: LayerSpec }>();
  private readonly unlisten: () => void;
  private scheduled = false;

  constructor(
    private viewer: Viewer,
    private listener: FallbackListener,
  ) {
    this.unlisten = viewer.layerManager.layersChanged.add(() => this.schedule());
  }

  /** The specs to give Neuroglancer: without their `fallback`, or the fallback where the source already failed. */
  resolve(specs: LayerSpec[]): LayerSpec[] {
    this.watched.clear();
    const out = specs.map((spec) => {
      const { fallback, ...own } = spec;
      if (fallback === undefined) return spec;
      if (this.failed.has(sourceUrl(own))) return fallback;
      this.watched.set(spec.name, { own, fallback });
      return own;
    });
    this.schedule();
    return out;
  }

  /** Checks the watched layers after the current signal dispatch (no layer is replaced inside one). */
  private schedule(): void {
    if (this.scheduled || this.watched.size === 0) return;
    this.scheduled = true;
    queueMicrotask(() => {
      this.scheduled = false;
      this.check();
    });
  }

  private check(): void {
    const { layerManager, layerSpecification } = this.viewer;
    for (const [name, { own, fallback }] of Array.from(this.watched)) {
      const managed = layerManager.getLayerByName(name);
      const url = sourceUrl(own);
      if (managed === undefined || currentSourceUrl(managed) !== url) continue;
      const error = managed.layer?.dataSources[0]?.loadState?.error;
      if (error === undefined) continue;
      this.watched.delete(name);
      this.failed.add(url);
      // the same place in the layer list, the user's visibility and opacity
      const index = layerManager.managedLayers.indexOf(managed);
      const opacity = (managed.layer as any)?.opacity?.value as number | undefined;
      layerManager.removeManagedLayer(managed);
      const spec = { ...fallback, visible: managed.visible, opacity: opacity ?? fallback.opacity };
      layerSpecification.add(makeLayer(layerSpecification, name, spec), index);
      this.listener(name, url, error instanceof Error ? error.message : String(error));
    }
  }

  dispose(): void {
    this.unlisten();
    this.watched.clear();
  }
}

/** What the refresher uses of a Neuroglancer chunk source (chunk_manager/frontend.js ships no types). */
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
 * Keys of the chunks each chunk source has in view in some cross-section panel, counted the way Neuroglancer's
 * `SliceView.isReady` counts them (the chunks a draw uses).
 */
export function chunksInView(viewer: Viewer): Map<unknown, Set<string>> {
  const out = new Map<unknown, Set<string>>();
  for (const panel of viewer.display.panels) {
    const sliceView = (panel as unknown as { sliceView?: any }).sliceView;
    if (sliceView === undefined || !(panel as unknown as { visible: boolean }).visible) continue;
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

/** A refresh that never completes (chunks the worker dropped, a layer that never gets ready) stops counting as
 * loading after this long (ms). */
const GIVE_UP_MS = 20_000;

interface Refreshing {
  started: number;
  /** Chunks the sources held when they were invalidated; the refresh is loaded once none is left. */
  stale: Set<unknown>[];
  sources: ChunkSource[];
}

/**
 * Re-reads arrays from the kernel in place, without new layers: the chunk sources reading `<prefix><array>/` are
 * invalidated (Neuroglancer's worker drops their chunks and asks for the visible ones again), and the display keeps
 * showing its last frame until the new chunks are on the GPU, so a refreshed layer never flashes empty. Drawing
 * resumes at once when the view moves (`release()`), and after `maxHoldMs` at the latest.
 */
export class LayerRefresher {
  private refreshing: Refreshing[] = [];
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

  /** True while refreshed chunks are still loading. */
  get busy(): boolean {
    return this.refreshing.length > 0;
  }

  /** Called once every refresh started so far has loaded. */
  onLoaded(listener: () => void): () => void {
    this.loadedListeners.add(listener);
    return () => this.loadedListeners.delete(listener);
  }

  /** Re-reads `arrays` ("labels", "predictions", ...); `onLoaded` listeners run once they are shown. */
  refresh(arrays: string[]): void {
    for (const array of arrays) {
      const sources = chunkSourcesWithUrl(this.viewer, `${this.urlPrefix}${array}/`);
      if (sources.length === 0) continue;
      this.refreshing.push({ started: performance.now(), sources, stale: sources.map((s) => new Set(s.chunks.values())) });
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
    if (this.refreshing.length > 0 && !this.holding) {
      this.holding = true;
      this.holdStarted = performance.now();
    }
    this.watch();
  }

  /** Draw again now (the user moved the view); refreshes still loading finish in the background. */
  release(): void {
    if (!this.holding) return;
    this.holding = false;
    if (this.missedDraw) {
      this.missedDraw = false;
      (this.viewer.display as unknown as { scheduleRedraw: () => void }).scheduleRedraw();
    }
  }

  private loaded(entry: Refreshing): boolean {
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
      const overdue = this.refreshing.length > 0 && this.refreshing.every((entry) => now - entry.started > GIVE_UP_MS);
      if (overdue || (this.refreshing.every((entry) => this.loaded(entry)) && this.viewer.isReady())) {
        this.refreshing = [];
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
    this.refreshing = [];
    this.holding = false;
    this.restoreDraw();
    this.loadedListeners.clear();
  }
}
