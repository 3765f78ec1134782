// The `mem://<widget-id>/<path>` URLs of the data the kernel serves (ilastik_widget/serving/layer_specs.py writes them
// into the layer specs). Shared by the page's kvstore and the chunk worker's, so nothing here touches the DOM.

export const MEM_SCHEME = "mem";

export interface MemUrl {
  widgetId: string;
  /** The path below the widget's root, e.g. `predictions/2/0/` (a chunk source) or a zarr key. */
  path: string;
}

/** `mem://<widget-id>/<path>` for a widget id and a path below its root. */
export function memUrl(widgetId: string, path = ""): string {
  return `${MEM_SCHEME}://${encodeURIComponent(widgetId)}/${path}`;
}

/** The widget id and path of a `mem://` URL; throws for anything else. */
export function parseMemUrl(url: string): MemUrl {
  const m = /^mem:\/\/([^/]+)\/?(.*)$/.exec(url);
  if (m === null) throw new Error(`Invalid mem:// URL: ${JSON.stringify(url)}`);
  return { widgetId: decodeURIComponent(m[1]), path: m[2] };
}

/**
 * The `mem://` URL of a Neuroglancer data source URL (`mem://<id>/labels/|zarr2:`, the pipeline after `|` dropped),
 * or null for a source the kernel does not serve (a raw image read from its own web server).
 */
export function memSource(url: string): MemUrl | null {
  const base = url.split("|", 1)[0];
  if (!base.startsWith(`${MEM_SCHEME}://`)) return null;
  try {
    return parseMemUrl(base);
  } catch {
    return null;
  }
}
