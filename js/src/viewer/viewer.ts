// The Neuroglancer viewer of one widget: created inside the widget's element, fed by the kernel through the mem://
// kvstore, with the brush tool and the test hooks used by tests/e2e/widget_driver.py.
//
//   const handle = createViewer(el, { widgetId, transport, shape, layers, layerSettings, state, brush });
//
// `layers` are serving/layer_specs.py `layer_specs()`; `shape` is the spatial shape in array order ((y, x) or (z, y, x)).
// A 2D image opens in one xy panel fitted to the image, a volume in the four-panel layout. Mouse: in paint/erase mode
// left drag paints, right drag pans; the wheel zooms on 2D images (about 1.2x a notch) and steps through slices in
// volumes (ctrl+wheel zooms); navigate mode is plain Neuroglancer. Neuroglancer's global keyboard shortcuts are not
// installed (the widget's own panel/shortcuts.ts handles keys); nor are its internals shown (the dimension pop-up, the
// layout buttons of a 2D image): the cursor readout and the panel titles speak in the image's axes (overlays.ts).
// The raw layer's display (contrast, channel colours and visibility) follows `setDisplay` (raw_display.ts).
// Coordinates in this API are array index order, voxel units, the centre of voxel i at i. `refresh(layers, push)`
// shows new data without blanking (refresh.ts).
// The handle is also `window.__ilastikWidgets[widgetId]` (the newest view of the widget; all its views are in
// `window.__ilastikWidgetViews[widgetId]`).

import "neuroglancer/unstable/util/polyfills.js";
import "neuroglancer/unstable/layer/enabled_frontend_modules.js";
import "neuroglancer/unstable/datasource/enabled_frontend_modules.js";
import "neuroglancer/unstable/kvstore/enabled_frontend_modules.js";
import "../data/kvstore_frontend.js";
import { getDefaultPerspectivePanelBindings, getDefaultSliceViewPanelBindings } from "neuroglancer/unstable/ui/default_input_event_bindings.js";
import { makeMinimalViewer } from "neuroglancer/unstable/ui/minimal_viewer.js";
import { EventActionMap } from "neuroglancer/unstable/util/event_action_map.js";
import type { Viewer } from "neuroglancer/unstable/viewer.js";
import type { BrushSettings, Stroke, StrokeCallback } from "../brush/brush.js";
import { AxisMap, BrushTool, PanelGeometry, slicePanels } from "../brush/brush.js";
import type { ArrayName } from "../data/chunk_keys.js";
import type { ChunkPush, ChunkTransport } from "../data/kvstore_frontend.js";
import { ChunkFetcher, registerChunkFetcher } from "../data/kvstore_frontend.js";
import type { FallbackListener, LayerSettings, LayerSpec } from "./layers.js";
import { SourceFallbacks, applyLayerSetting, applyLayerSpecs, getLayerSettings, layerArrays } from "./layers.js";
import type { VoxelClick } from "./navigation.js";
import { Navigation } from "./navigation.js";
import { Overlays } from "./overlays.js";
import type { RawDisplay } from "./raw_display.js";
import { RawDisplayControl } from "./raw_display.js";
import type { RefreshStats } from "./refresh.js";
import { Refresher } from "./refresh.js";
import { viewRegion } from "./view_math.js";

export type { BrushSettings, Stroke, StrokeCallback } from "../brush/brush.js";
export type { LayerSettings, LayerSpec } from "./layers.js";
export type { VoxelClick } from "./navigation.js";
export type { RawDisplay } from "./raw_display.js";

/** View state in the image's terms (array index order), as the `viewer_state` traitlet holds it. */
export interface ViewerState {
  /** Centre of the view, array index order, voxel units (centre of voxel i = i). */
  position?: number[];
  /** Voxels per screen pixel in the cross-section panels. */
  crossSectionScale?: number;
  /** "xy", "xz", "yz", "4panel", "3d", "xy-3d", ... */
  layout?: string;
  projectionScale?: number;
  /** Quaternions [x, y, z, w]. */
  crossSectionOrientation?: number[];
  projectionOrientation?: number[];
  /**
   * The voxels the (first) cross-section panel shows, `[[start, stop], ...]` in array order, clipped to the image; on a
   * volume the plane it cuts, one voxel thick. Reported by the viewer; the kernel measures class shares there.
   */
  view_region?: [number, number][];
}

export interface CreateViewerOptions {
  widgetId: string;
  transport: ChunkTransport;
  /** Spatial shape in array index order. */
  shape: number[];
  /** Layer definitions from serving/layer_specs.py `layer_specs()`. */
  layers: LayerSpec[];
  /** Their zarr metadata, sent ahead by the kernel (serving/chunk_store.py `metadata()`). */
  metadata?: Record<string, string | null>;
  layerSettings?: LayerSettings;
  state?: ViewerState;
  brush?: Partial<BrushSettings>;
  /** Chunk requests in flight at once (default 4). */
  maxRequestsInFlight?: number;
  /** Called when a layer's own source (the raw image on a web server) failed to load and its fallback is shown. */
  onSourceFallback?: FallbackListener;
}

export interface ViewerHandle {
  readonly viewer: Viewer;
  readonly widgetId: string;
  readonly element: HTMLElement;
  /** Replace the layer definitions (e.g. after classes changed); unchanged layers keep their chunks. */
  setLayers(specs: LayerSpec[], metadata?: Record<string, string | null>): void;
  setLayerSettings(settings: LayerSettings): void;
  getLayerSettings(): LayerSettings;
  /**
   * New data of these layers (a refresh's `layers`); `push` carries chunks of it (`keys[i]` in `buffers[i]`) and the
   * keys that are now `missing`, used instead of asking the kernel.
   */
  refresh(layers: readonly string[], push?: ChunkPush): void;
  setBrush(settings: Partial<BrushSettings>): void;
  getBrush(): BrushSettings;
  onStroke(callback: StrokeCallback): () => void;
  getState(): ViewerState;
  setState(state: ViewerState): void;
  /** Called (at most once per animation frame) when position, zoom, orientation or layout change. */
  onStateChange(callback: (state: ViewerState) => void): () => void;
  /** Moves the view centre to `point` (array order, voxels). */
  moveTo(point: number[]): void;
  /** The raw layer's display: windows, and a composite's colours and visibility (the widget's display traits). */
  setDisplay(display: RawDisplay): void;
  /** Shows the whole image, centred (a volume keeps its slice along z). */
  fit(): void;
  /** The user pressed Stop: prediction reads not sent yet wait until the view changes or new predictions come. */
  stopPredictions(): void;
  /** Moves the panel under the pointer (else the first) `delta` slices along its normal (volumes). */
  stepSlice(delta: number): void;
  /** Calls `listener` for every click (press and release without a drag) on a cross-section panel. */
  onClick(listener: (click: VoxelClick) => void): () => void;
  dispose(): void;
  // Test hooks (tests/e2e/widget_driver.py). `plane` names the cross-section panel by its (nearest axis-aligned) plane: "xy"
  // (default), "xz" or "yz".
  voxelToScreen(point: number[], plane?: string): [number, number];
  screenToVoxel(clientX: number, clientY: number, plane?: string): number[];
  panelRect(plane?: string): DOMRect;
  isIdle(): boolean;
  /**
   * Chunk transport counters (messages, keys, bytes, dropped before sending, messages cancelled, pushed used), and
   * how refreshes were shown: arrays updated in place or reloaded, and why the last reload was needed.
   */
  stats(): ChunkFetcher["stats"] & RefreshStats;
}

declare global {
  interface Window {
    __ilastikWidgets?: Record<string, ViewerHandle>;
    /** Every open view of each widget, oldest first (a widget displayed twice has two). */
    __ilastikWidgetViews?: Record<string, ViewerHandle[]>;
  }
}

const AXES: Record<number, string[]> = { 2: ["y", "x"], 3: ["z", "y", "x"] };

/**
 * A layer spec with the user's visibility and opacity; a segmentation layer (the objects) has no opacity of its own:
 * the setting is its segments' alpha.
 */
function withSetting(spec: LayerSpec, setting: LayerSettings[string] | undefined): LayerSpec {
  if (setting === undefined) return spec;
  if (spec.type !== "segmentation") return { ...spec, ...setting };
  const { opacity, ...rest } = setting;
  return { ...spec, ...rest, ...(opacity === undefined ? {} : { selectedAlpha: opacity }) };
}

/** The opacity of a segmentation layer's segments (Neuroglancer's selectedAlpha); other layers are left alone. */
function applySegmentsOpacity(viewer: Viewer, name: string, opacity: number | undefined): void {
  const layer = viewer.layerManager.getLayerByName(name)?.layer as any;
  const alpha = layer?.displayState?.selectedAlpha;
  if (opacity === undefined || alpha === undefined) return;
  const value = Math.min(1, Math.max(0, opacity));
  if (alpha.value !== value) alpha.value = value;
}

function defaultLayout(ndim: number): string {
  return ndim === 2 ? "xy" : "4panel";
}

/** Cross-section zoom (voxels per pixel) that shows the whole in-plane extent in a panel of the given size. */
function fitScale(shape: number[], width: number, height: number, layout: string): number {
  const ndim = shape.length;
  const [h, w] = [shape[ndim - 2], shape[ndim - 1]];
  let pw = width > 50 ? width : 800;
  let ph = height > 50 ? height : 600;
  if (layout === "4panel" || layout === "4panel-alt") {
    pw /= 2;
    ph /= 2;
  }
  return Math.max(w / pw, h / ph) * 1.05;
}

export function createViewer(el: HTMLElement, opts: CreateViewerOptions): ViewerHandle {
  const { widgetId } = opts;
  const shape = opts.shape.map(Number);
  const ndim = shape.length;
  if (ndim !== 2 && ndim !== 3) throw new Error(`createViewer: expected a 2D or 3D shape, got ${JSON.stringify(shape)}`);
  const arrayAxes = AXES[ndim];

  const fetcher = new ChunkFetcher(opts.transport, { maxInFlight: opts.maxRequestsInFlight });
  fetcher.preloadMetadata(opts.metadata);

  const container = document.createElement("div");
  // ilastik-2d: no layout buttons (they would turn a 2D image into a 3D layout)
  container.className = `ilastik-viewer ilastik-${ndim}d`;
  Object.assign(container.style, { position: "relative", width: "100%", height: "100%", minHeight: "300px" });
  // Right-drag pans: no JupyterLab or browser context menu over the viewer.
  container.setAttribute("data-jp-suppress-context-menu", "true");
  const onContextMenu = (event: MouseEvent) => event.preventDefault();
  container.addEventListener("contextmenu", onContextMenu);
  el.appendChild(container);

  const viewer = makeMinimalViewer({
    target: container,
    showUIControls: true,
    showTopBar: false,
    showLayerPanel: false,
    showLayerSidePanelButton: false,
    showLayerHoverValues: false,
    showPanelBorders: true,
    showLayerDialog: false,
    resetStateWhenEmpty: false,
  } as any);
  // This view's reads go to this view's fetcher (a widget shown twice has two viewers, each with its own fetcher).
  const unregisterFetcher = registerChunkFetcher(widgetId, fetcher, viewer.dataContext.chunkManager);
  // A raw layer read straight from a web server the browser cannot reach falls back to the kernel's copy.
  const fallbacks = new SourceFallbacks(viewer, (layer, url, message) => {
    console.warn(`ilastik_widget: could not load the ${layer} layer from ${url} (${message}); the kernel serves it instead`);
    opts.onSourceFallback?.(layer, url, message);
  });
  // Mouse bindings of the data panels only: Neuroglancer's global keyboard shortcuts (digits, l, s, b, n, ...)
  // would clash with the widget's own (shortcuts.ts).
  viewer.inputEventBindings.sliceView.addParent(getDefaultSliceViewPanelBindings(), Number.NEGATIVE_INFINITY);
  viewer.inputEventBindings.perspectiveView.addParent(getDefaultPerspectivePanelBindings(), Number.NEGATIVE_INFINITY);
  if (ndim === 2) {
    // A 2D image has no slices to step through: the wheel zooms (at the pointer) instead.
    viewer.inputEventBindings.sliceView.addParent(
      EventActionMap.fromObject({ "at:wheel": { action: "zoom-via-wheel", preventDefault: true } }),
      1000,
    );
  }

  const axisMap = new AxisMap(viewer, arrayAxes);
  // The global dimensions this viewer declares, in this order. Positions are always mapped by dimension name
  // (AxisMap), never by this order: Neuroglancer may keep its coordinate space in another order.
  const globalNames = ndim === 2 ? ["x", "y"] : ["x", "y", "z"];
  const layout = opts.state?.layout ?? defaultLayout(ndim);
  const rect = container.getBoundingClientRect();
  const center = shape.map((s) => Math.floor(s / 2)); // a voxel centre, so 3D panels show whole voxels
  const validPosition = (p: number[] | undefined): p is number[] =>
    Array.isArray(p) && p.length === ndim && p.every((v) => Number.isFinite(v));
  const initialPosition = validPosition(opts.state?.position) ? opts.state!.position! : center;
  /** `point` (array order) as a position in `names` order (the global dimensions of the initial state JSON). */
  const byName = (point: number[], names: readonly string[]) =>
    names.map((name) => point[arrayAxes.indexOf(name)] + 0.5);

  // Global dimensions: one voxel per unit, except the relative voxel sizes of an anisotropic volume, which
  // serving/layer_specs.py puts in the raw layer's source transform.
  const rawSource = opts.layers.find((spec) => spec.name === "raw")?.source as
    | { transform?: { outputDimensions?: Record<string, [number, string]> } }
    | string
    | undefined;
  const rawDims = typeof rawSource === "object" ? rawSource?.transform?.outputDimensions : undefined;
  const dimensions = Object.fromEntries(
    globalNames.map((name) => {
      const d = rawDims?.[name];
      return [name, Array.isArray(d) && d[0] > 0 ? [d[0], d[1] ?? ""] : [1, ""]];
    }),
  );

  const stateJson: Record<string, unknown> = {
    dimensions,
    position: byName(initialPosition, globalNames),
    crossSectionScale: opts.state?.crossSectionScale ?? fitScale(shape, rect.width, rect.height, layout),
    projectionScale: opts.state?.projectionScale ?? Math.max(...shape) * 1.6,
    layout,
    layers: fallbacks.resolve(opts.layers).map((spec) => withSetting(spec, opts.layerSettings?.[spec.name])),
    showDefaultAnnotations: false,
    showAxisLines: ndim === 3,
    showScaleBar: false,
    showSlices: true,
    selectedLayer: { visible: false },
    // Scrolling through a volume, Neuroglancer fetches the planes ahead of the view (up to 2 s ahead at the scroll
    // speed): for the prediction layers each is a plane the kernel predicts, most never shown (scrolling 10 slices
    // made the kernel predict 29 planes).
    prefetch: ndim === 2,
    // Reads of prediction planes wait in the page while out of view or stopped (data/kvstore_frontend.ts), each
    // holding one of Neuroglancer's download slots (100 by default): an oblique view of a volume held them all, and
    // the image's chunks got none. The page's own lanes bound what goes to the kernel.
    ...(ndim === 3 ? { concurrentDownloads: 2000 } : {}),
  };
  if (opts.state?.crossSectionOrientation) stateJson.crossSectionOrientation = opts.state.crossSectionOrientation;
  if (opts.state?.projectionOrientation) stateJson.projectionOrientation = opts.state.projectionOrientation;
  viewer.state.restoreState(stateJson);

  const brush = new BrushTool(viewer, container, axisMap);
  const refresher = new Refresher(viewer, widgetId, fetcher);
  const { reloader } = refresher;
  /** The array each layer served by the kernel shows (its spec's source URL says). */
  let arrays = layerArrays(opts.layers);
  // A stroke drawn on the overlay stays until the labels layer shows it.
  let clearDrawnOnLoad = false;
  const unlistenLoaded = reloader.onLoaded(() => {
    if (!clearDrawnOnLoad) return;
    clearDrawnOnLoad = false;
    brush.clearDrawn();
  });
  if (opts.brush) brush.setSettings(opts.brush);

  /** The cross-section panel showing `plane` ("xy", "xz", "yz"); for "xy" any panel if none shows it. */
  const panelShowing = (plane = "xy"): PanelGeometry => {
    const panels = slicePanels(viewer).map((p) => new PanelGeometry(p));
    const { names } = viewer.coordinateSpace.value;
    const wanted = plane.split("").sort().join("");
    const found = panels.find((g) => g.valid && g.planeName(names) === wanted) ??
      (plane === "xy" ? (panels.find((g) => g.valid) ?? panels[0]) : undefined);
    if (found === undefined) throw new Error(`no cross-section panel shows the ${plane} plane`);
    return found;
  };

  // A position (array order) waiting for the layers to define the global dimensions and their bounds: it is then
  // applied by dimension name (Neuroglancer re-centres the view when the bounds first appear).
  let pendingPosition: number[] | undefined = initialPosition;
  const spaceReady = (): boolean => {
    const space = viewer.coordinateSpace.value;
    if (!space.valid) return false;
    const { lowerBounds, upperBounds } = space.bounds;
    return arrayAxes.every((name) => {
      const g = space.names.indexOf(name);
      return g >= 0 && Number.isFinite(lowerBounds[g]) && Number.isFinite(upperBounds[g]);
    });
  };
  const setPosition = (point: number[]) => {
    if (spaceReady() && viewer.position.value.length === viewer.coordinateSpace.value.rank) {
      pendingPosition = undefined;
      viewer.position.value = axisMap.toGlobal(point, viewer.position.value);
    } else {
      pendingPosition = point.slice();
    }
  };
  const applyPendingPosition = () => {
    if (pendingPosition !== undefined) setPosition(pendingPosition);
  };

  /** The voxels the first cross-section panel shows (see ViewerState.view_region). */
  const shownRegion = (): [number, number][] | undefined => {
    if (!axisMap.ready) return undefined;
    let geometry: PanelGeometry;
    try {
      geometry = panelShowing("xy");
    } catch {
      return undefined;
    }
    if (!geometry.valid) return undefined;
    const r = geometry.rect();
    const corners = [[r.left, r.top], [r.right, r.top], [r.left, r.bottom], [r.right, r.bottom]].map(([x, y]) =>
      axisMap.toArray(geometry.clientToGlobal(x, y)));
    const planeAxes = geometry.planeGlobalDims().map((d) => axisMap.arrayAxisOfGlobal(d));
    const offPlane = ndim === 3 ? [0, 1, 2].find((a) => !planeAxes.includes(a)) : undefined;
    const slice = offPlane === undefined ? undefined : axisMap.toArray(viewer.position.value)[offPlane];
    return viewRegion(corners, shape, offPlane, slice);
  };

  const getState = (): ViewerState => {
    const position = pendingPosition ?? (axisMap.ready ? axisMap.toArray(viewer.position.value) : []);
    const region = pendingPosition === undefined ? shownRegion() : undefined;
    return {
      ...(region === undefined ? {} : { view_region: region }),
      position: position.map((v) => Math.round(v * 1000) / 1000),
      crossSectionScale: viewer.crossSectionScale.value,
      projectionScale: viewer.projectionScale.value,
      layout: viewer.layout.toJSON() as string,
      crossSectionOrientation: Array.from(viewer.crossSectionOrientation.orientation),
      projectionOrientation: Array.from(viewer.projectionOrientation.orientation),
    };
  };

  const setState = (state: ViewerState) => {
    const json: Record<string, unknown> = {};
    if (state.crossSectionScale !== undefined) json.crossSectionScale = state.crossSectionScale;
    if (state.projectionScale !== undefined) json.projectionScale = state.projectionScale;
    if (state.crossSectionOrientation !== undefined) json.crossSectionOrientation = state.crossSectionOrientation;
    if (state.projectionOrientation !== undefined) json.projectionOrientation = state.projectionOrientation;
    // By dimension name: the global dimensions' order is Neuroglancer's, not necessarily (x, y, z).
    if (validPosition(state.position)) setPosition(state.position);
    if (json.crossSectionScale !== undefined) viewer.crossSectionScale.restoreState(json.crossSectionScale);
    if (json.projectionScale !== undefined) viewer.projectionScale.restoreState(json.projectionScale);
    if (json.crossSectionOrientation !== undefined) viewer.crossSectionOrientation.restoreState(json.crossSectionOrientation);
    if (json.projectionOrientation !== undefined) viewer.projectionOrientation.restoreState(json.projectionOrientation);
    if (state.layout !== undefined && state.layout !== viewer.layout.toJSON()) {
      viewer.layout.restoreState(state.layout);
    }
  };

  const stateListeners = new Set<(state: ViewerState) => void>();
  let stateChangeScheduled = false;
  const onViewChanged = () => {
    if (stateChangeScheduled || stateListeners.size === 0) return;
    stateChangeScheduled = true;
    requestAnimationFrame(() => {
      stateChangeScheduled = false;
      const state = getState();
      for (const listener of stateListeners) listener(state);
    });
  };
  const viewChanged = [
    viewer.position.changed,
    viewer.crossSectionScale.changed,
    viewer.projectionScale.changed,
    viewer.crossSectionOrientation.changed,
    viewer.projectionOrientation.changed,
    viewer.layout.changed,
  ];
  const disposers: Array<() => void> = [
    unlistenLoaded,
    viewer.coordinateSpace.changed.add(applyPendingPosition),
    ...viewChanged.map((signal) =>
      signal.add(() => {
        reloader.release(); // the user moves the view: show it now, even if a reload is still loading
        onViewChanged();
      }),
    ),
  ];
  applyPendingPosition();

  const navigation = new Navigation(viewer, container, axisMap, shape, setPosition);
  const overlays = new Overlays(viewer, container, axisMap, shape, arrayAxes);
  const rawDisplay = new RawDisplayControl(viewer);
  if (opts.state?.crossSectionScale === undefined) {
    // The first zoom was a guess made before the panel had its size: fit the image once the panels are laid out.
    const unlistenFit = viewer.display.updateFinished.add(() => {
      if (spaceReady() && navigation.fitZoom()) unlistenFit();
    });
    disposers.push(unlistenFit);
  }
  // the panel's "Fit" as a button on the viewer too
  const fitButton = document.createElement("button");
  fitButton.type = "button";
  fitButton.className = "ilastik-fit-button";
  fitButton.title = "Show the whole image, centred (f)";
  fitButton.textContent = "⤢";
  fitButton.setAttribute("data-testid", "fit-view-overlay");
  fitButton.addEventListener("click", () => navigation.fit());
  container.appendChild(fitButton);

  const handle: ViewerHandle = {
    viewer,
    widgetId,
    element: container,
    setLayers(specs, metadata) {
      fetcher.preloadMetadata(metadata);
      arrays = layerArrays(specs);
      applyLayerSpecs(viewer, fallbacks.resolve(specs), {});
    },
    setLayerSettings(settings) {
      for (const [name, setting] of Object.entries(settings ?? {})) {
        applyLayerSetting(viewer, name, setting);
        applySegmentsOpacity(viewer, name, setting.opacity);
      }
    },
    getLayerSettings() {
      return getLayerSettings(viewer);
    },
    refresh(layers, push = { keys: [], buffers: [], missing: [] }) {
      const changed = new Set<ArrayName>();
      for (const layer of layers) {
        const array = arrays.get(layer);
        if (array !== undefined) changed.add(array);
      }
      const loading = reloader.busy; // an earlier reload: the labels may be part of it
      const reloaded = refresher.apply(Array.from(changed), push);
      if (changed.has("labels")) {
        if (reloaded.includes("labels") || loading) {
          clearDrawnOnLoad = true;
        } else {
          // the labels are drawn in the next frame: the stroke's overlay can go then
          const off = viewer.display.updateFinished.add(() => {
            off();
            brush.clearDrawn();
          });
        }
      }
    },
    setBrush(settings) {
      brush.setSettings(settings);
    },
    getBrush() {
      return { ...brush.settings };
    },
    onStroke(callback) {
      return brush.onStroke(callback);
    },
    getState,
    setState,
    onStateChange(callback) {
      stateListeners.add(callback);
      return () => stateListeners.delete(callback);
    },
    moveTo(point) {
      setState({ position: point });
    },
    setDisplay(display) {
      rawDisplay.set(display);
    },
    fit() {
      navigation.fit();
    },
    stopPredictions() {
      fetcher.stopPredictions();
    },
    stepSlice(delta) {
      navigation.stepSlice(delta);
    },
    onClick(listener) {
      return navigation.onClick(listener);
    },
    dispose() {
      rawDisplay.dispose();
      overlays.dispose();
      navigation.dispose();
      fitButton.remove();
      refresher.dispose();
      fallbacks.dispose();
      fetcher.dispose();
      container.removeEventListener("contextmenu", onContextMenu);
      for (const d of disposers) d();
      stateListeners.clear();
      brush.dispose();
      unregisterFetcher();
      viewer.dispose();
      container.remove();
      const views = window.__ilastikWidgetViews?.[widgetId];
      if (views !== undefined) {
        const i = views.indexOf(handle);
        if (i >= 0) views.splice(i, 1);
        if (views.length === 0) delete window.__ilastikWidgetViews![widgetId];
      }
      if (window.__ilastikWidgets?.[widgetId] === handle) {
        // the widget's newest other view, if it is still shown elsewhere
        if (views !== undefined && views.length > 0) window.__ilastikWidgets[widgetId] = views[views.length - 1];
        else delete window.__ilastikWidgets[widgetId];
      }
    },
    voxelToScreen(point, plane) {
      const geometry = panelShowing(plane);
      const global = axisMap.toGlobal(point, viewer.position.value);
      return geometry.globalToClient(global);
    },
    screenToVoxel(clientX, clientY, plane) {
      const geometry = panelShowing(plane);
      return axisMap.toArray(geometry.clientToGlobal(clientX, clientY));
    },
    panelRect(plane) {
      return panelShowing(plane).rect();
    },
    isIdle() {
      return fetcher.isIdle() && viewer.isReady() && !brush.isDrawing && !reloader.busy;
    },
    stats() {
      return { ...fetcher.stats, ...refresher.stats };
    },
  };
  window.__ilastikWidgets ??= {};
  window.__ilastikWidgets[widgetId] = handle;
  window.__ilastikWidgetViews ??= {};
  (window.__ilastikWidgetViews[widgetId] ??= []).push(handle);
  return handle;
}

export type { Stroke as BrushStroke };
