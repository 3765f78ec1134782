// Prints the path of a Node.js that meets package.json's `engines.node` (the minimum of the pinned Neuroglancer):
// the node running this script if it is new enough, else js/.node/bin/node, which is installed first from the npm
// registry when missing (`npm install -g --prefix js/.node node@<major>`: the npm package `node` ships the official
// binaries of every platform). hatch_build.py and .ci/install build and test with the node printed here.
//
// Runs on any Node >= 14. Usage: node find_node.mjs [--no-install]   (exit 1 with a message when none is found)

import { execFileSync } from "node:child_process";
import fs from "node:fs";
import path from "node:path";
import { fileURLToPath } from "node:url";

const here = path.dirname(fileURLToPath(import.meta.url));
const wanted = JSON.parse(fs.readFileSync(path.join(here, "package.json"), "utf8")).engines.node;
const minimum = Number(/^>=\s*(\d+)$/.exec(wanted)?.[1]);
if (!Number.isInteger(minimum)) throw new Error(`package.json engines.node must read ">=N", not ${wanted}`);

const major = (version) => Number(/^v?(\d+)/.exec(version)?.[1] ?? 0);
const prefix = path.join(here, ".node");
const local = process.platform === "win32" ? path.join(prefix, "node.exe") : path.join(prefix, "bin", "node");

function versionOf(node) {
  try {
    return execFileSync(node, ["--version"], { encoding: "utf8" }).trim();
  } catch {
    return null;
  }
}

function found(node) {
  console.log(node);
  process.exit(0);
}

if (major(process.version) >= minimum) found(process.execPath);
if (fs.existsSync(local) && major(versionOf(local) ?? "") >= minimum) found(local);
if (process.argv.includes("--no-install")) {
  console.error(
    `Node.js ${wanted} is needed to build the widget (the pinned Neuroglancer requires it); ` +
      `found ${process.version} at ${process.execPath} and none in ${prefix}.`,
  );
  process.exit(1);
}

console.error(
  `Node.js ${process.version} at ${process.execPath} is older than ${wanted} (the pinned Neuroglancer's minimum): ` +
    `installing Node.js ${minimum} from the npm registry into ${prefix}`,
);
const npm = process.platform === "win32" ? "npm.cmd" : "npm";
try {
  execFileSync(npm, ["install", "--global", "--prefix", prefix, "--no-audit", "--no-fund", `node@${minimum}`], {
    stdio: ["ignore", 2, 2],
    shell: process.platform === "win32",
  });
} catch (error) {
  console.error(
    `Could not install Node.js ${minimum} with npm (${error.message}). Install Node.js ${wanted} ` +
      `(https://nodejs.org) and put it first on PATH, or set ILASTIK_WIDGET_SKIP_JS=1 for a Python-only install.`,
  );
  process.exit(1);
}
const version = versionOf(local);
if (major(version ?? "") < minimum) {
  console.error(`npm installed ${local}, but it reports ${version}: Node.js ${wanted} is still missing`);
  process.exit(1);
}
found(local);
