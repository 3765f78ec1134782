// Layers of the viewer: the JSON layer specs made by ilastik_widget/chunk_server.py (`layer_specs()`), the user's
// visibility/opacity settings, and cache invalidation when the kernel says an array changed.

import { makeLayer } from "neuroglancer/unstable/layer/index.js";
import type { Viewer } from "neuroglancer/unstable/viewer.js";

/** One Neuroglancer layer definition, as chunk_server.layer_specs() makes it. */
export interface LayerSpec {
  name: string;
  type: string;
  source: string | object;
  shader?: string;
  opacity?: number;
  visible?: boolean;
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
    if (existing !== undefined && currentSourceUrl(existing) === sourceUrl(spec)) {
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

/**
 * Drops Neuroglancer's cached chunks of the current layers reading below `mem://<widgetId>/<array>/`, so visible
 * chunks are fetched again (only those). Sources of layers already replaced are left alone: Neuroglancer may still
 * be disposing of them.
 */
export function invalidateArrays(viewer: Viewer, widgetId: string, arrays: string[]): number {
  const arrayPrefixes = arrays.map((array) => `mem://${widgetId}/${array}/`);
  const prefixes = new Set<string>();
  for (const managed of viewer.layerManager.managedLayers) {
    const url = currentSourceUrl(managed);
    if (url === undefined) continue;
    const base = url.split("|")[0];
    if (arrayPrefixes.some((prefix) => base.startsWith(prefix))) prefixes.add(base);
  }
  const rpc = (viewer.chunkManager as any).rpc;
  const objects: Map<number, any> | undefined = rpc?.objects;
  let count = 0;
  if (objects === undefined || prefixes.size === 0) return count;
  for (const object of objects.values()) {
    const url: unknown = object?.parameters?.url;
    if (typeof url !== "string" || typeof object.invalidateCache !== "function") continue;
    if (typeof object.refCount === "number" && object.refCount <= 0) continue;
    for (const prefix of prefixes) {
      if (url.startsWith(prefix)) {
        object.invalidateCache();
        count++;
        break;
      }
    }
  }
  return count;
}

/** Array names (as in chunk keys) behind the widget's layer names. */
export function arraysForLayers(layers: string[]): string[] {
  const arrays = new Set<string>();
  for (const name of layers) {
    if (name === "probabilities" || name === "segmentation" || name === "uncertainty" || name === "predictions") {
      arrays.add("predictions");
    } else {
      arrays.add(name);
    }
  }
  return Array.from(arrays);
}
