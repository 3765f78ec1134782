// Unit tests of brush/geometry.ts with fake Neuroglancer objects: panel projection (axis-aligned and oblique), global
// <-> array coordinates by axis name, gap filling, the stroke sent to the kernel, brush radius and stroke decimation.

import assert from "node:assert/strict";
import { test } from "node:test";
import type { SliceViewPanel } from "neuroglancer/unstable/sliceview/panel.js";
import type { Viewer } from "neuroglancer/unstable/viewer.js";
import {
  AxisMap,
  PanelGeometry,
  brushRadius,
  decimateStroke,
  gapFill,
  snapToGrid,
  strokeToArray,
} from "../src/brush/geometry.js";
import { MAX_STROKE_POINTS } from "../src/protocol.js";

const close = (actual: ArrayLike<number>, expected: ArrayLike<number>, eps = 1e-4, what = "") => {
  assert.equal(actual.length, expected.length, `${what} length`);
  for (let i = 0; i < actual.length; ++i) {
    assert.ok(
      Math.abs(actual[i] - expected[i]) <= eps,
      `${what} [${Array.from(actual).join(", ")}] != [${Array.from(expected).join(", ")}] at ${i}`,
    );
  }
};

/** A viewer whose global dimensions have `names`, in that order. */
const fakeViewer = (names: string[]) => ({ coordinateSpace: { value: { names } } }) as unknown as Viewer;

// ------------------------------------------------------------------------------------------ AxisMap

test("AxisMap maps by axis name, whatever order Neuroglancer keeps the global dimensions in", () => {
  const map = new AxisMap(fakeViewer(["x", "y", "z"]), ["z", "y", "x"]);
  assert.equal(map.ready, true);
  // Voxel i spans [i, i+1) in global coordinates; its centre i + 0.5 is array coordinate i.
  assert.deepEqual(map.toArray([10.5, 20.5, 3.5]), [3, 20, 10]);
  assert.deepEqual(map.toArray([10, 20, 3]), [2.5, 19.5, 9.5]);
  close(map.toGlobal([3, 20, 10], [0, 0, 0]), [10.5, 20.5, 3.5]);
  assert.equal(map.arrayAxisOfGlobal(0), 2);
  assert.equal(map.arrayAxisOfGlobal(2), 0);
  assert.equal(map.arrayAxisOfGlobal(1), 1);
  assert.equal(map.arrayAxisOfGlobal(3), -1);
});

test("AxisMap keeps global dims the image does not have (e.g. a channel or time dim) at the base position", () => {
  const map = new AxisMap(fakeViewer(["c'", "y", "x"]), ["y", "x"]);
  const global = map.toGlobal([4, 7], [2.5, 0, 0]);
  assert.ok(global instanceof Float32Array);
  close(global, [2.5, 4.5, 7.5]);
  assert.deepEqual(map.toArray(global), [4, 7]);
  assert.equal(map.arrayAxisOfGlobal(0), -1);
});

test("AxisMap is not ready until every array axis is a global dimension, and follows later changes", () => {
  const space = { value: { names: ["y"] } };
  const map = new AxisMap({ coordinateSpace: space } as unknown as Viewer, ["y", "x"]);
  assert.equal(map.ready, false);
  space.value = { names: ["x", "y"] };
  assert.equal(map.ready, true);
  assert.deepEqual(map.toArray([1.5, 2.5]), [2, 1]);
});

// ------------------------------------------------------------------------------------------ PanelGeometry

/** Column-major 4x4 matrix from its 3x3 part `m[row][col]`. */
function mat4(m: number[][]): Float32Array {
  const out = new Float32Array(16);
  for (let r = 0; r < 3; ++r) for (let c = 0; c < 3; ++c) out[4 * c + r] = m[r][c];
  out[15] = 1;
  return out;
}

/**
 * A panel `width` x `height` client pixels at (left, top) showing display dims `dims` (global indices) with
 * `voxelsPerPixel` zoom, the screen axes rotated by `rotation` (3x3, columns = screen x, screen y, normal, in
 * display coordinates).
 */
function fakePanel(opts: {
  dims: number[];
  rank?: number;
  voxelsPerPixel: number;
  rotation?: number[][];
  globalPosition: number[];
  rect?: { left: number; top: number };
  width?: number;
  height?: number;
}): SliceViewPanel {
  const s = opts.voxelsPerPixel;
  const R = opts.rotation ?? [
    [1, 0, 0],
    [0, 1, 0],
    [0, 0, 1],
  ];
  // invView = s R; view = (s R)^-1 = R^T / s (R orthonormal)
  const inv = mat4(R.map((row) => row.map((v) => v * s)));
  const view = mat4(R[0].map((_, c) => R.map((row) => row[c] / s)));
  const rect = opts.rect ?? { left: 100, top: 50 };
  const width = opts.width ?? 400;
  const height = opts.height ?? 300;
  return {
    visible: true,
    element: {
      clientLeft: 1,
      clientTop: 2,
      getBoundingClientRect: () => ({ left: rect.left, top: rect.top, width: width + 2, height: height + 4 }),
    },
    sliceView: {
      projectionParameters: {
        value: {
          width,
          height,
          invViewMatrix: inv,
          viewMatrix: view,
          globalPosition: Float32Array.from(opts.globalPosition),
          displayDimensionRenderInfo: {
            displayDimensionIndices: Int32Array.from([...opts.dims, ...[-1, -1, -1]].slice(0, 3)),
            displayRank: opts.rank ?? opts.dims.length,
          },
        },
      },
    },
  } as unknown as SliceViewPanel;
}

// Global dims z, y, x (indices 0, 1, 2); an xy panel shows display dims x, y, z = global 2, 1, 0.
const CENTRE: [number, number] = [100 + 1 + 200, 50 + 2 + 150]; // left + clientLeft + width / 2, ...

test("PanelGeometry: an xy panel maps client pixels to global coordinates at its zoom", () => {
  const g = new PanelGeometry(fakePanel({ dims: [2, 1, 0], voxelsPerPixel: 0.5, globalPosition: [3.5, 20, 30] }));
  assert.equal(g.valid, true);
  close(g.clientToGlobal(...CENTRE), [3.5, 20, 30], 1e-6, "centre");
  close(g.clientToGlobal(CENTRE[0] + 10, CENTRE[1] + 4), [3.5, 22, 35], 1e-6, "right and down");
  close(g.globalToClient([3.5, 22, 35]), [CENTRE[0] + 10, CENTRE[1] + 4], 1e-4, "back");
  close(g.globalToClient([9.5, 22, 35]), [CENTRE[0] + 10, CENTRE[1] + 4], 1e-4, "off-plane distance ignored");
  assert.equal(g.voxelsPerPixel(), 0.5);
  close(g.normal(), [0, 0, 1]);
  assert.deepEqual(g.planeGlobalDims(), [2, 1]);
  assert.equal(g.planeName(["z", "y", "x"]), "xy");
  assert.equal(g.distanceFromPlane([3.5, 0, 0]), 0);
  assert.equal(g.distanceFromPlane([5.5, 0, 0]), 2);
  assert.equal(g.distanceFromPlane([1.5, 100, -7]), -2);
});

test("PanelGeometry: an xz panel of a volume is not xy and paints in the x and z axes", () => {
  // display dims x, z, y: screen x = x, screen y = z
  const g = new PanelGeometry(fakePanel({ dims: [2, 0, 1], voxelsPerPixel: 2, globalPosition: [10, 20, 30] }));
  close(g.clientToGlobal(CENTRE[0] + 1, CENTRE[1] + 3), [16, 20, 32]);
  assert.deepEqual(g.planeGlobalDims(), [2, 0]);
  assert.equal(g.planeName(["z", "y", "x"]), "xz");
  assert.equal(g.distanceFromPlane([0, 21, 0]), 1);
});

test("PanelGeometry: oblique panels round-trip client -> global -> client and lie in their plane", () => {
  for (const degrees of [10, 35, 80, 135]) {
    const t = (degrees * Math.PI) / 180;
    const [c, sn] = [Math.cos(t), Math.sin(t)];
    // rotate the screen y axis and the normal about display x
    const rotation = [
      [1, 0, 0],
      [0, c, -sn],
      [0, sn, c],
    ];
    const g = new PanelGeometry(
      fakePanel({ dims: [2, 1, 0], voxelsPerPixel: 0.75, rotation, globalPosition: [40.5, 50.5, 60.5] }),
    );
    close(g.normal(), [0, -sn, c], 1e-5, `normal at ${degrees}`);
    assert.ok(Math.abs(g.voxelsPerPixel() - 0.75) < 1e-6);
    for (const [dx, dy] of [
      [0, 0],
      [13, -7],
      [-150, 120],
      [199, 149],
    ]) {
      const global = g.clientToGlobal(CENTRE[0] + dx, CENTRE[1] + dy);
      close(g.globalToClient(global), [CENTRE[0] + dx, CENTRE[1] + dy], 1e-3, `round trip at ${degrees}`);
      assert.ok(Math.abs(g.distanceFromPlane(global)) < 1e-3, `in the plane at ${degrees}`);
    }
    // The nearest axis-aligned plane: xy while tilted less than 45 degrees, else xz.
    const nearXY = Math.abs(c) > Math.abs(sn);
    assert.deepEqual(g.planeGlobalDims(), nearXY ? [2, 1] : [2, 0], `plane at ${degrees}`);
    assert.equal(g.planeName(["z", "y", "x"]) === "xy", nearXY);
  }
});

test("PanelGeometry: a 2D image (display rank 2) has no off-plane distance", () => {
  const g = new PanelGeometry(fakePanel({ dims: [1, 0], voxelsPerPixel: 1, globalPosition: [5, 6] }));
  close(g.clientToGlobal(CENTRE[0] + 2, CENTRE[1] + 3), [8, 8]);
  assert.equal(g.distanceFromPlane([100, 100]), 0);
  assert.deepEqual(g.planeGlobalDims(), [1, 0]);
  assert.equal(g.planeName(["y", "x"]), "xy");
});

test("PanelGeometry: a panel with no size or no display dimensions is not valid", () => {
  assert.equal(new PanelGeometry(fakePanel({ dims: [1, 0], voxelsPerPixel: 1, globalPosition: [0, 0], width: 0 })).valid, false);
  assert.equal(new PanelGeometry(fakePanel({ dims: [], voxelsPerPixel: 1, globalPosition: [0, 0] })).valid, false);
});

// ------------------------------------------------------------------------------------------ strokes

test("gapFill: the first sample is taken as is", () => {
  const p = Float32Array.from([1, 2]);
  assert.deepEqual(gapFill(undefined, p, 1), [p]);
});

test("gapFill: a pointer that moved less than half a step adds nothing", () => {
  assert.deepEqual(gapFill(Float32Array.from([0, 0]), Float32Array.from([0.2, 0.2]), 1), []);
  assert.equal(gapFill(Float32Array.from([0, 0]), Float32Array.from([0.5, 0]), 1).length, 1);
});

test("gapFill: fast drags are filled with evenly spaced samples at most a step apart", () => {
  const last = Float32Array.from([1, 1, 5]);
  const position = Float32Array.from([1, 4, 9]); // 5 away
  const out = gapFill(last, position, 2);
  assert.equal(out.length, 3, "ceil(5 / 2) = 3 samples");
  assert.equal(out[out.length - 1], position, "ends at the pointer");
  let previous: Float32Array = last;
  for (const p of out) {
    assert.ok(p instanceof Float32Array);
    const d = Math.hypot(...Array.from(p, (v, i) => v - previous[i]));
    assert.ok(Math.abs(d - 5 / 3) < 1e-5, `spacing ${d}`);
    previous = p;
  }
  close(out[0], [1, 2, 19 / 3]);
  assert.equal(gapFill(last, Float32Array.from([1, 1, 6.5]), 2).length, 1, "within a step: no filling");
});

test("strokeToArray: array-order points, off-plane coordinates snapped to the panel's voxel", () => {
  // global z, y, x; an xy panel (plane dims x, y)
  const map = new AxisMap(fakeViewer(["z", "y", "x"]), ["z", "y", "x"]);
  const positions = [Float32Array.from([3.7, 10.5, 20.5]), Float32Array.from([3.2, 11.123, 20.9876])];
  const { points, axes } = strokeToArray(positions, [2, 1], map);
  assert.deepEqual(axes, [1, 2]);
  assert.deepEqual(points, [
    [3, 10, 20],
    [3, 10.62, 20.49],
  ]);
  assert.deepEqual(Array.from(positions[0]), Array.from(Float32Array.from([3.7, 10.5, 20.5])), "input untouched");
});

test("strokeToArray: an xz panel with Neuroglancer's dims in another order gives array axes (0, 2)", () => {
  const map = new AxisMap(fakeViewer(["x", "y", "z"]), ["z", "y", "x"]);
  // plane dims: global x (0) and z (2); y (global 1) is snapped
  const { points, axes } = strokeToArray([Float32Array.from([8.25, 4.99, 1.5])], [0, 2], map);
  assert.deepEqual(axes, [0, 2]);
  assert.deepEqual(points, [[1, 4, 7.75]]);
});

test("strokeToArray: a 2D image", () => {
  const map = new AxisMap(fakeViewer(["y", "x"]), ["y", "x"]);
  const { points, axes } = strokeToArray([Float32Array.from([0.5, 0.5]), Float32Array.from([2.25, 7.75])], [1, 0], map);
  assert.deepEqual(axes, [0, 1]);
  assert.deepEqual(points, [
    [0, 0],
    [1.75, 7.25],
  ]);
});

test("brushRadius: a brush size (diameter in pixels) as a radius in voxels, never 0 (the kernel refuses it)", () => {
  assert.equal(brushRadius(1), 0.5);
  assert.equal(brushRadius(2), 0.5);
  assert.equal(brushRadius(3), 1);
  assert.equal(brushRadius(5), 2);
  assert.equal(brushRadius(61), 30);
  assert.equal(brushRadius(0), 0.5);
});

test("decimateStroke: short strokes unchanged, long ones thinned evenly keeping both ends", () => {
  const short = [
    [0, 0],
    [1, 1],
  ];
  assert.equal(decimateStroke(short, 2), short);
  const points = Array.from({ length: 11 }, (_, i) => [i, 2 * i]);
  assert.deepEqual(decimateStroke(points, 4), [[0, 0], [4, 8], [8, 16], [10, 20]]);
  const even = Array.from({ length: 10 }, (_, i) => [i, 0]);
  assert.deepEqual(decimateStroke(even, 4), [[0, 0], [3, 0], [6, 0], [9, 0]], "the last point is not doubled");
});

test("decimateStroke: a stroke message never has more points than the kernel takes (protocol MAX_STROKE_POINTS)", () => {
  const ns = [MAX_STROKE_POINTS, MAX_STROKE_POINTS + 1, 2 * MAX_STROKE_POINTS, 2 * MAX_STROKE_POINTS + 1,
    10 * MAX_STROKE_POINTS];
  for (const n of ns) {
    const points = Array.from({ length: n }, (_, i) => [i, i]);
    const out = decimateStroke(points);
    assert.ok(out.length <= MAX_STROKE_POINTS, `${n} -> ${out.length}`);
    assert.ok(out.length > MAX_STROKE_POINTS / 2, `${n} -> ${out.length}: thinned more than needed`);
    assert.equal(out[0], points[0]);
    assert.equal(out[out.length - 1], points[n - 1]);
  }
  for (const [n, max] of [[5, 2], [6, 3], [100, 7], [101, 10]]) {
    const out = decimateStroke(Array.from({ length: n }, (_, i) => [i]), max);
    assert.ok(out.length <= max && out.length >= 2, `${n} points, at most ${max}: ${out.length}`);
  }
});

test("snapToGrid: points on voxel centres, from where an odd brush paints exactly its size across", () => {
  // the kernel paints voxel centres within (size - 1) / 2 of a point: count them along one axis
  const across = (p: number, size: number) => {
    let n = 0;
    for (let i = Math.floor(p) - 40; i <= Math.floor(p) + 40; ++i) if (Math.abs(i + 0.5 - p) <= (size - 1) / 2) ++n;
    return n;
  };
  for (const size of [1, 3, 5, 9, 61]) {
    for (const g of [20.0, 20.3, 20.5, 20.77, 20.99]) {
      const snapped = snapToGrid(Float32Array.of(g, 7.25, 3.3), [0, 1]);
      assert.equal(across(snapped[0], size), size, `size ${size} at ${g}`);
      assert.equal(snapped[2], Float32Array.of(3.3)[0], "the off-plane dimension is left alone");
    }
    assert.equal(across(20.3, size), size - 1, "off a centre the footprint is narrower: why points are snapped");
  }
  assert.deepEqual(Array.from(snapToGrid([20.3, 4.9], [0, 1])), [20.5, 4.5]);
});
