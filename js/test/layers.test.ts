// Unit tests of viewer/layers.ts that need no viewer: which widget array each layer shows.

import assert from "node:assert/strict";
import { test } from "node:test";
import type { LayerSpec } from "../src/viewer/layers.js";
import { layerArrays, sourceUrl } from "../src/viewer/layers.js";

const transform = { outputDimensions: { y: [1, ""], x: [1, ""], "c^": [1, ""] } };

/** Layer specs as serving/layer_specs.py writes them, the raw layer read from its own web server. */
const SPECS: LayerSpec[] = [
  {
    name: "raw",
    type: "image",
    source: "https://example.org/cells.zarr/0/|zarr2:",
    fallback: { name: "raw", type: "image", source: "mem://abc/raw/|zarr2:" },
  },
  { name: "probabilities", type: "image", source: { url: "mem://abc/predictions/3/|zarr2:", transform } },
  { name: "segmentation", type: "image", source: { url: "mem://abc/predictions/3/|zarr2:", transform } },
  { name: "uncertainty", type: "image", source: { url: "mem://abc/predictions/3/|zarr2:", transform } },
  { name: "labels", type: "image", source: "mem://abc/labels/|zarr2:" },
  { name: "objects", type: "segmentation", source: "mem://abc/objects/2/|zarr2:" },
];

test("layerArrays: the array of each layer the kernel serves, read from its source URL", () => {
  assert.deepEqual(Object.fromEntries(layerArrays(SPECS)), {
    probabilities: "predictions",
    segmentation: "predictions",
    uncertainty: "predictions",
    labels: "labels",
    objects: "objects",
  });
  const kernelRaw = layerArrays([{ name: "raw", type: "image", source: "mem://abc/raw/|zarr2:" }]);
  assert.equal(kernelRaw.get("raw"), "raw");
  const odd = layerArrays([
    { name: "a", type: "image", source: "mem://abc/predictions/|zarr2:" }, // no layout
    { name: "b", type: "image", source: "mem://abc/labels/0/|zarr2:" }, // a level, not the array
    { name: "c", type: "image", source: { transform } },
  ]);
  assert.equal(odd.size, 0);
});

test("sourceUrl: the URL of a source given as text or as an object", () => {
  assert.equal(sourceUrl(SPECS[1]), "mem://abc/predictions/3/|zarr2:");
  assert.equal(sourceUrl(SPECS[4]), "mem://abc/labels/|zarr2:");
});
