// The viewer's layers: the Neuroglancer layer JSON built by ilastik_widget/serving/layer_specs.py, the user's
// visibility and opacity settings, and the fallback of a raw layer read straight from a web server
// (serving/remote_raw.py).

import { makeLayer } from "neuroglancer/unstable/layer/index.js";
import type { Viewer } from "neuroglancer/unstable/viewer.js";
import type { ArrayName } from "../data/chunk_keys.js";
import { parseArrayPath } from "../data/chunk_keys.js";
import { memSource } from "../data/mem_url.js";

/** One Neuroglancer layer definition, as serving/layer_specs.py `layer_specs()` makes it. */
export interface LayerSpec {
  name: string;
  type: string;
  source: string | object;
  shader?: string;
  opacity?: number;
  visible?: boolean;
  /**
   * The layer to show instead if `source` fails to load. serving/remote_raw.py gives one to a raw layer read straight
   * from a web server: the same layer served by the kernel (the browser may not reach a URL the kernel reads).
   */
  fallback?: LayerSpec;
  [key: string]: unknown;
}

export interface LayerSetting {
  visible?: boolean;
  opacity?: number;
}

export type LayerSettings = Record<string, LayerSetting>;

/** The URL of a layer's data source. */
export function sourceUrl(spec: LayerSpec): string {
  const { source } = spec;
  if (typeof source === "string") return source;
  const url = (source as { url?: unknown }).url;
  return typeof url === "string" ? url : JSON.stringify(source);
}

/** The widget array each layer served by the kernel shows, by layer name (the prediction layers share one). */
export function layerArrays(specs: readonly LayerSpec[]): Map<string, ArrayName> {
  const out = new Map<string, ArrayName>();
  for (const spec of specs) {
    const mem = memSource(sourceUrl(spec));
    const array = mem === null ? null : parseArrayPath(mem.path);
    if (array !== null) out.set(spec.name, array.array);
  }
  return out;
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
