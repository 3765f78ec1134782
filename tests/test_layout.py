"""The package keeps the shape docs/architecture.md describes: imports go one way (widget -> serving -> io -> core),
no module or class grows past the sizes a reader can hold in mind, and the core imports no Jupyter machinery."""

from __future__ import annotations

import ast
import pathlib
import subprocess
import sys

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "ilastik_widget"
TS_SOURCES = ROOT / "js" / "src"
#: Layers from the bottom up: a module may import its own layer and the ones below.
LAYERS = ("core", "io", "serving", "widget")
MAX_MODULE_LINES, MAX_CLASS_LINES, MAX_TS_MODULE_LINES = 700, 400, 600


def _modules() -> list[pathlib.Path]:
    return sorted(PACKAGE.rglob("*.py"))


def _layer(path: pathlib.Path) -> str | None:
    parts = path.relative_to(PACKAGE).parts
    return parts[0] if len(parts) > 1 and parts[0] in LAYERS else None


def _imported_layers(path: pathlib.Path) -> set[str]:
    """The layers a module imports from (relative or absolute imports of this package, at any depth)."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    package = path.relative_to(ROOT).with_suffix("").parts[:-1]
    out = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom):
            if node.level:
                base = list(package[: len(package) - node.level + 1])
                target = base + (node.module.split(".") if node.module else [])
            else:
                target = (node.module or "").split(".")
            names = [target + [alias.name] for alias in node.names] if not node.module else [target]
        elif isinstance(node, ast.Import):
            names = [alias.name.split(".") for alias in node.names]
        else:
            continue
        for name in names:
            if len(name) > 1 and name[0] == "ilastik_widget" and name[1] in LAYERS:
                out.add(name[1])
    return out


@pytest.mark.parametrize("path", _modules(), ids=lambda p: str(p.relative_to(ROOT)))
def test_imports_go_one_way(path):
    layer = _layer(path)
    if layer is None:
        return  # the package root, the CLI, the demo and the data sets sit above every layer
    above = set(LAYERS[LAYERS.index(layer) + 1 :])
    assert not (_imported_layers(path) & above), f"{path.name} ({layer}) imports from {_imported_layers(path) & above}"


@pytest.mark.parametrize("path", _modules(), ids=lambda p: str(p.relative_to(ROOT)))
def test_modules_and_classes_stay_small(path):
    text = path.read_text(encoding="utf-8")
    assert len(text.splitlines()) <= MAX_MODULE_LINES, f"{path.name} has {len(text.splitlines())} lines"
    for node in ast.walk(ast.parse(text)):
        if isinstance(node, ast.ClassDef):
            size = node.end_lineno - node.lineno + 1
            assert size <= MAX_CLASS_LINES, f"class {node.name} in {path.name} has {size} lines"


@pytest.mark.parametrize("path", sorted(TS_SOURCES.rglob("*.ts")), ids=lambda p: str(p.relative_to(ROOT)))
def test_typescript_modules_stay_small(path):
    n = len(path.read_text(encoding="utf-8").splitlines())
    assert n <= MAX_TS_MODULE_LINES, f"{path.name} has {n} lines"


def test_the_core_imports_without_jupyter():
    code = (
        "import sys\n"
        "import ilastik_widget.core.session, ilastik_widget.core.features, ilastik_widget.core.annotations\n"
        "bad = [m for m in ('anywidget', 'ipywidgets', 'traitlets', 'ipykernel', 'zarr', 'dask') if m in sys.modules]\n"
        "assert not bad, bad\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


def test_no_file_cites_a_design_brief_outside_the_repository():
    tracked = subprocess.run(["git", "ls-files"], cwd=ROOT, capture_output=True, text=True, check=True).stdout.split()
    for name in tracked:
        path = ROOT / name
        if path.suffix not in {".py", ".ts", ".mjs", ".md", ".ipynb", ".toml", ".css", ".txt"} or not path.is_file():
            continue
        text = path.read_text(encoding="utf-8", errors="replace")
        brief, shared = "DESIGN" + ".md", "../" + "shared"
        assert brief not in text and shared not in text, f"{name} cites a file outside the repository"
