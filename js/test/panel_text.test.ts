// Unit tests of what the panel writes: progress (panel/progress.ts), an object's row and class shares
// (panel/results.ts), stroke rows with axis names and the brush's diameter (panel/panel.ts).

import assert from "node:assert/strict";
import { test } from "node:test";
import { positionText, strokeText } from "../src/panel/panel.js";
import { progressFraction, progressOf, progressText } from "../src/panel/progress.js";
import { objectRowText, percent } from "../src/panel/results.js";

test("progressOf reads the progress trait: nothing when nothing is pending or the value is malformed", () => {
  assert.deepEqual(progressOf({ task: "predicting", done: 3, total: 12, seconds_left: 4.2 }), {
    task: "predicting",
    done: 3,
    total: 12,
    seconds_left: 4.2,
  });
  assert.equal(progressOf({}), undefined);
  assert.equal(progressOf(undefined), undefined);
  assert.equal(progressOf({ done: 12, total: 12 }), undefined, "done is not pending");
  assert.equal(progressOf({ done: "3", total: null }), undefined);
  assert.equal(progressOf({ done: 1, total: 4, seconds_left: "soon" })?.seconds_left, null);
});

test("progressText and progressFraction say how far the work is and how long is left", () => {
  const p = progressOf({ task: "predicting", done: 3, total: 12, seconds_left: 4.2 })!;
  assert.equal(progressText(p), "Predicting 3 of 12 chunks · about 4 s left");
  assert.equal(progressFraction(p), 0.25);
  assert.equal(progressText(progressOf({ task: "exporting", done: 0, total: 1, seconds_left: null })!), "Exporting 0 of 1 step");
  assert.equal(progressText(progressOf({ task: "predicting", done: 1, total: 2, seconds_left: 300 })!),
    "Predicting 1 of 2 chunks · about 5 min left");
  assert.equal(progressText(progressOf({ done: 1, total: 2, seconds_left: 0.4 })!), "Working 1 of 2");
});

test("objectRowText: an object's number, area and centroid in the image's axes", () => {
  const row = { label: 7, area: 1578, "centroid-0": 27.66, "centroid-1": 13.9, intensity_mean: 0.5681 };
  assert.equal(objectRowText(7, row, ["y", "x"]),
    "Object 7 · area 1,578 px · centroid (y 27.7, x 13.9) · mean intensity 0.568");
  assert.equal(objectRowText(2, { area: 9, "centroid-0": 1, "centroid-1": 2, "centroid-2": 3 }, ["z", "y", "x"]),
    "Object 2 · area 9 voxels · centroid (z 1, y 2, x 3)");
  assert.equal(objectRowText(0, null, ["y", "x"]), "No object there.");
});

test("percent: shares as the class table shows them", () => {
  assert.equal(percent(0.3134), "31%");
  assert.equal(percent(0.004), "<1%");
  assert.equal(percent(0), "0%");
  assert.equal(percent(null), "–");
});

test("stroke rows say the brush diameter and where the stroke is, with axis names", () => {
  const stroke = { id: 1, label: 2, size: 5, radius: 2, n_points: 3, center: [40.2, 86.6], bounds: [] };
  assert.equal(strokeText(stroke, "Foreground", ["y", "x"]), "Foreground · ⌀ 5 px · at y 40, x 87");
  assert.equal(strokeText({ ...stroke, erase: true, center: [3, 4, 5] }, "Foreground", ["z", "y", "x"]),
    "Eraser · ⌀ 5 px · at z 3, y 4, x 5");
  assert.equal(strokeText({ ...stroke, kind: "import", n_voxels: 1200 }, "Imported labels", ["y", "x"]),
    "Imported labels · imported, 1,200 px · at y 40, x 87");
  assert.equal(positionText([1.4, 2.6], ["y", "x"]), "y 1, x 3");
});
