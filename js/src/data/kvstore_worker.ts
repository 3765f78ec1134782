// The `mem://<widget-id>/<path>` kvstore, chunk-worker side (bundled into Neuroglancer's chunk worker by build.mjs).
//
// The worker has no access to the widget's messages, so every read is forwarded over Neuroglancer's RPC to the main
// thread (ProxyKvStore), where kvstore_frontend.ts batches it into a `chunks` message to the kernel.

// @ts-expect-error: neuroglancer ships no type declarations for kvstore/backend.js
import { backendOnlyKvStoreProviderRegistry } from "neuroglancer/unstable/kvstore/backend.js";
import { ProxyKvStore } from "neuroglancer/unstable/kvstore/proxy.js";
import type { SharedKvStoreContextBase } from "neuroglancer/unstable/kvstore/register.js";
import type { UrlWithParsedScheme } from "neuroglancer/unstable/kvstore/url.js";
import { MEM_SCHEME, memUrl, parseMemUrl } from "./mem_url.js";

class MemProxyKvStore extends ProxyKvStore {
  constructor(
    sharedKvStoreContext: SharedKvStoreContextBase,
    public widgetId: string,
  ) {
    super(sharedKvStoreContext);
  }

  getUrl(key: string): string {
    return memUrl(this.widgetId, key);
  }

  get supportsOffsetReads() {
    return true;
  }

  get supportsSuffixReads() {
    return true;
  }
}

(backendOnlyKvStoreProviderRegistry as {
  registerBaseKvStoreProvider(provider: (context: SharedKvStoreContextBase) => unknown): void;
}).registerBaseKvStoreProvider((context: SharedKvStoreContextBase) => ({
  scheme: MEM_SCHEME,
  description: "ilastik widget: data served by the Python kernel",
  hidden: true,
  getKvStore(url: UrlWithParsedScheme) {
    const { widgetId, path } = parseMemUrl(url.url);
    return { store: new MemProxyKvStore(context, widgetId), path };
  },
}));
