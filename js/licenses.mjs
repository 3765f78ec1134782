// Licences of the npm packages bundled into widget.js / widget.css, for THIRD_PARTY_LICENSES.txt (build.mjs).
//
// A package counts as bundled when at least one byte of one of its files is in an output of some build pass, as
// esbuild's metafile records it (outputs[*].inputs[*].bytesInOutput). Each is written with its name, version, the
// `license` field of its package.json and the full text of its LICENSE / LICENCE / COPYING / NOTICE files. A bundled
// package with neither a licence file nor a `license` field stops the build: it could not be shipped. WebAssembly
// modules bundled from a package are listed under it (they may be compiled from other projects' code, e.g.
// Neuroglancer's libpng and Draco decoders, whose licences the npm package does not ship).

import fs from "node:fs";
import path from "node:path";

const LICENSE_FILE_RE = /^(licen[cs]e|copying|notice)([._-].*)?$/i;

/** The directory of the npm package a bundled file belongs to, or null for our own sources. */
function packageDir(file) {
  const parts = file.split(/[\\/]/);
  const i = parts.lastIndexOf("node_modules");
  if (i < 0 || i + 1 >= parts.length) return null;
  const length = parts[i + 1].startsWith("@") ? 2 : 1;
  return parts.slice(0, i + 1 + length).join(path.sep);
}

/** A metafile input key as an absolute path: "ns:/abs/path" for plugin namespaces, else relative to `workDir`. */
function inputPath(key, workDir) {
  const namespaced = /^[a-z][a-z0-9-]+:(.*)$/i.exec(key);
  const file = namespaced ? namespaced[1] : key;
  return path.isAbsolute(file) ? file : path.resolve(workDir, file);
}

function licenseField(pkg) {
  const field = pkg.license ?? pkg.licenses;
  if (typeof field === "string") return field;
  if (Array.isArray(field)) return field.map((l) => (typeof l === "string" ? l : l.type)).join(" OR ");
  if (field && typeof field === "object") return field.type ?? null;
  return null;
}

/**
 * The npm packages with code in the outputs of these metafiles, sorted by name: {name, version, license, homepage,
 * files: [{name, text}], wasm: [bundled .wasm paths inside the package]}. `workDir` is the directory esbuild resolved relative input paths against.
 */
export function bundledPackages(metafiles, workDir) {
  const wasmByDir = new Map();
  for (const metafile of metafiles) {
    for (const output of Object.values(metafile.outputs)) {
      for (const [key, input] of Object.entries(output.inputs)) {
        if (input.bytesInOutput === 0) continue;
        const file = inputPath(key, workDir);
        const dir = packageDir(file);
        if (dir === null) continue;
        if (!wasmByDir.has(dir)) wasmByDir.set(dir, new Set());
        if (file.endsWith(".wasm")) wasmByDir.get(dir).add(path.relative(dir, file).split(path.sep).join("/"));
      }
    }
  }
  const packages = [...wasmByDir].map(([dir, wasm]) => {
    const pkg = JSON.parse(fs.readFileSync(path.join(dir, "package.json"), "utf8"));
    const files = fs
      .readdirSync(dir)
      .filter((name) => LICENSE_FILE_RE.test(name) && fs.statSync(path.join(dir, name)).isFile())
      .sort()
      .map((name) => ({ name, text: fs.readFileSync(path.join(dir, name), "utf8").trim() }));
    const license = licenseField(pkg);
    if (files.length === 0 && license === null) {
      throw new Error(`${pkg.name} (${dir}) is bundled but has neither a licence file nor a license field`);
    }
    const repository = typeof pkg.repository === "string" ? pkg.repository : pkg.repository?.url;
    const homepage = pkg.homepage ?? repository ?? null;
    return { name: pkg.name, version: pkg.version, license, homepage, files, wasm: [...wasm].sort() };
  });
  return packages.sort((a, b) => (a.name < b.name ? -1 : a.name > b.name ? 1 : a.version < b.version ? -1 : 1));
}

/** Writes THIRD_PARTY_LICENSES.txt: a list of the packages, then each one's licence and notice texts. */
export function writeThirdPartyLicenses(file, packages) {
  const rule = "=".repeat(100);
  const lines = [
    "Third-party software bundled into widget.js and widget.css of ilastik_widget",
    "",
    "ilastik_widget's own code is under the MIT licence (the LICENSE file of the package). The browser bundle beside",
    "this file also contains the following npm packages, each under its own licence, reproduced below with the",
    "package's notice files.",
    "",
    ...packages.map((p) => `  ${p.name} ${p.version}  (${p.license ?? "see its licence file"})`),
  ];
  for (const p of packages) {
    lines.push("", rule, `${p.name} ${p.version}`, `License: ${p.license ?? "see below"}`);
    if (p.homepage) lines.push(`Source: ${p.homepage}`);
    if (p.files.length === 0) {
      lines.push("", `(The package ships no licence file; its package.json declares the licence ${p.license}.)`);
    }
    if (p.wasm.length > 0) {
      lines.push("", "WebAssembly modules of this package in the bundle:", ...p.wasm.map((w) => `  ${w}`));
    }
    for (const f of p.files) lines.push("", `--- ${f.name} ---`, "", f.text);
  }
  fs.writeFileSync(file, lines.join("\n") + "\n");
}
