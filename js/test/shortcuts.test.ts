// Unit tests of shortcuts.ts (what a key means, brush size steps, which elements take text) and of the pure helpers
// of panel.ts (feature table, brush limits, feature selection edits).

import assert from "node:assert/strict";
import { test } from "node:test";
import { allFeatures, brushLimits, featureEnabled, featureTable, scaleText, withFeature } from "../src/panel/panel.js";
import type { ShortcutActions } from "../src/panel/shortcuts.js";
import { SHORTCUTS, isEditable, matchShortcut, nextBrushSize } from "../src/panel/shortcuts.js";

// ------------------------------------------------------------------------------------------ nextBrushSize

test("nextBrushSize: steps of 1 below 8, about 15% above", () => {
  const limits = [1, 61] as const;
  assert.equal(nextBrushSize(5, 1, limits), 6);
  assert.equal(nextBrushSize(5, -1, limits), 4);
  assert.equal(nextBrushSize(7, 1, limits), 8);
  assert.equal(nextBrushSize(8, 1, limits), 9); // round(1.2) = 1
  assert.equal(nextBrushSize(10, -1, limits), 8); // round(1.5) = 2
  assert.equal(nextBrushSize(20, 1, limits), 23);
  assert.equal(nextBrushSize(40, -1, limits), 34);
  assert.equal(nextBrushSize(5.4, 1, limits), 6, "a fractional size comes back whole");
});

test("nextBrushSize: stays within the kernel's limits", () => {
  assert.equal(nextBrushSize(1, -1, [1, 61]), 1);
  assert.equal(nextBrushSize(61, 1, [1, 61]), 61);
  assert.equal(nextBrushSize(58, 1, [1, 61]), 61, "a step past the maximum stops at it");
  assert.equal(nextBrushSize(3, -1, [3, 9]), 3);
  assert.equal(nextBrushSize(9, 1, [3, 9]), 9);
  assert.equal(nextBrushSize(100, -1, [1, 61]), 61, "a size beyond the limits comes back within them");
});

test("nextBrushSize: ] walks from the smallest to the largest size and [ back, every step moving", () => {
  const limits = [1, 61] as const;
  const up = [1];
  while (up[up.length - 1] < 61) {
    const next = nextBrushSize(up[up.length - 1], 1, limits);
    assert.ok(next > up[up.length - 1], `stuck at ${next}`);
    up.push(next);
    assert.ok(up.length < 100);
  }
  let size = 61;
  let steps = 0;
  while (size > 1) {
    const next = nextBrushSize(size, -1, limits);
    assert.ok(next < size, `stuck at ${size}`);
    size = next;
    assert.ok(++steps < 100);
  }
  assert.ok(up.length <= 25, `${up.length} key presses from 1 to 61 is too many`);
});

// ------------------------------------------------------------------------------------------ matchShortcut

function key(k: string, mods: { ctrl?: boolean; shift?: boolean; alt?: boolean; meta?: boolean; code?: string } = {}) {
  return {
    key: k,
    code: mods.code ?? "",
    ctrlKey: mods.ctrl ?? false,
    shiftKey: mods.shift ?? false,
    altKey: mods.alt ?? false,
    metaKey: mods.meta ?? false,
  } as KeyboardEvent;
}

/** Actions that record what ran. */
function recorder(helpShown = false) {
  const calls: string[] = [];
  const actions: ShortcutActions = {
    pickClass: (label) => calls.push(`class ${label}`),
    setMode: (mode) => calls.push(`mode ${mode}`),
    brushStep: (direction) => calls.push(`brush ${direction}`),
    undo: () => calls.push("undo"),
    redo: () => calls.push("redo"),
    toggleLive: () => calls.push("live"),
    toggleLayer: (name) => calls.push(`layer ${name}`),
    toggleHelp: (show) => calls.push(`help ${show}`),
    helpVisible: () => helpShown,
  };
  /** What the key does, or undefined if the widget does not handle it. */
  const run = (event: KeyboardEvent): string | undefined => {
    const action = matchShortcut(event, actions);
    if (action === undefined) return undefined;
    const before = calls.length;
    action();
    assert.equal(calls.length, before + 1, "one action per key");
    return calls[calls.length - 1];
  };
  return run;
}

test("matchShortcut: the keys of the help overlay do what it says", () => {
  const run = recorder();
  for (let i = 1; i <= 9; ++i) assert.equal(run(key(String(i))), `class ${i}`);
  assert.equal(run(key("b")), "mode paint");
  assert.equal(run(key("e")), "mode erase");
  assert.equal(run(key("n")), "mode navigate");
  assert.equal(run(key("[")), "brush -1");
  assert.equal(run(key("]")), "brush 1");
  assert.equal(run(key("l")), "live");
  assert.equal(run(key("p")), "layer probabilities");
  assert.equal(run(key("s")), "layer segmentation");
  assert.equal(run(key("u")), "layer uncertainty");
  assert.equal(run(key("?", { shift: true })), "help undefined");
  assert.equal(run(key("B", { shift: true })), "mode paint", "caps lock or shift still picks the tool");
});

test("matchShortcut: undo and redo with Ctrl or Cmd, on any keyboard layout", () => {
  const run = recorder();
  assert.equal(run(key("z", { ctrl: true })), "undo");
  assert.equal(run(key("Z", { ctrl: true, shift: true })), "redo");
  assert.equal(run(key("y", { ctrl: true })), "redo");
  assert.equal(run(key("z", { meta: true })), "undo");
  assert.equal(run(key("я", { ctrl: true, code: "KeyZ" })), "undo", "by physical key on a Cyrillic layout");
  assert.equal(run(key("н", { ctrl: true, code: "KeyY" })), "redo");
});

test("matchShortcut: keys the widget leaves alone", () => {
  const run = recorder();
  for (const event of [
    key("0"),
    key("x"),
    key("Enter"),
    key("F1"),
    key("Escape"), // help hidden
    key("b", { ctrl: true }), // browser / notebook shortcuts
    key("c", { ctrl: true }),
    key("z", { ctrl: true, alt: true }),
    key("b", { alt: true }),
    key("1", { alt: true }),
    key("b", { meta: true }),
  ]) {
    assert.equal(run(event), undefined, `${event.key} ctrl=${event.ctrlKey} alt=${event.altKey} meta=${event.metaKey}`);
  }
});

test("matchShortcut: Escape closes the help only while it is shown", () => {
  assert.equal(recorder(true)(key("Escape")), "help false");
  assert.equal(recorder(false)(key("Escape")), undefined);
});

test("the help overlay lists every key that matchShortcut handles", () => {
  const listed = SHORTCUTS.map(([k]) => k).join(" ");
  for (const k of ["b", "e", "n", "l", "p", "s", "u", "?", "Esc", "[", "]", "Ctrl+Z", "Ctrl+Shift+Z", "Ctrl+Y"]) {
    assert.ok(listed.includes(k), `${k} is missing from the help`);
  }
});

// ------------------------------------------------------------------------------------------ isEditable

function element(tagName: string, props: { type?: string; contentEditable?: boolean; inEditor?: boolean } = {}) {
  return {
    tagName,
    type: props.type,
    isContentEditable: props.contentEditable ?? false,
    closest: (selector: string) => (props.inEditor && selector.includes(".cm-editor") ? {} : null),
  } as unknown as Element;
}

test("isEditable: text fields and editors take keys, other controls do not", () => {
  assert.equal(isEditable(null), false);
  assert.equal(isEditable(element("TEXTAREA")), true);
  assert.equal(isEditable(element("SELECT")), true);
  assert.equal(isEditable(element("INPUT")), true, "an input without a type is text");
  for (const type of ["text", "number", "search", "email", "TEXT"]) assert.equal(isEditable(element("INPUT", { type })), true, type);
  for (const type of ["checkbox", "radio", "range", "button", "color", "submit", "reset"]) {
    assert.equal(isEditable(element("INPUT", { type })), false, type);
  }
  assert.equal(isEditable(element("DIV", { contentEditable: true })), true);
  assert.equal(isEditable(element("DIV", { inEditor: true })), true, "inside a CodeMirror editor");
  assert.equal(isEditable(element("CANVAS")), false);
  assert.equal(isEditable(element("BUTTON")), false);
});

// ------------------------------------------------------------------------------------------ panel.ts helpers

const TABLE = {
  scales: [0.3, 0.7, 1.0, 1.6, 3.5, 5.0, 10.0],
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

test("brushLimits: the kernel's limits, else 1..61", () => {
  assert.deepEqual(brushLimits({ brush_size: { min: 3, max: 31 } }), [3, 31]);
  assert.deepEqual(brushLimits({ brush_size: { min: 1, max: 1 } }), [1, 1]);
  for (const info of [undefined, {}, { brush_size: { min: 0, max: 9 } }, { brush_size: { min: 5, max: 4 } },
    { brush_size: { min: 1.5, max: 9 } }, { brush_size: { min: "1", max: 9 } }]) {
    assert.deepEqual(brushLimits(info), [1, 61], JSON.stringify(info));
  }
  const a = brushLimits({});
  a[0] = 99;
  assert.deepEqual(brushLimits({}), [1, 61], "callers get a copy of the fallback");
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
  assert.deepEqual(on, { features: { gaussian_smoothing: [0.3, 0.7, 1.0], hessian_of_gaussian_eigenvalues: [] } });
  assert.deepEqual(withFeature(on, "gaussian_smoothing", 0.7, true), on, "switching on twice adds it once");
  assert.deepEqual(withFeature(selection, "gaussian_smoothing", 0.3, false).features.gaussian_smoothing, [1.0]);
  assert.deepEqual(withFeature(selection, "laplacian_of_gaussian", 3.5, true).features.laplacian_of_gaussian, [3.5]);
  assert.deepEqual(withFeature(undefined, "gaussian_smoothing", 1, true), { features: { gaussian_smoothing: [1] } });
  assert.equal(JSON.stringify(selection), frozen);

  const table = featureTable({ feature_table: TABLE })!;
  assert.deepEqual(allFeatures(table, true), {
    features: { gaussian_smoothing: TABLE.features[0].scales, hessian_of_gaussian_eigenvalues: TABLE.features[1].scales },
  });
  assert.deepEqual(allFeatures(table, false), { features: { gaussian_smoothing: [], hessian_of_gaussian_eigenvalues: [] } });
  allFeatures(table, true).features.gaussian_smoothing.push(99);
  assert.equal(table.features[0].scales.length, 7, "the table is not shared with the selection");
});
