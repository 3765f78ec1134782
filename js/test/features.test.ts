// Unit tests of panel/features.ts: the kernel's feature table and edits of a feature selection.

import assert from "node:assert/strict";
import { test } from "node:test";
import {
  allFeatures,
  channelText,
  featureEnabled,
  featureTable,
  scaleIn2d,
  scaleText,
  with2d,
  withFeature,
} from "../src/panel/features.js";

const TABLE = {
  scales: [0.3, 0.7, 1.0, 1.6, 3.5, 5.0, 10.0],
  scales_2d: [0.3, 0.7, 1.0, 1.6, 3.5, 5.0, 10.0],
  features: [
    {
      name: "gaussian_smoothing",
      title: "Gaussian Smoothing",
      description: "G * I",
      scales: [0.3, 0.7, 1.0, 1.6, 3.5, 5.0, 10.0],
      channels: { "2d": 1, "3d": 1 },
    },
    { name: "hessian_of_gaussian_eigenvalues", scales: [0.7, 1.0, 1.6, 3.5, 5.0, 10.0] },
  ],
};

test("scaleText writes scales as Python's repr does", () => {
  assert.equal(scaleText(0.3), "0.3");
  assert.equal(scaleText(1), "1.0");
  assert.equal(scaleText(10), "10.0");
  assert.equal(scaleText(1.6), "1.6");
});

test("featureTable takes the kernel's table and fills in missing titles", () => {
  const table = featureTable({ feature_table: TABLE });
  assert.ok(table !== undefined);
  assert.deepEqual(table.scales, TABLE.scales);
  assert.deepEqual(table.scales2d, TABLE.scales_2d);
  const { scales_2d: _, ...older } = TABLE;
  assert.deepEqual(featureTable({ feature_table: older })?.scales2d, [], "an older kernel: no 2D column");
  assert.deepEqual(table.features[0], TABLE.features[0]);
  assert.deepEqual(table.features[1], {
    name: "hessian_of_gaussian_eigenvalues",
    title: "hessian_of_gaussian_eigenvalues",
    description: "",
    scales: TABLE.features[1].scales,
    channels: undefined,
  });
});

test("featureTable: a missing or malformed table gives undefined (an older kernel)", () => {
  for (const info of [
    undefined,
    null,
    {},
    { feature_table: null },
    { feature_table: { scales: [], features: TABLE.features } },
    { feature_table: { scales: [1, "2"], features: TABLE.features } },
    { feature_table: { scales: [1, NaN], features: TABLE.features } },
    { feature_table: { scales: TABLE.scales, features: [] } },
    { feature_table: { scales: TABLE.scales, features: [{ name: "x" }] } },
    { feature_table: { scales: TABLE.scales, features: [{ scales: [1] }] } },
    { feature_table: { scales: TABLE.scales, features: [null] } },
  ]) {
    assert.equal(featureTable(info), undefined, JSON.stringify(info));
  }
});

test("featureEnabled, withFeature, allFeatures edit a FeatureSelection.to_dict() without mutating it", () => {
  const selection = { features: { gaussian_smoothing: [0.3, 1.0], hessian_of_gaussian_eigenvalues: [] } };
  const frozen = JSON.stringify(selection);
  assert.equal(featureEnabled(selection, "gaussian_smoothing", 1.0), true);
  assert.equal(featureEnabled(selection, "gaussian_smoothing", 1.0000001), true, "scales compare with a tolerance");
  assert.equal(featureEnabled(selection, "gaussian_smoothing", 0.7), false);
  assert.equal(featureEnabled(selection, "laplacian_of_gaussian", 1.0), false);
  assert.equal(featureEnabled(undefined, "gaussian_smoothing", 1.0), false);

  const on = withFeature(selection, "gaussian_smoothing", 0.7, true);
  assert.deepEqual(on, {
    features: { gaussian_smoothing: [0.3, 0.7, 1.0], hessian_of_gaussian_eigenvalues: [] },
    in_2d: [],
  });
  assert.deepEqual(withFeature(on, "gaussian_smoothing", 0.7, true), on, "switching on twice adds it once");
  assert.deepEqual(withFeature(selection, "gaussian_smoothing", 0.3, false).features.gaussian_smoothing, [1.0]);
  assert.deepEqual(withFeature(selection, "laplacian_of_gaussian", 3.5, true).features.laplacian_of_gaussian, [3.5]);
  assert.deepEqual(withFeature(undefined, "gaussian_smoothing", 1, true), {
    features: { gaussian_smoothing: [1] },
    in_2d: [],
  });
  assert.equal(JSON.stringify(selection), frozen);

  const table = featureTable({ feature_table: TABLE })!;
  assert.deepEqual(allFeatures(table, true), {
    features: { gaussian_smoothing: TABLE.features[0].scales, hessian_of_gaussian_eigenvalues: TABLE.features[1].scales },
    in_2d: [],
  });
  assert.deepEqual(allFeatures(table, false), {
    features: { gaussian_smoothing: [], hessian_of_gaussian_eigenvalues: [] },
    in_2d: [],
  });
  allFeatures(table, true).features.gaussian_smoothing.push(99);
  assert.equal(table.features[0].scales.length, 7, "the table is not shared with the selection");
});

test("the 2D scales of a volume's selection survive every edit of its cells, and with2d switches them", () => {
  const selection = { features: { gaussian_smoothing: [1.0], hessian_of_gaussian_eigenvalues: [3.5] }, in_2d: [3.5] };
  const frozen = JSON.stringify(selection);
  assert.deepEqual(withFeature(selection, "gaussian_smoothing", 0.7, true).in_2d, [3.5]);
  assert.deepEqual(withFeature(selection, "hessian_of_gaussian_eigenvalues", 3.5, false).in_2d, [3.5]);
  const table = featureTable({ feature_table: TABLE })!;
  assert.deepEqual(allFeatures(table, true, selection).in_2d, [3.5]);
  assert.deepEqual(allFeatures(table, false, selection).in_2d, [3.5]);
  const more = with2d(selection, 1.0, true);
  assert.deepEqual(more, { features: selection.features, in_2d: [1.0, 3.5] });
  assert.equal(scaleIn2d(more, 1.0000001), true);
  assert.deepEqual(with2d(more, 3.5, false).in_2d, [1.0]);
  assert.deepEqual(with2d(more, 1.0, true).in_2d, [1.0, 3.5], "switching on twice adds it once");
  assert.equal(scaleIn2d(undefined, 1.0), false);
  assert.equal(JSON.stringify(selection), frozen);
});

test("channelText: the channels a feature adds, in words", () => {
  const f = { name: "x", title: "x", description: "", scales: [1] };
  assert.equal(channelText(f), "");
  assert.equal(channelText({ ...f, channels: { "2d": 1, "3d": 1 } }), " (1 channel)");
  assert.equal(channelText({ ...f, channels: { "2d": 2, "3d": 3 } }), " (2 channels in 2D, 3 in 3D)");
});
