"""A real JupyterLab in headless Chromium, driven by Playwright (sync API).

Used by the e2e tests (through ``conftest.py``) and by ``benchmarks/bench_browser.py``. Nothing here depends on
pytest. Typical use::

    with LabServer() as server, Browser() as browser:
        server.write_notebook("x.ipynb", ["import numpy as np", "w = ...; w"])
        lab = browser.open_notebook(server, "x.ipynb")
        lab.run_all(done_flag=None)     # or the name of a global the last cell sets
        print(lab.kernel_json("import json; print(json.dumps(w.classes))"))
        pixels = lab.screenshot_array({"x": 0, "y": 0, "width": 400, "height": 300})   # RGB uint8
"""

from __future__ import annotations

import io
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[1]
ARTIFACTS = HERE / "artifacts"

CHROMIUM = os.environ.get("ILASTIK_WIDGET_CHROMIUM", "/usr/bin/chromium")
# Flags verified on these machines: WebGL2 draws through SwiftShader without a GPU.
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--use-angle=swiftshader",
    "--enable-unsafe-swiftshader",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
    "--disable-dev-shm-usage",
]

# JupyterLab user settings written into each isolated settings dir: no news/update toasts over the widget, every
# cell rendered (no virtual scrolling), so the widget's DOM exists wherever it is on the page.
LAB_SETTINGS = {
    "@jupyterlab/apputils-extension/notification.jupyterlab-settings": {
        "fetchNews": "false",
        "checkForUpdates": False,
        "doNotDisturbMode": True,
    },
    "@jupyterlab/notebook-extension/tracker.jupyterlab-settings": {"windowingMode": "none"},
}


# SwiftShader's chatter in the browser console, left out of the logs kept for failures.
_NOISE = re.compile(r"GL Driver Message|performance warning|GPU stall")


class HarnessError(RuntimeError):
    pass


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def code_cell(source: str) -> dict:
    return {"cell_type": "code", "execution_count": None, "metadata": {}, "outputs": [], "source": source}


def make_notebook(cells: Sequence[str]) -> dict:
    return {
        "cells": [code_cell(c) for c in cells],
        "metadata": {
            "kernelspec": {"display_name": "Python 3 (ipykernel)", "language": "python", "name": "python3"},
            "language_info": {"name": "python"},
        },
        "nbformat": 4,
        "nbformat_minor": 5,
    }


class LabServer:
    """``jupyter lab`` on a free port, in a temporary root dir with its own settings, workspaces and runtime dirs."""

    def __init__(self, *, startup_timeout: float = 90.0, keep: bool = False):
        self.port = free_port()
        self.base = tempfile.mkdtemp(prefix="ilastik-e2e-")
        self.root = Path(self.base) / "root"
        self.startup_timeout = startup_timeout
        self.keep = keep
        self.proc: subprocess.Popen | None = None
        ARTIFACTS.mkdir(parents=True, exist_ok=True)
        self.log_path = ARTIFACTS / f"jupyterlab-{self.port}.log"

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> LabServer:
        base = Path(self.base)
        settings = base / "settings"
        for name, value in LAB_SETTINGS.items():
            ext, fname = name.rsplit("/", 1)
            (settings / ext).mkdir(parents=True, exist_ok=True)
            (settings / ext / fname).write_text(json.dumps(value))
        for d in ("root", "workspaces", "runtime", "config", "ipython"):
            (base / d).mkdir(exist_ok=True)
        env = dict(os.environ)
        env.update(
            JUPYTERLAB_SETTINGS_DIR=str(settings),
            JUPYTERLAB_WORKSPACES_DIR=str(base / "workspaces"),
            JUPYTER_RUNTIME_DIR=str(base / "runtime"),
            JUPYTER_CONFIG_DIR=str(base / "config"),
            IPYTHONDIR=str(base / "ipython"),
            PYTHONUNBUFFERED="1",
        )
        # The kernel imports the repository's package even without an install (the e2e tests still need its
        # built JS, which only `pip install -e .` makes).
        env["PYTHONPATH"] = os.pathsep.join(p for p in (str(REPO), env.get("PYTHONPATH", "")) if p)
        cmd = [
            sys.executable,
            "-m",
            "jupyterlab",
            "--no-browser",
            "--ip=127.0.0.1",
            f"--port={self.port}",
            "--port-retries=0",
            "--IdentityProvider.token=",
            "--ServerApp.password=",
            "--ServerApp.disable_check_xsrf=True",
            "--LabApp.expose_app_in_browser=True",
            "--JupyterNotebookApp.expose_app_in_browser=True",
            "--allow-root",
            f"--ServerApp.root_dir={self.root}",
            "--LabApp.news_url=",
            "--LabApp.check_for_updates_class=jupyterlab.NeverCheckForUpdate",
        ]
        self._log = open(self.log_path, "w")  # noqa: SIM115 (closed in stop())
        self.proc = subprocess.Popen(
            cmd, stdout=self._log, stderr=subprocess.STDOUT, env=env, start_new_session=True, stdin=subprocess.DEVNULL
        )
        deadline = time.monotonic() + self.startup_timeout
        while True:
            if self.proc.poll() is not None:
                raise HarnessError(f"jupyter lab exited with {self.proc.returncode}:\n{self.log_tail()}")
            try:
                with urllib.request.urlopen(f"{self.url}/api/status", timeout=2) as r:
                    if r.status == 200:
                        break
            except OSError:
                pass
            if time.monotonic() > deadline:
                self.stop()
                raise HarnessError(f"jupyter lab did not answer within {self.startup_timeout} s:\n{self.log_tail()}")
            time.sleep(0.25)
        return self

    def log_tail(self, n: int = 60) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-n:])
        except OSError:
            return ""

    def write_notebook(self, name: str, cells: Sequence[str]) -> Path:
        path = self.root / name
        path.write_text(json.dumps(make_notebook(cells), indent=1))
        return path

    def copy_in(self, src: Path, name: str | None = None) -> Path:
        dst = self.root / (name or Path(src).name)
        shutil.copyfile(src, dst)
        return dst

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            try:
                os.killpg(self.proc.pid, signal.SIGTERM)
                self.proc.wait(timeout=15)
            except (subprocess.TimeoutExpired, ProcessLookupError):
                try:
                    os.killpg(self.proc.pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
                self.proc.wait(timeout=5)
        self.proc = None
        if getattr(self, "_log", None):
            self._log.close()
        if not self.keep:
            shutil.rmtree(self.base, ignore_errors=True)

    def __enter__(self) -> LabServer:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()


class Browser:
    """Headless Chromium (the system's /usr/bin/chromium) through Playwright."""

    def __init__(self, viewport: tuple[int, int] = (1600, 1200)):
        self.viewport = viewport
        self._pw = None
        self.browser = None

    def start(self) -> Browser:
        if not Path(CHROMIUM).exists():
            raise HarnessError(f"Chromium not found at {CHROMIUM}: run `bash .ci/install` (apt-get install chromium)")
        from playwright.sync_api import sync_playwright

        self._pw = sync_playwright().start()
        self.browser = self._pw.chromium.launch(executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS)
        return self

    def stop(self) -> None:
        if self.browser is not None:
            self.browser.close()
            self.browser = None
        if self._pw is not None:
            self._pw.stop()
            self._pw = None

    def __enter__(self) -> Browser:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    def open_notebook(self, server: LabServer, name: str, *, timeout: float = 120.0, frontend: str = "lab") -> LabPage:
        """Open ``name`` in JupyterLab (``frontend="lab"``) or Notebook 7 (``"notebook"``)."""
        context = self.browser.new_context(
            viewport={"width": self.viewport[0], "height": self.viewport[1]}, device_scale_factor=1
        )
        page = context.new_page()
        lab = LabPage(page, name)
        page.on("console", lambda m: None if _NOISE.search(m.text) else lab.console.append(f"[{m.type}] {m.text}"))
        page.on("pageerror", lambda e: lab.console.append(f"[pageerror] {e}\n{getattr(e, 'stack', '') or ''}"))
        page.add_init_script(_FIND_PANEL)
        url = f"{server.url}/lab/tree/{name}?reset" if frontend == "lab" else f"{server.url}/notebooks/{name}"
        page.goto(url, wait_until="domcontentloaded", timeout=timeout * 1000)
        lab.wait_kernel_idle(timeout=timeout)
        if frontend == "lab":
            # More room for the widget: no file browser on the left.
            page.evaluate("() => window.jupyterapp.shell.collapseLeft()")
        return lab


# JS run in the page: the notebook panel holding `path`, and its kernel.
_FIND_PANEL = """
window.__findPanel = function (path) {
  const app = window.jupyterapp;
  if (!app || !app.shell) return null;
  for (const w of app.shell.widgets('main')) {
    if (w.context && w.context.path === path && w.sessionContext) return w;
  }
  return null;
}
"""


class LabPage:
    """One notebook open in JupyterLab in its own browser context."""

    def __init__(self, page, path: str):
        self.page = page
        self.path = path
        self.console: list[str] = []

    # ---- kernel ----------------------------------------------------------------------------------------------
    def kernel_status(self) -> str | None:
        return self.page.evaluate(
            """(path) => { const p = window.__findPanel(path);
               const k = p && p.sessionContext.session && p.sessionContext.session.kernel;
               return k ? k.status : null; }""",
            self.path,
        )

    def wait_kernel_idle(self, timeout: float = 120.0) -> None:
        self.wait_for(lambda: self.kernel_status() == "idle", timeout, "the notebook's kernel to be idle")

    def kernel_exec(self, code: str, timeout: float = 120.0) -> str:
        """Run ``code`` in the notebook's kernel (queued after running cells); return its stdout/result text.

        Raises HarnessError with the traceback if the code raises."""
        res = self.page.evaluate(
            """async ([path, code]) => {
              const p = window.__findPanel(path);
              const k = p && p.sessionContext.session && p.sessionContext.session.kernel;
              if (!k) return {out: '', err: 'no kernel for ' + path};
              const fut = k.requestExecute({code, silent: false, store_history: false, stop_on_error: false});
              let out = '', err = null;
              fut.onIOPub = (msg) => {
                const t = msg.header.msg_type, c = msg.content;
                if (t === 'stream') out += c.text;
                else if (t === 'execute_result') out += (c.data['text/plain'] || '') + '\\n';
                else if (t === 'error') err = c.ename + ': ' + c.evalue + '\\n' + (c.traceback || []).join('\\n');
              };
              await fut.done;
              return {out, err};
            }""",
            [self.path, code],
        )
        if res["err"]:
            raise HarnessError(f"kernel code failed:\n{code}\n---\n{_strip_ansi(res['err'])}")
        return res["out"]

    def kernel_json(self, code: str, timeout: float = 120.0) -> Any:
        """Run ``code``; the last line it prints must be JSON, which is returned parsed."""
        out = self.kernel_exec(code, timeout=timeout).strip().splitlines()
        if not out:
            raise HarnessError(f"kernel code printed nothing:\n{code}")
        return json.loads(out[-1])

    def kernel_eval(self, expr: str) -> Any:
        """JSON value of a Python expression evaluated in the kernel."""
        return self.kernel_json(f"import json as _j; print(_j.dumps({expr}))")

    # ---- notebook --------------------------------------------------------------------------------------------
    def run_all(self, timeout: float = 300.0, done_flag: str | None = "_E2E_DONE") -> None:
        """Run all cells as a user would (the notebook's Run All), wait until they finished, fail on any error.

        If ``done_flag`` is given, the run is complete once the kernel has that global (the last cell sets it)."""
        self.page.evaluate("() => window.jupyterapp.commands.execute('notebook:run-all-cells')")
        deadline = time.monotonic() + timeout
        # A probe queued after the cells returns when they have run (JupyterLab sends them in order).
        self.pause(0.5)
        probe = "print(%r in globals())" % (done_flag or "_")
        while True:
            out = self.kernel_exec(probe, timeout=timeout).strip()
            errors = self.cell_errors()
            if errors:
                raise HarnessError("notebook cell failed:\n" + "\n\n".join(errors))
            if done_flag is None or out == "True":
                return
            if time.monotonic() > deadline:
                raise HarnessError(f"notebook {self.path} did not finish in {timeout} s ({done_flag}={out})")
            self.pause(0.5)

    def run_cell(self, index: int) -> None:
        """Run one cell as a user would (select it, Run Selected Cell); returns without waiting for it."""
        self.page.evaluate(
            """([path, i]) => { const p = window.__findPanel(path);
               p.content.activeCellIndex = i;
               p.content.activeCell.node.scrollIntoView({block: 'start'});
               window.jupyterapp.commands.execute('notebook:run-cell'); }""",
            [self.path, index],
        )

    def cell_errors(self) -> list[str]:
        """Error outputs of the notebook's cells (from the notebook model, not the DOM)."""
        errs = self.page.evaluate(
            """(path) => { const p = window.__findPanel(path); if (!p) return [];
               const out = [];
               for (const cell of p.content.widgets) {
                 if (cell.model.type !== 'code') continue;
                 for (const o of cell.model.outputs.toJSON()) {
                   if (o.output_type === 'error')
                     out.push(o.ename + ': ' + o.evalue + '\\n' + (o.traceback || []).join('\\n'));
                 }
               }
               return out; }""",
            self.path,
        )
        return [_strip_ansi(e) for e in errs]

    # ---- waiting, pixels ---------------------------------------------------------------------------------------
    def wait_for(self, cond: Callable[[], Any], timeout: float, what: str, interval: float = 0.2) -> Any:
        deadline = time.monotonic() + timeout
        last_exc = None
        while True:
            try:
                v = cond()
                if v:
                    return v
            except HarnessError:
                raise
            except Exception as e:
                last_exc = e
            if time.monotonic() > deadline:
                tail = "\n".join(self.console[-30:])
                raise HarnessError(
                    f"timed out after {timeout} s waiting for {what}"
                    + (f" (last error: {last_exc})" if last_exc else "")
                    + (f"\nbrowser console:\n{tail}" if tail else "")
                )
            self.pause(interval)

    def pause(self, seconds: float) -> None:
        """Sleep while Playwright keeps dispatching page events (console, screencast frames)."""
        self.page.wait_for_timeout(seconds * 1000)

    def screenshot_array(self, rect: dict | None = None) -> np.ndarray:
        """RGB uint8 array of the page (or of ``rect`` = {x, y, width, height} in CSS pixels)."""
        from PIL import Image

        clip = None
        if rect is not None:
            clip = {k: float(rect[k]) for k in ("x", "y", "width", "height")}
        png = self.page.screenshot(clip=clip, animations="disabled", caret="hide")
        return np.asarray(Image.open(io.BytesIO(png)).convert("RGB"))

    def save_screenshot(self, name: str, rect: dict | None = None) -> Path:
        ARTIFACTS.mkdir(parents=True, exist_ok=True)
        path = ARTIFACTS / name
        clip = {k: float(rect[k]) for k in ("x", "y", "width", "height")} if rect else None
        self.page.screenshot(path=str(path), clip=clip)
        return path

    def close(self) -> None:
        """Shut the notebook's kernel down (frees its memory) and close the browser context."""
        try:
            self.page.evaluate(
                """async (path) => { const p = window.__findPanel(path);
                                  if (p) await p.sessionContext.shutdown(); }""",
                self.path,
            )
        except Exception:
            pass
        finally:
            self.page.context.close()


class Screencast:
    """Frames of the page as Chromium paints them (CDP Page.startScreencast), each with the browser's wall-clock
    time (seconds since the epoch, the clock of ``time.time()``). Frames arrive while Playwright waits
    (``LabPage.pause``/``wait_for``), and only when the screen changes."""

    def __init__(self, page, quality: int = 90, scale: float = 1.0):
        self.page = page
        self.quality = quality
        # Frames at `scale` times the viewport's size: encoding every frame costs the page CPU time, a quarter at 0.5
        self.scale = scale
        self.frames: list[tuple[float, str]] = []
        self.cdp = page.context.new_cdp_session(page)
        self.cdp.on("Page.screencastFrame", self._on_frame)
        self.running = False

    def _on_frame(self, params) -> None:
        if self.running:
            self.frames.append((float(params["metadata"]["timestamp"]), params["data"]))
        try:
            self.cdp.send("Page.screencastFrameAck", {"sessionId": params["sessionId"]})
        except Exception:
            pass

    def start(self) -> None:
        vp = self.page.viewport_size
        self.frames = []
        self.running = True
        self.cdp.send(
            "Page.startScreencast",
            {
                "format": "jpeg",
                "quality": self.quality,
                "maxWidth": round(vp["width"] * self.scale),
                "maxHeight": round(vp["height"] * self.scale),
                "everyNthFrame": 1,
            },
        )

    def stop(self) -> None:
        self.running = False
        self.cdp.send("Page.stopScreencast")

    def decoded(self) -> list[tuple[float, np.ndarray]]:
        """The frames at `scale` times the viewport's size (pixel (x, y) of the page at (x, y) * scale); Chromium
        sends other sizes while a page.screenshot runs: dropped."""
        import base64

        from PIL import Image

        vp = self.page.viewport_size
        size = (round(vp["height"] * self.scale), round(vp["width"] * self.scale))
        out = []
        for t, d in self.frames:
            a = np.asarray(Image.open(io.BytesIO(base64.b64decode(d))).convert("RGB"))
            if a.shape[:2] == size:
                out.append((t, a))
        return out


def _strip_ansi(s: str) -> str:
    return re.sub(r"\x1b\[[0-9;]*m", "", s)
