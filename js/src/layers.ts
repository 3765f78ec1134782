// Layers of the viewer: the JSON layer specs made by ilastik_widget/chunk_server.py (`layer_specs()`), the user's
// visibility/opacity settings, and cache invalidation when the kernel says an array changed.

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

/**
 * Shows `specs` in the viewer. Layers whose name and source are unchanged are updated in place (shader, opacity,
 * visibility), so they keep their loaded chunks; otherwise the layer list is rebuilt.
 */
export function applyLayerSpecs(viewer: Viewer, specs: LayerSpec[], settings: LayerSettings = {}): void {
  const managed = viewer.layerManager.managedLayers;
  const sameLayout =
    managed.length === specs.length &&
    specs.every((spec, i) => {
      const layer = managed[i];
      if (layer.name !== spec.name) return false;
      const json = layer.layer?.toJSON?.() as { source?: unknown } | undefined;
      const current = json?.source;
      const currentUrl =
        typeof current === "string" ? current : ((current as { url?: string } | undefined)?.url ?? "");
      return currentUrl === sourceUrl(spec);
    });
  if (!sameLayout) {
    viewer.layerSpecification.restoreState(specs.map((spec) => withSettings(spec, settings)));
    return;
  }
  specs.forEach((spec, i) => {
    const layer = managed[i].layer as any;
    const merged = withSettings(spec, settings);
    if (merged.shader !== undefined && layer?.fragmentMain !== undefined && layer.fragmentMain.value !== merged.shader) {
      layer.fragmentMain.value = merged.shader;
    }
    applyLayerSetting(viewer, spec.name, { visible: merged.visible ?? true, opacity: merged.opacity });
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
 * Drops Neuroglancer's cached chunks of every chunk source reading below `mem://<widgetId>/<array>/`, so visible
 * chunks are fetched again (only those).
 */
export function invalidateArrays(viewer: Viewer, widgetId: string, arrays: string[]): number {
  const prefixes = arrays.map((array) => `mem://${widgetId}/${array}/`);
  const rpc = (viewer.chunkManager as any).rpc;
  const objects: Map<number, any> | undefined = rpc?.objects;
  let count = 0;
  if (objects === undefined) return count;
  for (const object of objects.values()) {
    const url: unknown = object?.parameters?.url;
    if (typeof url !== "string" || typeof object.invalidateCache !== "function") continue;
    if (prefixes.some((prefix) => url.startsWith(prefix))) {
      object.invalidateCache();
      count++;
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
