"""Drives one IlastikWidget in a JupyterLab page through the contract's test hooks.

``window.__ilastikWidgets[widget_id]`` gives ``voxelToScreen``, ``panelRect`` and ``isIdle``; the panel's controls
carry ``data-testid``s; the kernel is read with ``LabPage.kernel_eval``. Used by the e2e tests and by
``benchmarks/bench_browser.py``.
"""

from __future__ import annotations

import time
from collections.abc import Sequence

import numpy as np
from e2e_harness import HarnessError, LabPage


def hex_rgb(color: str) -> np.ndarray:
    color = color.lstrip("#")
    return np.array([int(color[i : i + 2], 16) for i in (0, 2, 4)], dtype=float)


def dist(a, b) -> np.ndarray:
    """Euclidean distance along the last axis (RGB colours, or voxel coordinates)."""
    return np.linalg.norm(np.asarray(a, float) - np.asarray(b, float), axis=-1)


def grid(step: int, shape=(256, 256), offset: int | None = None) -> np.ndarray:
    """Voxels (y, x) on a regular grid with ``step``."""
    o = step // 2 if offset is None else offset
    yy, xx = np.mgrid[o : shape[0] : step, o : shape[1] : step]
    return np.stack([yy.ravel(), xx.ravel()], 1)


def classify(pixels: np.ndarray, colors: np.ndarray) -> np.ndarray:
    """Class (1-based) whose colour explains each pixel best, as a non-negative mix of the class colours."""
    coef, *_ = np.linalg.lstsq(colors.T, pixels.T, rcond=None)  # (K, N)
    return np.argmax(coef, axis=0) + 1


class WidgetDriver:
    def __init__(self, lab: LabPage, var: str = "w", *, timeout: float = 120.0):
        self.lab, self.page, self.var = lab, lab.page, var
        self.timeout = timeout
        self.id = lab.kernel_eval(f"{var}.widget_id")
        if not self.id:
            raise HarnessError(f"{var}.widget_id is empty")
        self.root = self.page.locator(f".ilastik-widget[data-widget-id='{self.id}']")
        self.root.wait_for(state="attached", timeout=timeout * 1000)
        lab.wait_for(
            lambda: self.page.evaluate("(id) => !!(window.__ilastikWidgets && window.__ilastikWidgets[id])", self.id),
            timeout,
            f"window.__ilastikWidgets[{self.id!r}]",
        )

    # ---- page-side hooks ---------------------------------------------------------------------------------
    def js(self, body: str, arg=None):
        """Evaluate ``body`` (a JS expression using ``h``, the handle, and ``arg``) in the page."""
        return self.page.evaluate(
            f"([id, arg]) => {{ const h = window.__ilastikWidgets[id]; return ({body}); }}", [self.id, arg]
        )

    def is_idle(self) -> bool:
        return bool(self.js("h.isIdle()"))

    def panel_rect(self, plane: str = "xy") -> dict:
        """Client rectangle of the cross-section panel showing ``plane`` ("xy", "xz", "yz")."""
        return self.js(
            "(() => { const r = h.panelRect(arg); return {x: r.x, y: r.y, width: r.width, height: r.height}; })()",
            plane,
        )

    def to_screen(self, points, plane: str = "xy") -> np.ndarray:
        """(N, ndim) voxel coordinates in array index order -> (N, 2) client (x, y) on the panel showing ``plane``."""
        pts = np.asarray(points, float).reshape(-1, np.shape(points)[-1]).tolist()
        return np.asarray(self.js("arg[0].map((p) => h.voxelToScreen(p, arg[1]))", [pts, plane]), float).reshape(-1, 2)

    def scroll_into_view(self) -> None:
        """Bring the whole viewer panel into the viewport (screen reads and mouse input need it there)."""
        r = self.panel_rect()
        vh = self.page.viewport_size["height"]
        if r["y"] < 0 or r["y"] + r["height"] > vh:
            self.root.evaluate("(el) => el.scrollIntoView({block: 'start'})")
            self.lab.pause(0.3)

    # ---- kernel ------------------------------------------------------------------------------------------
    def k(self, expr: str):
        return self.lab.kernel_eval(expr.replace("{w}", self.var))

    def kexec(self, code: str) -> str:
        return self.lab.kernel_exec(code.replace("{w}", self.var))

    # ---- waiting -----------------------------------------------------------------------------------------
    def settle(self, timeout: float | None = None, quiet: float = 0.6, pixels: bool = True) -> float:
        """Kernel done (training and chunk serving), browser idle for ``quiet`` seconds, and (if ``pixels``) two
        screenshots of the panel alike. Without ``pixels`` no screenshot is taken (they disturb a screencast).
        Returns the wall-clock time (``time.time()``) at which the browser's final idle period began."""
        timeout = timeout or self.timeout
        deadline = time.monotonic() + timeout
        self.scroll_into_view()
        self.kexec(f"{{w}}.wait(timeout={timeout})")
        self.lab.wait_for(lambda: not self.k("{w}.busy"), timeout, "the kernel to finish (w.busy False)")
        rect = self.panel_rect()
        prev = None
        idle_since = None
        while True:
            idle = self.is_idle()
            now = time.monotonic()
            if idle:
                idle_since = idle_since or now
                if now - idle_since >= quiet and not pixels:
                    if not self.k("{w}.busy"):
                        return time.time() - (time.monotonic() - idle_since)
                elif now - idle_since >= quiet:
                    cur = self.lab.screenshot_array(rect)
                    settled = prev is not None and prev.shape == cur.shape and np.abs(prev.astype(int) - cur).max() <= 3
                    if settled and not self.k("{w}.busy"):
                        return time.time() - (time.monotonic() - idle_since)
                    prev = cur
            else:
                idle_since, prev = None, None
            if now > deadline:
                raise HarnessError(
                    f"widget {self.id} did not settle in {timeout} s (idle={idle})\n"
                    + "\n".join(self.lab.console[-20:])
                )
            self.lab.pause(0.15)

    # ---- pixels ------------------------------------------------------------------------------------------
    def sample(self, points, shot: np.ndarray | None = None, plane: str = "xy") -> np.ndarray:
        """RGB (N, 3) of the screen at the given voxels on the panel showing ``plane`` (one viewport screenshot)."""
        xy = np.rint(self.to_screen(points, plane)).astype(int)
        shot = self.lab.screenshot_array() if shot is None else shot
        h, w = shot.shape[:2]
        if (xy[:, 0] < 0).any() or (xy[:, 1] < 0).any() or (xy[:, 0] >= w).any() or (xy[:, 1] >= h).any():
            raise HarnessError("a sampled voxel is outside the viewport")
        return shot[xy[:, 1], xy[:, 0]].astype(float)

    def class_colors(self) -> np.ndarray:
        return np.stack([hex_rgb(c["color"]) for c in self.k("{w}.classes")])

    # ---- input -------------------------------------------------------------------------------------------
    def hover(self) -> None:
        r = self.panel_rect()
        self.page.mouse.move(r["x"] + 12, r["y"] + r["height"] / 2)

    def press(self, key: str) -> None:
        self.hover()
        self.page.keyboard.press(key)

    def drag(self, points: Sequence[Sequence[float]], steps: int = 4, plane: str = "xy") -> None:
        """Left-drag through the given voxels (array index order) on the panel showing ``plane``."""
        xy = self.to_screen(points, plane)
        m = self.page.mouse
        m.move(*xy[0])
        m.down()
        for p in xy[1:]:
            m.move(*p, steps=steps)
        m.up()

    def testid(self, name: str):
        return self.root.locator(f"[data-testid='{name}']")
