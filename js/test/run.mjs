// Runs the TypeScript unit tests (test/*.test.ts) with Node's built-in test runner, without a browser.
//
// Each test file is bundled by esbuild (already a devDependency) with the package conditions of build.mjs into a
// temporary .mjs, then `node --test` runs them. The tests import only modules that load under Node (no WebGL, no
// viewer): src/widget/transport.ts, src/data/* (Neuroglancer's kvstore registries load fine), src/panel/*,
// src/brush/geometry.ts and src/viewer/layers.ts.
//
// Usage: node test/run.mjs [test/x.test.ts ...] [--test-name-pattern=...]   (npm test runs them all)

import * as esbuild from "esbuild";
import { spawnSync } from "node:child_process";
import fs from "node:fs";
import os from "node:os";
import path from "node:path";
import { fileURLToPath } from "node:url";
import { conditions } from "../conditions.mjs";

const here = path.dirname(fileURLToPath(import.meta.url));
const args = process.argv.slice(2);
const nodeArgs = args.filter((a) => a.startsWith("--"));
let files = args.filter((a) => !a.startsWith("--")).map((f) => path.resolve(f));
if (files.length === 0) {
  files = fs
    .readdirSync(here)
    .filter((f) => f.endsWith(".test.ts"))
    .sort()
    .map((f) => path.join(here, f));
}
if (files.length === 0) {
  console.error(`no test files (*.test.ts) in ${here}`);
  process.exit(1);
}


const outdir = fs.mkdtempSync(path.join(os.tmpdir(), "ilastik-widget-js-test-"));
let status = 1;
try {
  const started = Date.now();
  // One bundle per test file, named after it (an index keeps equal names from different folders apart).
  const names = files.map((f, i) => {
    const name = path.basename(f, ".ts");
    return files.some((g, j) => j < i && path.basename(g, ".ts") === name) ? `${name}.${i}` : name;
  });
  await esbuild.build({
    entryPoints: Object.fromEntries(names.map((name, i) => [name, files[i]])),
    outdir,
    outExtension: { ".js": ".mjs" },
    bundle: true,
    format: "esm",
    platform: "node",
    target: "node18",
    conditions,
    sourcemap: "inline",
    logLevel: "warning",
    loader: { ".css": "empty", ".svg": "text", ".wasm": "dataurl" },
  });
  const bundles = names.map((name) => path.join(outdir, `${name}.mjs`));
  console.log(`bundled ${bundles.length} test files in ${Date.now() - started} ms`);
  // A test that never settles fails after 20 s (--test-timeout needs Node >= 20.11) instead of hanging the run.
  const [major, minor] = process.versions.node.split(".").map(Number);
  const timeout = major > 20 || (major === 20 && minor >= 11) ? ["--test-timeout=20000"] : [];
  const result = spawnSync(process.execPath, ["--enable-source-maps", "--test", ...timeout, ...nodeArgs, ...bundles], {
    stdio: "inherit",
    timeout: 240_000,
  });
  if (result.error) throw result.error;
  status = result.status ?? 1;
} finally {
  fs.rmSync(outdir, { recursive: true, force: true });
}
process.exit(status);
