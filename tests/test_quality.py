"""The project's habits, checked: lint, format and types; one version; one Node.js minimum; the licences of
everything bundled into the browser code shipped beside it.

ruff and mypy run as subprocesses with the configuration in pyproject.toml and fail with their own output. The
licence test builds the bundle into a temporary folder (about 2 s) and reads which files esbuild bundled from the
build's metafiles, independently of the build's own bookkeeping.
"""

from __future__ import annotations

import importlib.metadata
import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

import ilastik_widget

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

REPO = Path(__file__).resolve().parents[1]
JS = REPO / "js"
CHECKED = ["ilastik_widget", "tests", "benchmarks"]


def _run_tool(*cmd: str) -> None:
    result = subprocess.run([sys.executable, "-m", *cmd], cwd=REPO, capture_output=True, text=True)
    assert result.returncode == 0, f"`{' '.join(cmd)}` failed:\n{result.stdout}{result.stderr}"


def test_ruff_check_is_clean():
    _run_tool("ruff", "check", *CHECKED)


def test_ruff_format_is_clean():
    _run_tool("ruff", "format", "--check", *CHECKED)


def test_mypy_is_clean():
    _run_tool("mypy", *CHECKED)


_EXCEPTIONS_MARKER = "# --- per-module exceptions"


def _mypy_module(path: str) -> str:
    parts = Path(path).with_suffix("").parts
    # folders without __init__.py (tests, benchmarks) are not packages: mypy names their modules by file name
    return ".".join(parts) if parts[0] == "ilastik_widget" else parts[-1]


def test_every_mypy_exception_is_still_needed(tmp_path):
    """pyproject.toml's per-module disable_error_code entries are the least that lets mypy pass: run mypy without
    them and check each listed (module, code) still raises an error."""
    text = (REPO / "pyproject.toml").read_text()
    assert _EXCEPTIONS_MARKER in text
    listed = {
        (module, code)
        for override in tomllib.loads(text)["tool"]["mypy"]["overrides"]
        for module in override["module"]
        for code in override.get("disable_error_code", [])
    }
    config = tmp_path / "pyproject.toml"
    config.write_text(text.split(_EXCEPTIONS_MARKER, 1)[0])
    result = subprocess.run(
        [sys.executable, "-m", "mypy", "--config-file", str(config), "--cache-dir", str(tmp_path / "cache"), *CHECKED],
        cwd=REPO,
        capture_output=True,
        text=True,
    )
    raised = {
        (_mypy_module(m[1]), m[2]) for m in re.finditer(r"^(\S+\.py):\d+: error: .*\[([a-z-]+)\]$", result.stdout, re.M)
    }
    assert raised, f"mypy without the exceptions found nothing to report:\n{result.stdout}{result.stderr}"
    # "unused-ignore" is listed where disabling another code there makes a `# type: ignore[code]` unused
    stale = sorted(pair for pair in listed - raised if pair[1] != "unused-ignore")
    assert not stale, f"no longer raised, delete from pyproject.toml's mypy overrides: {stale}"


# --- one version ---------------------------------------------------------------------------------------------------


def test_the_version_is_written_once():
    pyproject = tomllib.loads((REPO / "pyproject.toml").read_text())
    assert "version" not in pyproject["project"], "pyproject.toml must take the version from __init__.py"
    assert "version" in pyproject["project"]["dynamic"]
    assert pyproject["tool"]["hatch"]["version"]["path"] == "ilastik_widget/__init__.py"
    package_json = json.loads((JS / "package.json").read_text())
    assert "version" not in package_json, "js/package.json is private: it needs no version of its own"
    assert re.fullmatch(r"\d+\.\d+\.\d+(\.dev\d+|(a|b|rc)\d+)?", ilastik_widget.__version__)


def test_the_installed_metadata_has_the_package_version():
    # pyproject's version comes from __init__.py: a mismatch means the install is older than the checkout
    assert importlib.metadata.version("ilastik-widget") == ilastik_widget.__version__, "reinstall: pip install -e ."


def test_the_changelog_has_an_entry_for_the_version():
    changelog = (REPO / "CHANGELOG.md").read_text()
    assert "## [Unreleased]" in changelog
    assert re.search(rf"^## \[{re.escape(ilastik_widget.__version__)}\] - \d{{4}}-\d{{2}}-\d{{2}}$", changelog, re.M)


# --- one Node.js minimum -------------------------------------------------------------------------------------------

_NODE_MINIMUM_RE = re.compile(r"Node(?:\.js)?\s*\(?\s*>=\s*(\d+)")


def test_one_node_minimum_everywhere():
    engines = json.loads((JS / "package.json").read_text())["engines"]["node"]
    lock = json.loads((JS / "package-lock.json").read_text())
    assert lock["packages"][""]["engines"]["node"] == engines, "js/package-lock.json is older than package.json"
    neuroglancer = lock["packages"]["node_modules/neuroglancer"]["engines"]["node"]
    assert engines == neuroglancer, f"js/package.json asks Node {engines}, the pinned Neuroglancer {neuroglancer}"
    minimum = re.fullmatch(r">=(\d+)", engines).group(1)
    stated = {}
    for name in ("README.md", "hatch_build.py", ".ci/install", "binder/postBuild"):
        found = _NODE_MINIMUM_RE.findall((REPO / name).read_text())
        assert found, f"{name} does not state the Node.js minimum"
        stated[name] = set(found)
    assert all(found == {minimum} for found in stated.values()), f"Node.js minimum is {minimum}, stated: {stated}"


# --- licences of the bundled npm packages --------------------------------------------------------------------------


def _package_of(file: str) -> Path | None:
    """The npm package directory a bundled file comes from (the last node_modules/<name> or /@scope/<name>)."""
    parts = Path(file.split(":", 1)[1] if re.match(r"^[a-z][a-z0-9-]+:", file) else file).parts
    if "node_modules" not in parts:
        return None
    i = len(parts) - 1 - parts[::-1].index("node_modules")
    length = 2 if parts[i + 1].startswith("@") else 1
    return JS.joinpath(*parts[: i + 1 + length])


def _bundled_packages(metafiles: list[dict]) -> dict[str, dict]:
    packages = {}
    for metafile in metafiles:
        for output in metafile["outputs"].values():
            for file, used in output["inputs"].items():
                directory = _package_of(file)
                if directory is not None and used["bytesInOutput"] > 0:
                    meta = json.loads((directory / "package.json").read_text())
                    packages[meta["name"]] = dict(meta, directory=directory)
    return packages


@pytest.fixture(scope="module")
def fresh_build(tmp_path_factory):
    node = shutil.which("node")
    assert node is not None, "Node.js is needed to build the widget (bash .ci/install provides it)"
    assert (JS / "node_modules" / "esbuild").is_dir(), "js/node_modules is missing: run `npm ci` in js/"
    out = tmp_path_factory.mktemp("static")
    metafiles = out / "metafiles.json"
    subprocess.run(
        [node, "build.mjs", "--outdir", str(out), "--metafiles", str(metafiles)],
        cwd=JS,
        check=True,
        capture_output=True,
    )
    return out, json.loads(metafiles.read_text())


def test_third_party_licenses_cover_every_bundled_package(fresh_build):
    out, metafiles = fresh_build
    text = (out / "THIRD_PARTY_LICENSES.txt").read_text()
    bundled = _bundled_packages(metafiles)
    assert {"neuroglancer", "gl-matrix"} <= set(bundled)
    listed = dict(re.findall(r"^={100}\n(\S+) (\S+)$", text, re.M))
    assert listed == {name: meta["version"] for name, meta in bundled.items()}
    for name, meta in bundled.items():
        section = text.split(f"\n{name} {meta['version']}\n", 1)[1].split("=" * 100, 1)[0]
        texts = sorted(p for p in meta["directory"].iterdir() if re.match(r"(?i)(licen[cs]e|copying|notice)", p.name))
        assert texts or meta.get("license"), f"{name} has no licence to ship"
        for path in texts:
            assert path.read_text().strip() in section, f"{name}: {path.name} is not reproduced"
    neuroglancer = text.split("\nneuroglancer 2.41.2\n", 1)[1]
    assert neuroglancer.startswith("License: Apache-2.0\n")
    assert "Apache License\n                           Version 2.0, January 2004" in neuroglancer


def test_the_installed_bundle_ships_its_third_party_licenses():
    static = Path(ilastik_widget.__file__).parent / "static"
    assert (static / "widget.js").is_file()
    text = (static / "THIRD_PARTY_LICENSES.txt").read_text()
    assert re.search(r"^  neuroglancer \S+  \(Apache-2\.0\)$", text, re.M)
    pyproject = tomllib.loads((REPO / "pyproject.toml").read_text())
    assert "ilastik_widget/static/*" in pyproject["tool"]["hatch"]["build"]["targets"]["wheel"]["artifacts"]
    assert (Path(ilastik_widget.__file__).parent / "py.typed").is_file()
