"""``ilastik-widget demo [FOLDER] --no-browser --port P`` starts JupyterLab with the quickstart open, in a working copy
outside the source tree."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time

from e2e_harness import REPO, free_port


def _start_demo(args: list[str], cwd, home, log):
    env = dict(
        os.environ,
        HOME=str(home),
        PYTHONPATH=os.pathsep.join(p for p in (str(REPO), os.environ.get("PYTHONPATH")) if p),
        JUPYTER_RUNTIME_DIR=str(home / "runtime"),
        JUPYTERLAB_WORKSPACES_DIR=str(home / "ws"),
    )
    with open(log, "w") as out:
        return subprocess.Popen(
            [sys.executable, "-c", "from ilastik_widget.cli import main; raise SystemExit(main())", "demo", *args],
            cwd=cwd,
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
        )


def _wait_for(pattern: str, proc, log, timeout=90.0) -> re.Match:
    deadline = time.monotonic() + timeout
    while True:
        m = re.search(pattern, log.read_text())
        if m:
            return m
        if proc.poll() is not None or time.monotonic() > deadline:
            raise AssertionError(f"the demo did not print {pattern!r} (exit {proc.poll()}):\n{log.read_text()}")
        time.sleep(0.3)


def _stop(proc) -> None:
    if proc.poll() is None:
        os.killpg(proc.pid, signal.SIGINT)  # Ctrl+C, as a user stops it
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()


def test_demo_started_in_a_source_checkout_writes_outside_it(tmp_path):
    home = tmp_path / "home"
    home.mkdir()
    proc = _start_demo(["--no-browser", "--port", str(free_port())], cwd=REPO, home=home, log=tmp_path / "demo.log")
    try:
        _wait_for(r"http://127\.0\.0\.1:\d+/\S+", proc, tmp_path / "demo.log")
    finally:
        _stop(proc)
    copy = home / "ilastik-widget-demo" / "01_quickstart.ipynb"
    assert copy.read_bytes() == (REPO / "notebooks" / "01_quickstart.ipynb").read_bytes()
    assert not (REPO / "ilastik-widget-demo").exists()


def test_demo_opens_the_quickstart_in_jupyterlab(browser, tmp_path):
    port = free_port()
    log = tmp_path / "demo.log"
    proc = _start_demo(["my demo", "--no-browser", "--port", str(port)], cwd=tmp_path, home=tmp_path, log=log)
    try:
        url = _wait_for(rf"(http://127\.0\.0\.1:{port}/\S+)", proc, log).group(1)
        assert "/lab/tree/01_quickstart.ipynb" in url
        copy = tmp_path / "my demo" / "01_quickstart.ipynb"
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
        _stop(proc)
