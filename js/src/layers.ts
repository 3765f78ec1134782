// Layers of the viewer: the JSON layer specs made by ilastik_widget/chunk_server.py (`layer_specs()`), the user's
// visibility/opacity settings, and cache invalidation when the kernel says an array changed.

import type { ManagedUserLayer } from "neuroglancer/unstable/layer/index.js";
import { changeLayerName, makeLayer } from "neuroglancer/unstable/layer/index.js";
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

/** Removes the `~<tag>` a reload added to the widget id of a mem:// URL. */
export function untaggedUrl(url: string): string {
  return url.replace(/^(mem:\/\/[^/~]+)~[^/]*/, "$1");
}

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
    if (existing !== undefined && current !== undefined && untaggedUrl(current) === untaggedUrl(sourceUrl(spec))) {
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
    if (managed.name.endsWith("~next")) continue; // a reload's twin (LayerReloader)
    const layer = managed.layer as any;
    out[managed.name] = {
      visible: managed.visible,
      opacity: layer?.opacity?.value,
    };
  }
  return out;
}

let reloadCounter = 0;

function withTag(source: unknown, tag: string): unknown {
  const retag = (url: string) => untaggedUrl(url).replace(/^(mem:\/\/[^/]+)/, `$1~${tag}`);
  if (typeof source === "string") return retag(source);
  if (source !== null && typeof source === "object" && typeof (source as { url?: unknown }).url === "string") {
    return { ...(source as object), url: retag((source as { url: string }).url) };
  }
  return source;
}

interface PendingReload {
  next: ManagedUserLayer;
  opacity: number | undefined;
}

/**
 * Re-reads layers from the kernel without blanking them: each visible layer gets a twin with the same spec and a
 * fresh source URL (a new `~<tag>` on the mem:// host, so Neuroglancer's chunk cache is new), drawn with opacity 0
 * until the view has loaded it, then the twin takes the layer's place. Layers sharing a source (the three prediction
 * layers) share the twin's chunks. Hidden layers are swapped at once.
 */
export class LayerReloader {
  private pending = new Map<string, PendingReload>();
  private again = new Set<string>();
  private timer: number | undefined;
  private started = 0;
  /** Longest wait for the twins to load before swapping anyway (ms). */
  timeoutMs = 8000;

  constructor(private viewer: Viewer) {}

  get busy(): boolean {
    return this.pending.size > 0 || this.again.size > 0;
  }

  reload(names: string[]): void {
    const { layerManager, layerSpecification } = this.viewer;
    const tag = String(++reloadCounter);
    for (const name of names) {
      const old = layerManager.getLayerByName(name);
      if (old === undefined || old.layer === null) continue;
      if (this.pending.has(name)) {
        // A twin is still loading: reload again once it is in place (so steady refreshes still show progress).
        this.again.add(name);
        continue;
      }
      const spec = old.layer.toJSON() as Record<string, unknown>;
      spec.source = withTag(spec.source, tag);
      const opacity = (old.layer as any).opacity?.value as number | undefined;
      if (!old.visible) {
        spec.visible = false;
        const next = makeLayer(layerSpecification, `${name}~next`, spec);
        const index = layerManager.managedLayers.indexOf(old);
        layerManager.removeManagedLayer(old);
        layerSpecification.add(next, index);
        changeLayerName(next, name);
        continue;
      }
      spec.opacity = 0;
      const next = makeLayer(layerSpecification, `${name}~next`, spec);
      layerSpecification.add(next, layerManager.managedLayers.indexOf(old) + 1);
      this.pending.set(name, { next, opacity });
    }
    if (this.pending.size > 0) this.watch();
  }

  private watch() {
    if (this.timer !== undefined) return;
    this.started = performance.now();
    this.timer = window.setInterval(() => {
      const waited = performance.now() - this.started;
      if ((waited > 50 && this.viewer.isReady()) || waited > this.timeoutMs) this.finish();
    }, 30);
  }

  private finish() {
    if (this.timer !== undefined) clearInterval(this.timer);
    this.timer = undefined;
    const { layerManager } = this.viewer;
    for (const [name, { next, opacity }] of this.pending) {
      const old = layerManager.getLayerByName(name);
      const layer = next.layer as any;
      // the user may have changed the opacity while the twin loaded
      const current = (old?.layer as any)?.opacity?.value as number | undefined;
      if (layer?.opacity !== undefined) layer.opacity.value = current ?? opacity ?? 0.5;
      if (old !== undefined) {
        next.setVisible(old.visible);
        layerManager.removeManagedLayer(old);
      }
      changeLayerName(next, name);
    }
    this.pending.clear();
    if (this.again.size > 0) {
      const names = Array.from(this.again);
      this.again.clear();
      this.reload(names);
    }
  }

  /** Drops the twins still loading (the layers keep their current data). */
  cancel(): void {
    if (this.timer !== undefined) clearInterval(this.timer);
    this.timer = undefined;
    for (const { next } of this.pending.values()) {
      if (this.viewer.layerManager.managedLayers.includes(next)) this.viewer.layerManager.removeManagedLayer(next);
    }
    this.pending.clear();
    this.again.clear();
  }

  dispose(): void {
    if (this.timer !== undefined) clearInterval(this.timer);
    this.timer = undefined;
    this.pending.clear();
    this.again.clear();
  }
}
