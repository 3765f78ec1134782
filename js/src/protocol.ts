// Generated from ilastik_widget/widget/protocol.py by `python -m ilastik_widget.widget.protocol_typescript`: do not edit.
// The browser <-> kernel messages and the constants the browser shares with the kernel.

/** Most label classes of a session. */
export const MAX_CLASSES = 64;
/** Most characters of a class name. */
export const MAX_NAME_LENGTH = 100;
/** Chunk keys in one chunks or seen request. */
export const MAX_KEYS = 1024;
/** Characters of one chunk key. */
export const MAX_KEY_LENGTH = 512;
/** Request ids in one cancel request. */
export const MAX_CANCEL_IDS = 4096;
/** Points in one stroke (longer strokes are thinned). */
export const MAX_STROKE_POINTS = 50000;
/** Smallest brush size (diameter in pixels). */
export const BRUSH_SIZE_MIN = 1;
/** Largest brush size (diameter in pixels); a stroke's radius is (size - 1) / 2. */
export const BRUSH_SIZE_MAX = 61;
/** What the mouse does: paint, erase, or pan and zoom. */
export const MODES = ["paint", "erase", "navigate"] as const;
/** The viewer's layers, in the order the panel lists them. */
export const LAYER_NAMES = ["raw", "labels", "probabilities", "segmentation", "uncertainty", "objects"] as const;
/** Visibility and opacity of each layer in a new widget. */
export const DEFAULT_LAYER_SETTINGS = {
  "raw": {
    "visible": true,
    "opacity": 1.0
  },
  "labels": {
    "visible": true,
    "opacity": 0.8
  },
  "probabilities": {
    "visible": true,
    "opacity": 0.5
  },
  "segmentation": {
    "visible": false,
    "opacity": 0.5
  },
  "uncertainty": {
    "visible": false,
    "opacity": 0.7
  },
  "objects": {
    "visible": true,
    "opacity": 0.5
  }
} as const;

export type Mode = (typeof MODES)[number];
export type LayerName = (typeof LAYER_NAMES)[number];

// ---- browser -> kernel
/** Zarr keys the viewer reads (one request per animation frame); the reply carries one buffer per found key. */
export interface ChunksRequest {
  type: "chunks";
  id: number;
  keys: string[];
}

/** Chunk keys the browser took from a refresh and still shows: the next push keeps them up to date. No reply. */
export interface SeenRequest {
  type: "seen";
  id: number;
  keys: string[];
}

/** Chunk requests the browser no longer needs (skipped if not started). No reply. */
export interface CancelRequest {
  type: "cancel";
  id: number;
  ids: number[];
}

/** A brush stroke painted (or erased) in the browser: points in array index order, radius in pixels of the panel's plane (``axes``, the two array axes of the plane; the panel's nearest axis-aligned plane). */
export interface StrokeRequest {
  type: "stroke";
  id: number;
  label: number;
  radius: number;
  points: number[][];
  erase?: boolean;
  axes?: [number, number];
}

/** Undo the last addition or removal of a stroke. */
export interface UndoRequest {
  type: "undo";
  id: number;
}

/** Redo the last undone action. */
export interface RedoRequest {
  type: "redo";
  id: number;
}

/** Remove the stroke ``stroke_id`` (undoable). */
export interface RemoveStrokeRequest {
  type: "remove-stroke";
  id: number;
  stroke_id: number;
}

/** Train on the current labels now (the panel's "Update now" while live update is off). */
export interface UpdateNowRequest {
  type: "update-now";
  id: number;
}

/** Stop the work under way (training, predictions being computed): the panel's Stop button. */
export interface StopRequest {
  type: "stop";
  id: number;
}

/** Add a class (the kernel names and colours it when ``name`` or ``color`` is missing). */
export interface AddClassRequest {
  type: "add-class";
  id: number;
  name?: string;
  color?: string;
}

/** Remove class ``label`` and its strokes; later classes are renumbered down. */
export interface RemoveClassRequest {
  type: "remove-class";
  id: number;
  label: number;
}

/** Rename class ``label``. */
export interface RenameClassRequest {
  type: "rename-class";
  id: number;
  label: number;
  name: string;
}

/** Change the colour (``"#rrggbb"``) of class ``label``. */
export interface RecolorClassRequest {
  type: "recolor-class";
  id: number;
  label: number;
  color: string;
}

/** The browser could not load ``layer`` from ``url`` (``message`` says why) and shows its fallback, the layer served by the kernel. No reply. */
export interface SourceFallbackRequest {
  type: "source-fallback";
  id: number;
  layer: string;
  url: string;
  message: string;
}

/** Find the objects of class ``label`` as ``IlastikWidget.objects`` does (sizes and sigma in voxels, ``region`` [[start, stop], ...] in array order); the reply comes when they are computed. */
export interface ObjectsRequest {
  type: "objects";
  id: number;
  label: number;
  threshold: number;
  low?: number;
  min_size?: number;
  max_size?: number;
  smooth?: number;
  split?: boolean;
  region?: [number, number][];
}

/** The table row of the last objects' object at ``position`` (array order, voxels) or numbered ``object``. */
export interface ObjectRowRequest {
  type: "object-row";
  id: number;
  position?: number[];
  object?: number;
}

/** Write the results for the image to ``path`` as ``IlastikWidget.export`` does; the reply comes when done. */
export interface ExportRequest {
  type: "export";
  id: number;
  path: string;
  outputs?: string[];
  format?: string;
  overwrite?: boolean;
}

export type Request = ChunksRequest | SeenRequest | CancelRequest | StrokeRequest | UndoRequest | RedoRequest | RemoveStrokeRequest | UpdateNowRequest | StopRequest | AddClassRequest | RemoveClassRequest | RenameClassRequest | RecolorClassRequest | SourceFallbackRequest | ObjectsRequest | ObjectRowRequest | ExportRequest;
/** The requests the kernel does not answer. */
export const NO_REPLY_TYPES = ["seen", "cancel", "source-fallback"] as const;
/** A request as the browser code writes it: the transport adds the id. */
export type RequestBody = Request extends infer R ? (R extends Request ? Omit<R, "id"> : never) : never;

// ---- kernel -> browser
/** ``found[i]`` says whether ``keys[i]`` of the request has data; the buffers hold the found ones, in order. */
export interface ChunksReply {
  type: "chunks-reply";
  id: number;
  found: boolean[];
}

/** The id of the stroke a ``stroke`` request added. */
export interface StrokeReply {
  type: "stroke-reply";
  id: number;
  stroke_id: number;
}

/** Reply to undo or redo: whether there was anything to undo or redo. */
export interface ChangedReply {
  type: "undo-reply" | "redo-reply";
  id: number;
  changed: boolean;
}

/** The label of the class an ``add-class`` request added. */
export interface AddClassReply {
  type: "add-class-reply";
  id: number;
  label: number;
}

/** ``count`` objects, served as version ``version`` of the objects array. */
export interface ObjectsReply {
  type: "objects-reply";
  id: number;
  count: number;
  version: number;
}

/** The object asked for (0 and ``row`` null when there is none) and its table row (column -> value). */
export interface ObjectRowReply {
  type: "object-row-reply";
  id: number;
  object: number;
  row: Record<string, number | string | boolean | null> | null;
}

/** The paths of the files and folders written. */
export interface ExportReply {
  type: "export-reply";
  id: number;
  written: string[];
}

/** The reply to a request without a result of its own (``type`` is ``"<request type>-reply"``). */
export interface Reply {
  type: "remove-stroke-reply" | "update-now-reply" | "stop-reply" | "remove-class-reply" | "rename-class-reply" | "recolor-class-reply";
  id: number;
}

/** A request failed (``id`` is null when the message had no valid id); ``message`` is in words. */
export interface ErrorReply {
  type: "error";
  id: number | null;
  message: string;
}

/** New data of ``layers``: ``keys[i]`` is the chunk in buffer i; the ``missing`` keys now have no data (their fill value). Together they cover every chunk of those layers the browser read or reported as seen since the last refresh, so the browser updates what it shows without asking. */
export interface Refresh {
  type: "refresh";
  layers: LayerName[];
  keys: string[];
  missing: string[];
}

export type KernelMessage = ChunksReply | StrokeReply | ChangedReply | AddClassReply | ObjectsReply | ObjectRowReply | ExportReply | Reply | ErrorReply | Refresh;
