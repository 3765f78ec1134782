"""``ilastik-widget demo --no-browser --port P`` starts JupyterLab with the quickstart open, in a working copy."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time

from e2e_harness import REPO, free_port


def test_demo_opens_the_quickstart_in_jupyterlab(browser, tmp_path):
    port = free_port()
    env = dict(
        os.environ,
        PYTHONPATH=os.pathsep.join(p for p in (str(REPO), os.environ.get("PYTHONPATH")) if p),
        JUPYTER_RUNTIME_DIR=str(tmp_path / "runtime"),
        JUPYTERLAB_WORKSPACES_DIR=str(tmp_path / "ws"),
    )
    log = tmp_path / "demo.log"
    with open(log, "w") as out:
        proc = subprocess.Popen(
            [
                sys.executable,
                "-c",
                "from ilastik_widget.cli import main; raise SystemExit(main())",
                "demo",
                "--no-browser",
                "--port",
                str(port),
            ],
            cwd=tmp_path,
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
        )
    try:
        url = None
        deadline = time.monotonic() + 90
        while url is None:
            m = re.search(rf"(http://127\.0\.0\.1:{port}/\S+)", log.read_text())
            if m:
                url = m.group(1)
            elif proc.poll() is not None or time.monotonic() > deadline:
                raise AssertionError(f"the demo did not start JupyterLab (exit {proc.poll()}):\n{log.read_text()}")
            else:
                time.sleep(0.3)
        assert "/lab/tree/01_quickstart.ipynb" in url
        copy = tmp_path / "ilastik-widget-demo" / "01_quickstart.ipynb"
        assert copy.read_bytes() == (REPO / "notebooks" / "01_quickstart.ipynb").read_bytes()

        context = browser.browser.new_context(viewport={"width": 1400, "height": 900})
        try:
            page = context.new_page()
            page.goto(url, wait_until="domcontentloaded", timeout=60_000)
            page.locator(".lm-TabBar-tab.jp-mod-current", has_text="01_quickstart.ipynb").wait_for(timeout=60_000)
            # the notebook's own content, rendered
            page.locator(".jp-Notebook .jp-Cell", has_text="Quickstart").first.wait_for(timeout=60_000)
            page.locator(".jp-Notebook .jp-Cell", has_text="IlastikWidget").first.wait_for(timeout=60_000)
        finally:
            context.close()
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGINT)  # Ctrl+C, as a user stops it
            try:
                proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
