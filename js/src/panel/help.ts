// The help overlay: the keyboard shortcuts (shortcuts.ts) and what the mouse does.

import { h } from "./dom.js";
import { SHORTCUTS } from "./shortcuts.js";

/** The help overlay listing the keyboard shortcuts. */
export function createHelpOverlay(onClose: () => void): HTMLElement {
  const rows = SHORTCUTS.map(([key, what]) => h("tr", {}, h("td", {}, h("kbd", {}, key)), h("td", {}, what)));
  const close = h("button", { type: "button", class: "ilastik-icon", title: "Close (Esc)", onclick: onClose }, "✕");
  const overlay = h("div", { class: "ilastik-help", testid: "help-overlay", role: "dialog", "aria-label": "Keyboard shortcuts" },
    h("div", { class: "ilastik-help-box" },
      h("div", { class: "ilastik-help-title" }, "Keyboard shortcuts", close),
      h("p", {}, "Keys work while the mouse is over the widget or it has the focus. Left-drag paints (brush) or " +
        "erases (eraser); right-drag pans in every mode, left-drag too in navigate mode. On a 2D image the wheel " +
        "zooms; on a volume it steps through slices and Ctrl+wheel zooms. In navigate mode a click on an object " +
        "(after “Find objects”) shows its row. The readout at the bottom left names the pixel under the pointer " +
        "in array order (z, y, x) and its value."),
      h("table", {}, h("tbody", {}, ...rows))));
  overlay.style.display = "none";
  overlay.addEventListener("click", (e) => {
    if (e.target === overlay) onClose();
  });
  return overlay;
}
