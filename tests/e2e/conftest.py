"""Fixtures for the end-to-end tests: one JupyterLab server and one headless Chromium per test session.

Every test in this folder is marked ``e2e``. Nothing is skipped: without Chromium, Playwright or the built widget
the tests fail with a message saying what is missing.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))

from e2e_harness import ARTIFACTS, Browser, LabPage, LabServer


def pytest_collection_modifyitems(config, items):
    here = Path(__file__).resolve().parent
    for item in items:
        if here in Path(str(item.fspath)).resolve().parents:
            item.add_marker(pytest.mark.e2e)


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    outcome = yield
    rep = outcome.get_result()
    if rep.skipped and os.environ.get("CI") and item.get_closest_marker("e2e") and not hasattr(rep, "wasxfail"):
        # CI runs every end-to-end test; a skip there hides a missing browser or widget
        rep.outcome = "failed"
        rep.longrepr = f"e2e test skipped under CI: {rep.longrepr}"
    setattr(item, "rep_" + rep.when, rep)


# Module scope, not session: Playwright's sync API keeps an asyncio loop running in the main thread while a
# browser is open, which would break later (non-e2e) tests that call asyncio.run().
@pytest.fixture(scope="module")
def lab_server():
    server = LabServer().start()
    yield server
    server.stop()


@pytest.fixture(scope="module")
def browser():
    b = Browser().start()
    yield b
    b.stop()


class NotebookOpener:
    """Writes a notebook into the server's root, opens it in a fresh browser context, runs it; closes all at the end
    (saving a screenshot and the browser console into tests/e2e/artifacts/ if the test failed)."""

    def __init__(self, server: LabServer, browser: Browser, request):
        self.server, self.browser, self.request = server, browser, request
        self.pages: list[LabPage] = []

    def __call__(
        self, name: str, cells: list[str] | None = None, *, run: bool = True, done_flag: str | None = "_E2E_DONE"
    ) -> LabPage:
        if cells is not None:
            self.server.write_notebook(name, cells)
        lab = self.browser.open_notebook(self.server, name)
        self.pages.append(lab)
        if run:
            lab.run_all(done_flag=done_flag)
        return lab

    def close(self, failed: bool) -> None:
        for i, lab in enumerate(self.pages):
            if failed:
                stem = f"{self.request.node.name}-{i}".replace("/", "_").replace("[", "_").replace("]", "")
                try:
                    lab.save_screenshot(stem + ".png")
                except Exception:
                    pass
                (ARTIFACTS / (stem + ".console.txt")).write_text("\n".join(lab.console))
            lab.close()


def _failed(request) -> bool:
    reps = [getattr(request.node, "rep_" + w, None) for w in ("setup", "call")]
    return any(r is not None and r.failed for r in reps)


@pytest.fixture
def open_notebook(lab_server, browser, request):
    opener = NotebookOpener(lab_server, browser, request)
    yield opener
    opener.close(_failed(request))


@pytest.fixture(scope="module")
def open_notebook_module(lab_server, browser, request):
    before = request.session.testsfailed
    opener = NotebookOpener(lab_server, browser, request)
    yield opener
    opener.close(request.session.testsfailed > before)
