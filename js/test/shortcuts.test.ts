// Unit tests of panel/shortcuts.ts: what a key means, brush size steps, which elements take text.

import assert from "node:assert/strict";
import { test } from "node:test";
import type { ShortcutActions } from "../src/panel/shortcuts.js";
import {
  FIT_KEY,
  LAYER_KEYS,
  MODE_KEYS,
  SHORTCUTS,
  SLICE_KEYS,
  isEditable,
  matchShortcut,
  nextBrushSize,
} from "../src/panel/shortcuts.js";
import { BRUSH_SIZE_MAX, BRUSH_SIZE_MIN, LAYER_NAMES, MODES } from "../src/protocol.js";

// ------------------------------------------------------------------------------------------ nextBrushSize

test("nextBrushSize: odd sizes, steps of 2 below 9, about 15% above", () => {
  const limits = [1, 61] as const;
  assert.equal(nextBrushSize(5, 1, limits), 7);
  assert.equal(nextBrushSize(5, -1, limits), 3);
  assert.equal(nextBrushSize(7, 1, limits), 9);
  assert.equal(nextBrushSize(9, 1, limits), 11);
  assert.equal(nextBrushSize(21, 1, limits), 25); // 2 * round(1.575)
  assert.equal(nextBrushSize(41, -1, limits), 35); // 2 * round(3.075)
  assert.equal(nextBrushSize(6, 1, limits), 7, "an even size set from Python goes to the odd size above");
  assert.equal(nextBrushSize(6, -1, limits), 5, "... or below");
  assert.equal(nextBrushSize(5.4, 1, limits), 7, "a fractional size comes back whole and odd");
});

test("nextBrushSize: stays within the kernel's limits, on odd sizes", () => {
  assert.equal(nextBrushSize(1, -1, [1, 61]), 1);
  assert.equal(nextBrushSize(61, 1, [1, 61]), 61);
  assert.equal(nextBrushSize(57, 1, [1, 61]), 61, "a step past the maximum stops at it");
  assert.equal(nextBrushSize(3, -1, [3, 9]), 3);
  assert.equal(nextBrushSize(9, 1, [3, 9]), 9);
  assert.equal(nextBrushSize(9, 1, [2, 10]), 9, "even limits: the odd size within them");
  assert.equal(nextBrushSize(3, -1, [2, 10]), 3);
  assert.equal(nextBrushSize(100, -1, [1, 61]), 61, "a size beyond the limits comes back within them");
});

test("nextBrushSize: by default within the protocol's brush sizes, the kernel's", () => {
  assert.equal(nextBrushSize(BRUSH_SIZE_MIN, -1), BRUSH_SIZE_MIN);
  assert.equal(nextBrushSize(BRUSH_SIZE_MAX, 1), BRUSH_SIZE_MAX);
  assert.equal(nextBrushSize(BRUSH_SIZE_MAX + 40, -1), BRUSH_SIZE_MAX);
  assert.equal(nextBrushSize(5, 1), 7);
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
  assert.ok(up.every((v) => v % 2 === 1), `an even size on the way: ${up.join(" ")}`);
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
    fitView: () => calls.push("fit"),
    stepSlice: (delta) => calls.push(`slice ${delta}`),
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
  assert.equal(run(key("f")), "fit");
  assert.equal(run(key("Home")), "fit");
  assert.equal(run(key(",")), "slice -1");
  assert.equal(run(key(".")), "slice 1");
  assert.equal(run(key("<", { shift: true })), "slice -10");
  assert.equal(run(key(">", { shift: true })), "slice 10");
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

test("every mode has a key, every layer key names a layer of the protocol, and no two keys are one", () => {
  const run = recorder();
  for (const mode of MODES) assert.equal(run(key(MODE_KEYS[mode].key)), `mode ${mode}`);
  for (const [layer, k] of Object.entries(LAYER_KEYS)) {
    assert.ok((LAYER_NAMES as readonly string[]).includes(layer), layer);
    assert.equal(run(key(k!)), `layer ${layer}`);
  }
  const keys = [
    ...MODES.map((m) => MODE_KEYS[m].key),
    ...Object.values(LAYER_KEYS),
    ...Object.keys(SLICE_KEYS),
    FIT_KEY,
    "l",
    "[",
    "]",
    "?",
  ];
  assert.equal(new Set(keys).size, keys.length, keys.join(" "));
});

test("the help overlay lists every key that matchShortcut handles", () => {
  const listed = SHORTCUTS.map(([k]) => k).join(" ");
  for (const k of ["b", "e", "n", "l", "p", "s", "u", "?", "Esc", "[", "]", "Ctrl+Z", "Ctrl+Shift+Z", "Ctrl+Y", "f",
    "Home", ",", ".", "<", ">"]) {
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
