"""Hatchling build hook: builds the widget's JavaScript bundle into ilastik_widget/static/.

`pip install .` (wheel or editable) runs `npm ci` in js/ (when node_modules is missing or older than the lock file)
and then `node build.mjs`, which writes ilastik_widget/static/widget.js and widget.css (git-ignored, shipped in the
wheel as artifacts). The sdist carries js/ sources instead, so a wheel built from it runs the same steps.

Environment:
  ILASTIK_WIDGET_SKIP_JS=1   do not run npm/node (use whatever static/ holds; for Python-only work)
  ILASTIK_WIDGET_FORCE_JS=1  rebuild even if static/widget.js is newer than every JS source
"""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

from hatchling.builders.hooks.plugin.interface import BuildHookInterface

_SOURCES = ("src", "icons", "build.mjs", "conditions.mjs", "package.json", "package-lock.json", "tsconfig.json")


def _newest_mtime(paths: list[Path]) -> float:
    newest = 0.0
    for path in paths:
        if path.is_dir():
            for child in path.rglob("*"):
                if child.is_file():
                    newest = max(newest, child.stat().st_mtime)
        elif path.exists():
            newest = max(newest, path.stat().st_mtime)
    return newest


class JsBuildHook(BuildHookInterface):
    PLUGIN_NAME = "custom"

    def initialize(self, version: str, build_data: dict) -> None:
        if self.target_name != "wheel":
            return
        root = Path(self.root)
        js = root / "js"
        static = root / "ilastik_widget" / "static"
        bundle = static / "widget.js"
        if os.environ.get("ILASTIK_WIDGET_SKIP_JS"):
            self.app.display_info("ilastik_widget: ILASTIK_WIDGET_SKIP_JS set, not building the JavaScript bundle")
            return
        if not js.is_dir():
            if bundle.exists():
                return  # building from an artifact that already has the bundle
            raise RuntimeError("ilastik_widget: js/ sources are missing and no prebuilt bundle exists")

        sources = [js / name for name in _SOURCES]
        up_to_date = bundle.exists() and bundle.stat().st_mtime >= _newest_mtime(sources)
        if up_to_date and not os.environ.get("ILASTIK_WIDGET_FORCE_JS"):
            self.app.display_info("ilastik_widget: JavaScript bundle is up to date")
            return

        npm = shutil.which("npm")
        node = shutil.which("node")
        if npm is None or node is None:
            if bundle.exists():
                self.app.display_warning("ilastik_widget: node/npm not found; using the existing (older) bundle")
                return
            raise RuntimeError(
                "ilastik_widget: building the widget needs Node.js (>= 20) and npm on PATH "
                "(or set ILASTIK_WIDGET_SKIP_JS=1 for a Python-only install)"
            )

        lock = js / "package-lock.json"
        installed = js / "node_modules" / ".package-lock.json"
        if not installed.exists() or installed.stat().st_mtime < lock.stat().st_mtime:
            self.app.display_info("ilastik_widget: npm ci")
            result = subprocess.run([npm, "ci", "--no-audit", "--no-fund"], cwd=js, capture_output=True, text=True)
            if result.returncode != 0:
                # A registry mirror without the other platforms' optional packages (those of msgpackr-extract, which
                # the browser bundle never uses) gives a lock file `npm ci` refuses; `npm install --no-save`
                # installs the same locked versions without touching the lock file.
                self.app.display_warning("ilastik_widget: npm ci refused the lock file; using npm install --no-save")
                fallback = subprocess.run([npm, "install", "--no-save", "--no-audit", "--no-fund"], cwd=js)
                if fallback.returncode != 0:
                    self.app.display_error(result.stdout + result.stderr)
                    raise RuntimeError("ilastik_widget: npm could not install the JavaScript dependencies")
        self.app.display_info("ilastik_widget: node build.mjs")
        subprocess.run([node, "build.mjs"], cwd=js, check=True)
        if not bundle.exists():
            raise RuntimeError("ilastik_widget: the JavaScript build did not produce static/widget.js")
        build_data.setdefault("artifacts", []).extend(
            ["ilastik_widget/static/widget.js", "ilastik_widget/static/widget.css"]
        )
