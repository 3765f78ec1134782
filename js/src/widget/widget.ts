// The anywidget entry point, the view of ilastik_widget/widget/widget.py `IlastikWidget`: lays out the viewer and the
// control panel, wires traits <-> viewer, strokes -> kernel, kernel refreshes -> viewer, keyboard shortcuts, and
// cleans everything up when the view is removed.

import "./style.css";
import { decimateStroke } from "../brush/geometry.js";
import { createHelpOverlay } from "../panel/help.js";
import type { PanelModel, StrokeSummary } from "../panel/panel.js";
import { Panel } from "../panel/panel.js";
import { installShortcuts, nextBrushSize } from "../panel/shortcuts.js";
import type { LayerName, Mode } from "../protocol.js";
import { BRUSH_SIZE_MIN } from "../protocol.js";
import type { LayerSettings, LayerSpec, ViewerHandle, ViewerState } from "../viewer/viewer.js";
import { createViewer } from "../viewer/viewer.js";
import type { Question } from "./transport.js";
import { RequestError, Transport } from "./transport.js";

interface AnyModel extends PanelModel {
  send(content: any, callbacks?: any, buffers?: ArrayBuffer[] | ArrayBufferView[]): void;
}

/**
 * Applies a view state. The position is converted to Neuroglancer's global coordinates by dimension name (array
 * order (z,) y, x with the centre of voxel i at i), whatever order the global dimensions have; the rest goes through
 * the handle.
 */
function applyState(handle: ViewerHandle, state: ViewerState, ndim: number): void {
  const { position, ...rest } = state;
  if (position !== undefined && position.length === ndim && position.every((v) => Number.isFinite(v))) {
    const axes = ndim === 2 ? ["y", "x"] : ["z", "y", "x"];
    const viewer = handle.viewer as any;
    const names: string[] = viewer.coordinateSpace?.value?.names ?? [];
    const indices = axes.map((name) => names.indexOf(name));
    if (indices.every((i) => i >= 0) && viewer.position?.value?.length === names.length) {
      const global = Float32Array.from(viewer.position.value as Float32Array);
      indices.forEach((g, a) => {
        global[g] = position[a] + 0.5;
      });
      viewer.position.value = global;
    } else if (viewer.coordinateSpace?.changed !== undefined) {
      // The layers have not defined the dimensions yet: apply the position once they have.
      const remove = viewer.coordinateSpace.changed.add(() => {
        const ready: string[] = viewer.coordinateSpace.value?.names ?? [];
        if (axes.every((name) => ready.includes(name))) {
          remove();
          applyState(handle, { position }, ndim);
        }
      });
    } else {
      handle.setState({ position });
    }
  }
  if (Object.keys(rest).length > 0) handle.setState(rest);
}

function sameJson(a: unknown, b: unknown): boolean {
  return JSON.stringify(a) === JSON.stringify(b);
}

function render({ model, el }: { model: AnyModel; el: HTMLElement }): () => void {
  const widgetId = String(model.get("widget_id") ?? "");
  const root = document.createElement("div");
  root.className = "ilastik-widget";
  root.setAttribute("data-widget-id", widgetId);
  const applyHeight = () => {
    const height = Number(model.get("height"));
    if (Number.isFinite(height) && height > 0) root.style.setProperty("--ilastik-height", `${height}px`);
  };
  applyHeight();
  const main = document.createElement("div");
  main.className = "ilastik-main";
  root.append(main);
  el.append(root);

  const transport = new Transport(model);
  const cleanups: Array<() => void> = [];
  const onModel = (events: string, fn: (...args: any[]) => void) => {
    for (const event of events.split(" ")) {
      model.on(event, fn);
      cleanups.push(() => model.off(event, fn));
    }
  };
  onModel("change:height", applyHeight);
  const setTrait = (name: string, value: unknown) => {
    model.set(name, value);
    model.save_changes();
  };
  // Errors of requests: the kernel reports them in the status line too; keep a console trace for debugging.
  const request = (body: Question) =>
    transport.request(body).catch((error: unknown) => {
      if (!(error instanceof RequestError && error.kind === "closed")) console.warn("ilastik_widget:", error);
      throw error;
    });

  // ------------------------------------------------------------------------------------------ help overlay
  let helpShown = false;
  const help = createHelpOverlay(() => toggleHelp(false));
  root.append(help);
  const toggleHelp = (show?: boolean) => {
    helpShown = show ?? !helpShown;
    help.style.display = helpShown ? "" : "none";
  };

  // ------------------------------------------------------------------------------------------ viewer
  let handle: ViewerHandle | undefined;
  const classColor = (label: number) => (model.get("classes") ?? [])[label - 1]?.color ?? "#ffffff";
  const brushSize = () => Number(model.get("brush_size") ?? BRUSH_SIZE_MIN);
  const brushSettings = () => {
    const label = Number(model.get("active_class") ?? 1);
    return { mode: model.get("mode") as Mode, size: brushSize(), label, color: classColor(label) };
  };

  const panel = new Panel(model, {
    request: (body) => {
      if (body.type === "stop") handle?.stopPredictions(); // before the kernel hears of it: no read leaves meanwhile
      return request(body);
    },
    goToStroke: (stroke: StrokeSummary) => {
      if (handle !== undefined) applyState(handle, { position: stroke.center }, stroke.center.length);
    },
    toggleHelp,
    fitView: () => handle?.fit(),
  });
  root.append(panel.element);
  cleanups.push(() => panel.dispose());

  const info = model.get("source_info") ?? {};
  const initialState: ViewerState | undefined =
    model.get("viewer_state") && Object.keys(model.get("viewer_state")).length > 0 ? model.get("viewer_state") : undefined;
  try {
    handle = createViewer(main, {
      widgetId,
      transport,
      shape: info.shape ?? [],
      layers: (info.layer_specs ?? []) as LayerSpec[],
      metadata: info.metadata,
      layerSettings: (model.get("layers") ?? {}) as LayerSettings,
      // the position is applied below, by dimension name
      state: initialState === undefined ? undefined : { ...initialState, position: undefined },
      brush: brushSettings(),
      // the kernel shows it in the status line and keeps it in `w.raw_fallback`
      onSourceFallback: (layer, url, message) => transport.notify({ type: "source-fallback", layer, url, message }),
    });

  } catch (error) {
    console.error("ilastik_widget: could not create the viewer", error);
    const message = document.createElement("div");
    message.className = "ilastik-viewer-error";
    message.textContent = `The image viewer could not start: ${error instanceof Error ? error.message : String(error)}. ` +
      "It needs WebGL 2 in the browser.";
    main.append(message);
  }

  if (handle !== undefined) {
    const h = handle;
    (h as any).root = root;
    (h as any).transport = transport;

    // traits -> viewer
    onModel("change:layers", () => h.setLayerSettings(model.get("layers") ?? {}));
    // the raw layer's display: a change made by the panel shows at once, before the kernel has heard of it
    const display = () => h.setDisplay({
      contrast: model.get("contrast_limits") ?? [],
      colors: model.get("channel_colors") ?? [],
      visible: model.get("channel_visible") ?? [],
    });
    display();
    onModel("change:contrast_limits change:channel_colors change:channel_visible", display);
    onModel("change:mode change:brush_size change:active_class change:classes", () => h.setBrush(brushSettings()));
    onModel("change:source_info", () => {
      const specs = model.get("source_info")?.layer_specs;
      if (Array.isArray(specs) && specs.length > 0) {
        h.setLayers(specs, model.get("source_info")?.metadata);
        h.setLayerSettings(model.get("layers") ?? {});
      }
    });
    const ndim = (info.shape ?? []).length;
    // A saved position is applied once the layers have defined the dimensions and their bounds (Neuroglancer
    // recentres the view when they appear); until then the viewer's own view changes are not reported.
    let pendingPosition: number[] | undefined = initialState?.position;
    if (pendingPosition !== undefined) {
      const started = performance.now();
      const timer = setInterval(() => {
        const viewer = h.viewer as any;
        const space = viewer.coordinateSpace?.value;
        const axes = ndim === 2 ? ["y", "x"] : ["z", "y", "x"];
        const dims = axes.map((name) => space?.names?.indexOf(name) ?? -1);
        const bounded = dims.every((g) => g >= 0 && Number.isFinite(space?.bounds?.lowerBounds?.[g]) &&
          Number.isFinite(space?.bounds?.upperBounds?.[g]));
        if ((bounded && h.viewer.isReady()) || performance.now() - started > 15_000) {
          clearInterval(timer);
          if (pendingPosition !== undefined) applyState(h, { position: pendingPosition }, ndim);
          pendingPosition = undefined;
        }
      }, 100);
      cleanups.push(() => clearInterval(timer));
    }
    let lastSentState: unknown = initialState;
    onModel("change:viewer_state", () => {
      const state = model.get("viewer_state");
      if (!state || sameJson(state, lastSentState)) return;
      lastSentState = state;
      if (pendingPosition !== undefined && state.position !== undefined) pendingPosition = state.position;
      applyState(h, state, ndim);
    });

    // viewer -> traits (view changes are already coalesced per animation frame; send at most ~4 per second)
    let stateTimer: ReturnType<typeof setTimeout> | undefined;
    cleanups.push(
      h.onStateChange((state) => {
        if (pendingPosition !== undefined) return;
        if (stateTimer !== undefined) clearTimeout(stateTimer);
        stateTimer = setTimeout(() => {
          stateTimer = undefined;
          if (sameJson(state, model.get("viewer_state"))) return;
          lastSentState = state;
          setTrait("viewer_state", state);
        }, 250);
      }),
    );
    cleanups.push(() => {
      if (stateTimer !== undefined) clearTimeout(stateTimer);
    });
    if (initialState === undefined) {
      // Tell the kernel where the view starts.
      requestAnimationFrame(() => {
        try {
          const state = h.getState();
          lastSentState = state;
          setTrait("viewer_state", state);
        } catch {
          // the viewer is not ready yet; its first change will report the state
        }
      });
    }

    // strokes -> kernel
    cleanups.push(
      h.onStroke((stroke) => {
        request({
          type: "stroke",
          label: stroke.label,
          erase: stroke.erase,
          radius: stroke.radius,
          axes: stroke.axes,
          points: decimateStroke(stroke.points),
        }).catch(() => h.refresh(["labels"])); // rejected: drop the stroke drawn in the browser
      }),
    );

    // a click on an object (navigate mode) shows its row in the panel
    cleanups.push(
      h.onClick(({ voxel }) => {
        if (model.get("mode") !== "navigate" || typeof model.get("objects_info")?.count !== "number") return;
        transport.request({ type: "object-row", position: voxel })
          .then(({ content }) => panel.showObjectRow(content.object, content.row))
          .catch(() => undefined);
      }),
    );

    // kernel -> viewer
    cleanups.push(transport.on("refresh", (content, buffers) => {
      if (!Array.isArray(content.layers)) return;
      // the buffers are the chunks of `keys`, one each: without that, the chunks are read again
      const keys = Array.isArray(content.keys) && content.keys.length === buffers.length ? content.keys : [];
      const missing = Array.isArray(content.missing) ? content.missing.filter((k) => typeof k === "string") : [];
      h.refresh(content.layers, { keys, buffers: keys.length > 0 ? buffers : [], missing });
    }));
  }
  cleanups.push(transport.on("error", (content) => console.warn("ilastik_widget (kernel):", content.message)));

  // ------------------------------------------------------------------------------------------ shortcuts
  const toggleLayer = (name: LayerName) => {
    const layers = model.get("layers") ?? {};
    const current = layers[name] ?? {};
    setTrait("layers", { ...layers, [name]: { ...current, visible: current.visible === false } });
  };
  cleanups.push(
    installShortcuts(root, {
      pickClass: (label) => {
        if (label <= (model.get("classes") ?? []).length) setTrait("active_class", label);
      },
      setMode: (mode) => setTrait("mode", mode),
      brushStep: (direction) => setTrait("brush_size", nextBrushSize(brushSize(), direction)),
      undo: () => void request({ type: "undo" }).catch(() => undefined),
      redo: () => void request({ type: "redo" }).catch(() => undefined),
      toggleLive: () => setTrait("live", !model.get("live")),
      toggleLayer,
      toggleHelp,
      helpVisible: () => helpShown,
      fitView: () => handle?.fit(),
      stepSlice: (delta) => handle?.stepSlice(delta),
    }),
  );

  return () => {
    for (const cleanup of cleanups.reverse()) {
      try {
        cleanup();
      } catch (error) {
        console.warn("ilastik_widget: cleanup failed", error);
      }
    }
    handle?.dispose();
    transport.dispose();
    root.remove();
  };
}

export default { render };
