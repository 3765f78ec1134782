"""Hatchling build hook: builds the widget's JavaScript bundle into ilastik_widget/static/.

`pip install .` (wheel or editable) runs, in js/:
  1. `node find_node.mjs`: the Node.js to build with, at least package.json's `engines.node` (22, the minimum of the
     pinned Neuroglancer). An older node on PATH is not used: Node 22 is then installed from the npm registry into
     js/.node (git-ignored), once.
  2. `npm ci` when node_modules is missing or older than package-lock.json. A lock file `npm ci` refuses stops the
     build with npm's message: there is no unlocked fallback.
  3. `node build.mjs`, which writes ilastik_widget/static/widget.js, widget.css and THIRD_PARTY_LICENSES.txt (the
     licence and notice texts of every npm package bundled into widget.js). They are git-ignored and shipped in the
     wheel as artifacts. The sdist carries js/ sources instead, so a wheel built from it runs the same steps.

Environment:
  ILASTIK_WIDGET_SKIP_JS=1   do not run npm/node (use whatever static/ holds; for Python-only work)
  ILASTIK_WIDGET_FORCE_JS=1  rebuild even if static/widget.js is newer than every JS source
"""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path
from typing import Any

from hatchling.builders.hooks.plugin.interface import BuildHookInterface

_SOURCES = ("src", "icons", "build.mjs", "conditions.mjs", "package.json", "package-lock.json", "tsconfig.json")
_OUTPUTS = ("widget.js", "widget.css", "THIRD_PARTY_LICENSES.txt")


class JsBuildError(RuntimeError):
    """The widget's JavaScript could not be built; the message says why and what to do."""


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


def _run(cmd: list[str], cwd: Path, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True)


class JsBuildHook(BuildHookInterface):
    PLUGIN_NAME = "custom"

    def initialize(self, version: str, build_data: dict[str, Any]) -> None:
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
            raise JsBuildError("ilastik_widget: js/ sources are missing and no prebuilt bundle exists")

        outputs = [static / name for name in _OUTPUTS]
        sources = [js / name for name in _SOURCES]
        up_to_date = all(p.exists() for p in outputs) and bundle.stat().st_mtime >= _newest_mtime(sources)
        if up_to_date and not os.environ.get("ILASTIK_WIDGET_FORCE_JS"):
            self.app.display_info("ilastik_widget: JavaScript bundle is up to date")
            return

        node_on_path, npm = shutil.which("node"), shutil.which("npm")
        if node_on_path is None or npm is None:
            raise JsBuildError(
                "ilastik_widget: building the widget needs Node.js (>= 22) and npm on PATH; install them "
                "(https://nodejs.org) or set ILASTIK_WIDGET_SKIP_JS=1 for a Python-only install"
            )
        found = _run([node_on_path, "find_node.mjs"], js, dict(os.environ))
        if found.returncode != 0:
            raise JsBuildError(f"ilastik_widget: no usable Node.js to build the widget:\n{found.stderr}")
        if found.stderr.strip():
            self.app.display_info(found.stderr.strip())
        node = found.stdout.strip()
        # npm and the install scripts it starts run under the first node on PATH: make that the one found
        env = dict(os.environ, PATH=os.pathsep.join([str(Path(node).parent), os.environ.get("PATH", "")]))

        lock = js / "package-lock.json"
        installed = js / "node_modules" / ".package-lock.json"
        if not installed.exists() or installed.stat().st_mtime < lock.stat().st_mtime:
            self.app.display_info("ilastik_widget: npm ci")
            result = _run([npm, "ci", "--no-audit", "--no-fund"], js, env)
            if result.returncode != 0:
                raise JsBuildError(
                    f"ilastik_widget: `npm ci` in js/ failed:\n{result.stdout}{result.stderr}\n"
                    "ilastik_widget: the widget's JavaScript dependencies are not installed. If npm says above that "
                    "package.json and package-lock.json are out of sync, run `npm install` in js/ (Node >= 22) and "
                    "commit the updated package-lock.json; otherwise check that the npm registry is reachable."
                )
        self.app.display_info(f"ilastik_widget: {node} build.mjs")
        result = _run([node, "build.mjs"], js, env)
        if result.returncode != 0:
            raise JsBuildError(f"ilastik_widget: the JavaScript build failed:\n{result.stdout}{result.stderr}")
        self.app.display_info(result.stdout.strip())
        missing = [p.name for p in outputs if not p.exists()]
        if missing:
            raise JsBuildError(f"ilastik_widget: the JavaScript build did not produce {', '.join(missing)}")
        build_data.setdefault("artifacts", []).extend(f"ilastik_widget/static/{name}" for name in _OUTPUTS)
