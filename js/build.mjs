// Builds the widget's front end into ilastik_widget/static/ (widget.js + widget.css).
//
// anywidget imports the widget's ESM from a blob: URL, so nothing in the bundle may load a sibling file through
// `new URL("./x", import.meta.url)`. Neuroglancer does exactly that for its two web workers and its WASM decoders, so
// the build runs in passes:
//   1. the async-computation worker is bundled to a string,
//   2. the chunk worker (plus our mem:// kvstore, src/data/kvstore_worker.ts) is bundled to a string, with the first
//      string inlined,
//   3. the main module (src/widget/widget.ts) is bundled with both strings inlined.
// In every pass an onLoad plugin rewrites `new URL("<file>", import.meta.url)` inside Neuroglancer's files: workers
// become Blob URLs created at run time from the inlined strings, .wasm files become data: URLs.
//
// Every pass records the files it bundled (esbuild's metafile); the build then writes THIRD_PARTY_LICENSES.txt beside
// widget.js with the licence and notice texts of each npm package those files come from (licenses.mjs).
//
// Usage: node build.mjs [--dev] [--entry src/other.ts] [--outdir ../ilastik_widget/static] [--metafiles FILE]
// (--metafiles writes the passes' metafiles as one JSON list, e.g. for esbuild's bundle analyzer or a test)

import * as esbuild from "esbuild";
import fs from "node:fs";
import path from "node:path";
import { fileURLToPath } from "node:url";
import { conditions } from "./conditions.mjs";
import { bundledPackages, writeThirdPartyLicenses } from "./licenses.mjs";

const here = path.dirname(fileURLToPath(import.meta.url));
const args = process.argv.slice(2);
const argValue = (name, fallback) => {
  const i = args.indexOf(name);
  return i >= 0 && i + 1 < args.length ? args[i + 1] : fallback;
};
const dev = args.includes("--dev");
const entry = path.resolve(here, argValue("--entry", "src/widget/widget.ts"));
const outdir = path.resolve(here, argValue("--outdir", "../ilastik_widget/static"));

const neuroglancerLib = path.join(here, "node_modules", "neuroglancer", "lib");
const iconDir = path.join(here, "icons");


/** Worker sources built in earlier passes, by worker name ("async_computation", "chunk_worker"). */
const workerSources = new Map();

/** WASM decoders left out of the bundle: JPEG-XL (1.7 MB) is not used by zarr data. */
const EXCLUDED_WASM = new Set(["jxl_decoder.wasm"]);

const NEW_URL_RE =
  /new URL\(\s*(?:\/\*[\s\S]*?\*\/\s*)?(["'])([^"']+)\1\s*,\s*import\.meta\.url\s*\)/g;

/** Rewrites `new URL("./x", import.meta.url)` in Neuroglancer's files; resolves `?raw` SVG icon imports. */
const inlineAssetsPlugin = {
  name: "ilastik-inline-assets",
  setup(build) {
    build.onLoad({ filter: /\.js$/ }, async (loadArgs) => {
      if (!loadArgs.path.startsWith(neuroglancerLib)) return undefined;
      const source = await fs.promises.readFile(loadArgs.path, "utf8");
      if (!source.includes("import.meta.url")) return undefined;
      const imports = [];
      const rewritten = source.replace(NEW_URL_RE, (_match, _quote, relative) => {
        const target = path.resolve(path.dirname(loadArgs.path), relative);
        const name = `__ilastikAsset${imports.length}`;
        if (target.endsWith(".bundle.js")) {
          imports.push(`import ${name} from "ilastik-worker:${path.basename(target, ".bundle.js")}";`);
        } else if (EXCLUDED_WASM.has(path.basename(target))) {
          // Left out to keep the bundle small: decoding such chunks fails with a WebAssembly error.
          return `new URL("data:application/wasm;base64,")`;
        } else if (target.endsWith(".wasm")) {
          imports.push(`import ${name} from ${JSON.stringify(target)};`);
        } else {
          // OAuth redirect pages of data sources we do not enable.
          return `new URL("about:blank")`;
        }
        return `new URL(${name})`;
      });
      return { contents: imports.join("\n") + "\n" + rewritten, loader: "js" };
    });

    build.onResolve({ filter: /^ilastik-worker:/ }, (resolveArgs) => ({
      path: resolveArgs.path.slice("ilastik-worker:".length),
      namespace: "ilastik-worker",
    }));
    build.onLoad({ filter: /.*/, namespace: "ilastik-worker" }, (loadArgs) => {
      const source = workerSources.get(loadArgs.path);
      if (source === undefined) {
        throw new Error(`worker ${loadArgs.path} is needed before it was built`);
      }
      return {
        contents:
          `const source = ${JSON.stringify(source)};\n` +
          `export default URL.createObjectURL(new Blob([source], { type: "text/javascript" }));\n`,
        loader: "js",
      };
    });

    // Neuroglancer imports its icons as `ikonate/icons/<name>.svg?raw`; three it uses are missing from the
    // registry's ikonate 1.1.1, for which js/icons/ has our own.
    build.onResolve({ filter: /\.svg\?raw$/ }, (resolveArgs) => {
      const request = resolveArgs.path.slice(0, -"?raw".length);
      const local = path.join(iconDir, path.basename(request));
      if (fs.existsSync(local)) return { path: local, namespace: "ilastik-raw" };
      const resolved = path.join(here, "node_modules", request);
      if (!fs.existsSync(resolved)) throw new Error(`icon not found: ${request}`);
      return { path: resolved, namespace: "ilastik-raw" };
    });
    build.onLoad({ filter: /.*/, namespace: "ilastik-raw" }, async (loadArgs) => ({
      contents: await fs.promises.readFile(loadArgs.path, "utf8"),
      loader: "text",
    }));
  },
};

const common = {
  bundle: true,
  format: "esm",
  platform: "browser",
  target: "es2022",
  conditions,
  minify: !dev,
  legalComments: dev ? "inline" : "eof",
  logLevel: "warning",
  loader: { ".wasm": "dataurl", ".svg": "text", ".css": "css" },
  plugins: [inlineAssetsPlugin],
  define: { "process.env.NODE_ENV": dev ? '"development"' : '"production"' },
  metafile: true,
};

/** Metafiles of every pass: the workers' code ends up inlined in widget.js, so their inputs are bundled too. */
const metafiles = [];

async function bundleWorker(name, contents) {
  const result = await esbuild.build({
    ...common,
    stdin: { contents, resolveDir: here, sourcefile: `${name}.entry.js`, loader: "js" },
    write: false,
    outdir: path.join(outdir, "workers"),
  });
  metafiles.push(result.metafile);
  const js = result.outputFiles.find((f) => f.path.endsWith(".js"));
  workerSources.set(name, js.text);
  return js.text.length;
}

const started = Date.now();
const asyncSize = await bundleWorker(
  "async_computation",
  `import "neuroglancer/unstable/async_computation.bundle.js";\n`,
);
const chunkSize = await bundleWorker(
  "chunk_worker",
  `import "neuroglancer/unstable/chunk_worker.bundle.js";\nimport "./src/data/kvstore_worker.ts";\n`,
);
fs.mkdirSync(outdir, { recursive: true });
const main = await esbuild.build({
  ...common,
  entryPoints: { widget: entry },
  outdir,
  write: true,
});
metafiles.push(main.metafile);
const packages = bundledPackages(metafiles, process.cwd());
const metafilesOut = argValue("--metafiles", null);
if (metafilesOut !== null) fs.writeFileSync(metafilesOut, JSON.stringify(metafiles));
writeThirdPartyLicenses(path.join(outdir, "THIRD_PARTY_LICENSES.txt"), packages);
const mainSize = fs.statSync(path.join(outdir, "widget.js")).size;
console.log(
  `built ${path.relative(process.cwd(), outdir)}/widget.js ${(mainSize / 1e6).toFixed(2)} MB ` +
    `(chunk worker ${(chunkSize / 1e6).toFixed(2)} MB, async worker ${(asyncSize / 1e6).toFixed(2)} MB inlined) ` +
    `in ${((Date.now() - started) / 1000).toFixed(1)} s; licences of ${packages.length} bundled npm packages in ` +
    `THIRD_PARTY_LICENSES.txt`,
);
