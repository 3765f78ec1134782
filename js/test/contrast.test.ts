// Unit tests of panel/contrast.ts: the kernel's display information, slider spans and steps, window edits that keep
// low < high, the histogram's path, and the throttle of the kernel's updates while a handle is dragged.

import assert from "node:assert/strict";
import { test } from "node:test";
import {
  channelName,
  displayInfo,
  formatValue,
  fraction,
  histogramPath,
  isInteger,
  limitsOf,
  sliderSpan,
  sliderStep,
  throttle,
  withLimit,
} from "../src/panel/contrast.js";
import { sleep } from "./helpers.js";

const HIST = { range: [100, 6116], counts: [0, 5, 100, 3], below: 0, above: 300, min: 100, max: 60000 };

test("displayInfo reads source_info.display and refuses what is malformed (an older kernel)", () => {
  const info = displayInfo({
    display: { dtype: "uint16", mode: "grey", channels: 1, auto: [[100, 3100]], histograms: [HIST] },
  });
  assert.deepEqual(info, {
    dtype: "uint16",
    mode: "grey",
    channels: 1,
    auto: [[100, 3100]],
    histograms: [HIST],
  });
  const two = displayInfo({ display: { dtype: "float32", mode: "composite", channels: 2, histograms: [null, HIST] } });
  assert.deepEqual(two?.histograms, [undefined, HIST], "a malformed histogram is left out, not the display");
  assert.deepEqual(two?.auto, [undefined, undefined]);
  for (const bad of [
    undefined,
    {},
    { display: { dtype: 1, mode: "grey", channels: 1 } },
    { display: { dtype: "uint8", mode: "fancy", channels: 1 } },
    { display: { dtype: "uint8", mode: "grey", channels: 0 } },
    { display: { dtype: "uint8", mode: "grey", channels: 1.5 } },
  ]) {
    assert.equal(displayInfo(bad), undefined, JSON.stringify(bad));
  }
  const broken = displayInfo({ display: { dtype: "uint8", mode: "grey", channels: 1, histograms: [
    { range: [5, 5], counts: [1] },
  ] } });
  assert.deepEqual(broken?.histograms, [undefined], "an empty range is no histogram");
});

test("limitsOf keeps valid windows and marks the others undefined", () => {
  assert.deepEqual(limitsOf([[0, 1], [2, 1], [0, NaN], "x"], 5), [[0, 1], undefined, undefined, undefined, undefined]);
  assert.deepEqual(limitsOf(undefined, 2), [undefined, undefined]);
});

test("sliderSpan is the histogram's span, widened to hold the window", () => {
  assert.deepEqual(sliderSpan(HIST as any, [195, 2508]), [100, 6116]);
  assert.deepEqual(sliderSpan(HIST as any, [50, 9000]), [50, 9000], "a window set from Python stays reachable");
  assert.deepEqual(sliderSpan(undefined, [2, 3]), [2, 3]);
});

test("sliderStep: 1 for integers, a round thousandth of the span for floats", () => {
  assert.equal(sliderStep([0, 65535], true), 1);
  assert.equal(sliderStep([0, 1], false), 0.001);
  assert.equal(sliderStep([0, 3], false), 0.002);
  assert.equal(sliderStep([0, 7000], false), 5);
  assert.ok(isInteger("uint16") && isInteger("int8") && !isInteger("float32"));
});

test("withLimit moves one end and keeps low < high without editing the trait's value", () => {
  const limits: [number, number][] = [[100, 200], [0, 1]];
  const frozen = JSON.stringify(limits);
  assert.deepEqual(withLimit(limits, 0, 1, 150, 1), [[100, 150], [0, 1]]);
  assert.deepEqual(withLimit(limits, 0, 0, 250, 1), [[250, 251], [0, 1]], "low dragged past high pushes it");
  assert.deepEqual(withLimit(limits, 0, 1, 50, 1), [[49, 50], [0, 1]], "high dragged below low pushes it");
  assert.deepEqual(withLimit(limits, 1, 1, 0, 0.01), [[100, 200], [-0.01, 0]]);
  assert.deepEqual(withLimit(limits, 5, 0, 3, 1), limits, "an unknown channel changes nothing");
  assert.deepEqual(withLimit(limits, 0, 0, NaN, 1), limits);
  assert.equal(JSON.stringify(limits), frozen);
});

test("histogramPath draws each bin on a log scale, the fullest bin at the top", () => {
  const d = histogramPath([0, 9, 99], 30, 10);
  assert.equal(d, "M0 10 L0 10 L10 10 L10 5 L20 5 L20 0 L30 0 L30 10Z");
  assert.equal(histogramPath([], 30, 10), "");
  assert.equal(histogramPath([0, 0], 20, 10), "M0 10 L0 10 L10 10 L10 10 L20 10 L20 10Z", "an empty histogram is flat");
});

test("fraction, formatValue and channel names", () => {
  assert.equal(fraction(150, [100, 200]), 0.5);
  assert.equal(fraction(50, [100, 200]), 0);
  assert.equal(fraction(500, [100, 200]), 1);
  assert.equal(formatValue(2508, true), "2508");
  assert.equal(formatValue(0.016543, false), "0.01654");
  assert.equal(formatValue(3, false), "3");
  assert.equal(formatValue(1.5e-5, false), "1.500e-5");
  assert.equal(channelName("rgb", 1), "Green");
  assert.equal(channelName("composite", 3), "Channel 3");
  assert.equal(channelName("grey", 0), "Intensity");
});

test("throttle: the first call at once, then at most one per period with the latest arguments", async () => {
  const calls: number[] = [];
  const f = throttle((v: number) => calls.push(v), 40);
  f(1);
  f(2);
  f(3);
  assert.deepEqual(calls, [1]);
  await sleep(70);
  assert.deepEqual(calls, [1, 3], "the latest arguments, once");
  f(4);
  f.flush();
  assert.deepEqual(calls, [1, 3, 4]);
  f(5); // within the period of 4: waits
  f.cancel();
  await sleep(60);
  assert.deepEqual(calls, [1, 3, 4], "a cancelled call never runs");
});
