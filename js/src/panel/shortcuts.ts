// Keyboard shortcuts of one widget: active while the pointer is over the widget or the focus is inside it.
//
// JupyterLab (and Notebook 7) run their command shortcuts from a keydown listener on `document` (bubbling phase), and
// Neuroglancer has its own key bindings (digits toggle layers, ...). We listen on `window` in the capture phase, which
// runs before both, and stop the keys we handle there; the widget's root also carries `data-lm-suppress-shortcuts`
// so that keys typed into the panel's text fields never reach notebook command mode.

import type { LayerName, Mode } from "../protocol.js";
import { BRUSH_SIZE_MAX, BRUSH_SIZE_MIN, MODES } from "../protocol.js";

export interface ShortcutActions {
  pickClass(label: number): void;
  setMode(mode: Mode): void;
  brushStep(direction: 1 | -1): void;
  undo(): void;
  redo(): void;
  toggleLive(): void;
  toggleLayer(name: LayerName): void;
  toggleHelp(show?: boolean): void;
  helpVisible(): boolean;
  /** Shows the whole image, centred. */
  fitView(): void;
  /** Moves the panel under the pointer (else the xy panel) `delta` slices along its normal (volumes). */
  stepSlice(delta: number): void;
}

/** The key that brings the whole image back into view (also Home). */
export const FIT_KEY = "f";
/** Keys that step through the slices of a volume, and by how many slices. */
export const SLICE_KEYS: Readonly<Record<string, number>> = { ",": -1, ".": 1, "<": -10, ">": 10 };

/** The key of each mode, and what the mode does (the panel's mode buttons show them too). */
export const MODE_KEYS: Readonly<Record<Mode, { key: string; title: string; help: string }>> = {
  paint: { key: "b", title: "Brush", help: "brush (paint with the active class)" },
  erase: { key: "e", title: "Eraser", help: "eraser" },
  navigate: { key: "n", title: "Navigate", help: "navigate (the mouse pans and zooms)" },
};

/** The layers a key shows or hides (the panel's layer rows name the keys too). */
export const LAYER_KEYS: Readonly<Partial<Record<LayerName, string>>> = {
  probabilities: "p",
  segmentation: "s",
  uncertainty: "u",
};

/** The shortcut list shown by the help overlay (key, what it does). */
export const SHORTCUTS: ReadonlyArray<readonly [string, string]> = [
  ["1 – 9", "pick class 1 to 9"],
  ...MODES.map((mode) => [MODE_KEYS[mode].key, MODE_KEYS[mode].help] as const),
  ["[  /  ]", "smaller / larger brush"],
  ["Ctrl+Z", "undo"],
  ["Ctrl+Shift+Z  or  Ctrl+Y", "redo"],
  ["l", "live update on / off"],
  [`${FIT_KEY}  or  Home`, "fit: the whole image, centred"],
  [",  /  .", "previous / next slice (volumes; also the wheel)"],
  ["<  /  >", "10 slices back / forward (volumes; also Shift+wheel)"],
  ...Object.entries(LAYER_KEYS).map(([layer, key]) => [key, `show / hide ${layer}`] as const),
  ["?", "show / hide this help"],
  ["Esc", "close this help"],
];

/** True for elements where keys are text input (ours or JupyterLab's editors). */
export function isEditable(el: Element | null): boolean {
  if (el === null) return false;
  const h = el as HTMLElement;
  if (h.isContentEditable) return true;
  const tag = el.tagName;
  if (tag === "TEXTAREA" || tag === "SELECT") return true;
  if (tag === "INPUT") {
    const type = ((el as HTMLInputElement).type || "text").toLowerCase();
    return !["checkbox", "radio", "range", "button", "color", "submit", "reset"].includes(type);
  }
  return el.closest(".cm-editor, .CodeMirror") !== null;
}

/**
 * Next brush size (the footprint's diameter) for `[` / `]`: odd sizes only (from a voxel's centre, where the brush's
 * points are, an odd brush paints exactly its size across; an even one a voxel less), steps of 2 for small brushes,
 * about 15% for larger ones, within [min, max] (by default the protocol's BRUSH_SIZE_MIN and BRUSH_SIZE_MAX, the
 * kernel's limits). An even size (set from Python) goes to the odd size next to it.
 */
export function nextBrushSize(
  size: number,
  direction: 1 | -1,
  [min, max]: readonly [number, number] = [BRUSH_SIZE_MIN, BRUSH_SIZE_MAX],
): number {
  const lo = min % 2 === 1 ? min : min + 1;
  const hi = max % 2 === 1 ? max : max - 1;
  const whole = Math.round(size);
  let next: number;
  if (whole % 2 === 0) {
    next = whole + direction;
  } else {
    const step = whole < 9 ? 2 : Math.max(2, 2 * Math.round(whole * 0.075));
    next = whole + direction * step;
  }
  return Math.min(hi, Math.max(lo, next));
}

/**
 * Decides what a key event means; returns the action to run, or undefined if the widget does not handle it.
 * Exported for tests.
 */
export function matchShortcut(event: KeyboardEvent, actions: ShortcutActions): (() => void) | undefined {
  const key = event.key;
  const ctrl = event.ctrlKey || event.metaKey;
  if (ctrl && !event.altKey) {
    const k = key.toLowerCase();
    if (k === "z" || event.code === "KeyZ") return event.shiftKey ? () => actions.redo() : () => actions.undo();
    if (k === "y" || event.code === "KeyY") return () => actions.redo();
    return undefined;
  }
  if (event.altKey || event.metaKey) return undefined;
  if (key === "Escape") return actions.helpVisible() ? () => actions.toggleHelp(false) : undefined;
  if (key === "?") return () => actions.toggleHelp();
  if (key === "Home") return () => actions.fitView();
  if (key in SLICE_KEYS) return () => actions.stepSlice(SLICE_KEYS[key]);
  if (key.length === 1 && key >= "1" && key <= "9") return () => actions.pickClass(Number(key));
  const k = key.toLowerCase();
  const mode = MODES.find((m) => MODE_KEYS[m].key === k);
  if (mode !== undefined) return () => actions.setMode(mode);
  const layer = (Object.keys(LAYER_KEYS) as LayerName[]).find((name) => LAYER_KEYS[name] === k);
  if (layer !== undefined) return () => actions.toggleLayer(layer);
  switch (k) {
    case "[":
      return () => actions.brushStep(-1);
    case "]":
      return () => actions.brushStep(1);
    case "l":
      return () => actions.toggleLive();
    case FIT_KEY:
      return () => actions.fitView();
  }
  return undefined;
}

/**
 * Installs the shortcuts of the widget whose root element is `root`. Returns a function that removes them.
 */
export function installShortcuts(root: HTMLElement, actions: ShortcutActions): () => void {
  let pointerInside = false;
  root.setAttribute("data-lm-suppress-shortcuts", "true");
  if (!root.hasAttribute("tabindex")) root.tabIndex = 0;

  const onEnter = () => {
    pointerInside = true;
  };
  const onLeave = () => {
    pointerInside = false;
  };
  // Clicking into the widget gives it the keyboard focus (unless the click is on a control that takes it).
  const onPointerDown = (event: PointerEvent) => {
    const target = event.target as Element | null;
    if (target !== null && (isEditable(target) || target.closest("button, input, select, a") !== null)) return;
    if (!root.contains(document.activeElement)) root.focus({ preventScroll: true });
  };

  const applies = (event: KeyboardEvent): boolean => {
    if (!root.isConnected) return false;
    const target = event.target as Element | null;
    const active = document.activeElement;
    const focusInside = target !== null && root.contains(target);
    if (focusInside) return !isEditable(target);
    // Pointer over the widget while the focus is elsewhere: only when that focus is not a text field or an editor
    // (typing in a notebook cell must keep working while the mouse rests on the viewer).
    if (pointerInside) {
      const otherWidget = active?.closest(".ilastik-widget");
      if (otherWidget && otherWidget !== root) return false; // another widget has the focus: its keys
      return !isEditable(active) && !isEditable(target);
    }
    return false;
  };

  const onKeyDown = (event: KeyboardEvent) => {
    if (event.defaultPrevented || !applies(event)) return;
    const action = matchShortcut(event, actions);
    if (action === undefined) return;
    event.preventDefault();
    event.stopPropagation();
    event.stopImmediatePropagation();
    action();
  };
  // keyup/keypress of handled keys must not reach JupyterLab either.
  const onKeyOther = (event: KeyboardEvent) => {
    if (!applies(event)) return;
    if (matchShortcut(event, actions) !== undefined) event.stopPropagation();
  };

  root.addEventListener("pointerenter", onEnter);
  root.addEventListener("pointerleave", onLeave);
  root.addEventListener("pointermove", onEnter, { passive: true });
  root.addEventListener("pointerdown", onPointerDown, true);
  window.addEventListener("keydown", onKeyDown, true);
  window.addEventListener("keyup", onKeyOther, true);
  window.addEventListener("keypress", onKeyOther, true);
  return () => {
    root.removeEventListener("pointerenter", onEnter);
    root.removeEventListener("pointerleave", onLeave);
    root.removeEventListener("pointermove", onEnter);
    root.removeEventListener("pointerdown", onPointerDown, true);
    window.removeEventListener("keydown", onKeyDown, true);
    window.removeEventListener("keyup", onKeyOther, true);
    window.removeEventListener("keypress", onKeyOther, true);
  };
}
