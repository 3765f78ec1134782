// Unit tests of viewer/view_math.ts: wheel zoom steps, the zoom that fits the image, the region in view, the cursor
// readout, panel titles and the windows an integer layer's shader control takes.

import assert from "node:assert/strict";
import { test } from "node:test";
import {
  WHEEL_NOTCH_ZOOM,
  boxCorners,
  fitFactor,
  formatPixelValue,
  inside,
  panelTitle,
  readoutText,
  shaderWindow,
  viewRegion,
  voxelIndex,
  wheelZoomFactor,
} from "../src/viewer/view_math.js";

const close = (a: number, b: number, tol = 1e-9) => assert.ok(Math.abs(a - b) <= tol, `${a} != ${b}`);

test("a wheel notch zooms by 1.1-1.25x in either direction, whatever the browser reports a notch as", () => {
  assert.ok(WHEEL_NOTCH_ZOOM >= 1.1 && WHEEL_NOTCH_ZOOM <= 1.25);
  close(wheelZoomFactor(100), WHEEL_NOTCH_ZOOM);
  close(wheelZoomFactor(-100), 1 / WHEEL_NOTCH_ZOOM);
  for (const [delta, mode] of [[120, 0], [3, 1], [1, 2], [1000, 0], [53, 0]] as const) {
    const f = wheelZoomFactor(delta, mode);
    assert.ok(f > 1 && f <= 1.25, `deltaY ${delta} in mode ${mode} zooms by ${f}`);
    close(wheelZoomFactor(-delta, mode), 1 / f);
  }
  // a trackpad: many small deltas, each a small step, adding up to what a notch does
  let total = 1;
  for (let i = 0; i < 25; ++i) total *= wheelZoomFactor(4);
  close(total, WHEEL_NOTCH_ZOOM, 1e-9);
  assert.equal(wheelZoomFactor(0), 1);
  assert.equal(wheelZoomFactor(NaN), 1);
});

test("fitFactor: the zoom-out that brings every offset inside the panel, with a margin", () => {
  // a 256-pixel image drawn 512 px wide in a 400 x 300 panel: zoom out 512/400 (width) ... 512/300 (height)
  const offsets = [[-256, -256], [256, 256], [-256, 256], [256, -256]] as const;
  close(fitFactor(offsets, 400, 300, 1)!, 512 / 300);
  close(fitFactor(offsets, 400, 300)!, (512 / 300) * 1.05);
  // off-centre: the farther side decides, so the image is whole
  close(fitFactor([[0, -10], [0, 290]], 100, 300, 1)!, 580 / 300);
  assert.equal(fitFactor([], 100, 100), undefined);
  assert.equal(fitFactor(offsets, 0, 100), undefined);
});

test("boxCorners: the corners of an image's box in array coordinates", () => {
  assert.deepEqual(boxCorners([4, 6]), [[-0.5, -0.5], [-0.5, 5.5], [3.5, -0.5], [3.5, 5.5]]);
  assert.equal(boxCorners([2, 3, 4]).length, 8);
});

test("viewRegion: the voxels a panel shows, clipped to the image; a volume's panel one voxel thick", () => {
  const corners = [[-10.2, 20.4], [-10.2, 80.6], [40.6, 20.4], [40.6, 80.6]];
  assert.deepEqual(viewRegion(corners, [32, 64]), [[0, 32], [20, 64]]);
  assert.deepEqual(viewRegion([[3.2, 0, 0], [3.2, 9, 9]], [10, 10, 10], 0, 3.2), [[3, 4], [0, 10], [0, 10]]);
  assert.equal(viewRegion([[100, 100], [120, 120]], [32, 64]), undefined, "nothing of the image in view");
  assert.equal(viewRegion([], [4, 4]), undefined);
});

test("voxelIndex and inside: the voxel holding a point (centre of voxel i at i)", () => {
  assert.deepEqual(voxelIndex([2.49, -0.5, -0.51]), [2, 0, -1]);
  assert.ok(inside([0, 3], [1, 4]) && !inside([1, 3], [1, 4]) && !inside([0], [1, 4]));
});

test("readoutText: the voxel with the image's axis names and the value there", () => {
  assert.equal(readoutText(["y", "x"], [40, 87], [100, 100], 1234), "y 40, x 87: 1234");
  assert.equal(readoutText(["z", "y", "x"], [3, 4, 5], [10, 10, 10], [12, 0.5]), "z 3, y 4, x 5: 12, 0.5");
  assert.equal(readoutText(["y", "x"], [40, 87], [100, 100], undefined), "y 40, x 87");
  assert.equal(readoutText(["y", "x"], [-1, 87], [100, 100], 5), "y -1, x 87 (outside the image)");
  assert.equal(formatPixelValue(0.123456789), "0.12346");
  assert.equal(formatPixelValue(Float32Array.of(1, 2)), "1, 2");
  assert.equal(formatPixelValue(10n), "10");
  assert.equal(formatPixelValue(null), "");
});

test("panelTitle: the plane in the image's axis names and the slice it cuts", () => {
  const axes = ["z", "y", "x"];
  assert.equal(panelTitle([1, 2], axes, [12, 40, 30]), "xy · z 12");
  assert.equal(panelTitle([2, 0], axes, [12, 40, 30]), "xz · y 40");
  assert.equal(panelTitle([0, 1], axes, [12, 40, 30]), "yz · x 30");
  assert.equal(panelTitle([0, 1], ["y", "x"], [4, 5]), "xy");
});

test("shaderWindow: whole numbers within an integer type's bounds, low < high kept; floats unchanged", () => {
  assert.deepEqual(shaderWindow(0.2, 0.8), [0.2, 0.8]);
  assert.deepEqual(shaderWindow(-10.4, 300.6, [0, 255]), [0, 255]);
  assert.deepEqual(shaderWindow(100.4, 100.45, [0, 65535]), [100, 101]);
  assert.deepEqual(shaderWindow(255.2, 256, [0, 255]), [254, 255]);
});
