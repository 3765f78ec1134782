"""``ilastik-widget demo [FOLDER]``: open the quickstart notebook in JupyterLab.

The notebook is copied into a working folder so the copy that ships with the package or the repository stays
untouched: FOLDER if given, else ``./ilastik-widget-demo`` in the working directory, or ``~/ilastik-widget-demo`` when
the working directory is inside a source checkout of ilastik_widget (a demo started from a clone writes nothing into
the source tree). An existing copy there (with the user's work) is reused, never overwritten. Then ``jupyter lab``
starts in that folder with the notebook open.
"""

from __future__ import annotations

import importlib.util
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

NOTEBOOK = "01_quickstart.ipynb"
FOLDER_NAME = "ilastik-widget-demo"
_PACKAGE = Path(__file__).resolve().parent
_PROJECT_NAME_RE = re.compile(r'^name\s*=\s*"ilastik-widget"\s*$', re.MULTILINE)


def quickstart_path() -> Path:
    """The quickstart notebook: shipped inside the package, in the source checkout the package was installed from
    in editable mode, or in ./notebooks (``pip install . && ilastik-widget demo`` run in a clone)."""
    for candidate in (
        _PACKAGE / "notebooks" / NOTEBOOK,
        _PACKAGE.parent / "notebooks" / NOTEBOOK,
        Path.cwd() / "notebooks" / NOTEBOOK,
    ):
        if candidate.is_file():
            return candidate
    raise FileNotFoundError(f"the quickstart notebook {NOTEBOOK} is neither in the package nor in a source checkout")


def source_checkout(path: Path) -> Path | None:
    """The root of the ilastik_widget source checkout that contains ``path`` (the folder whose pyproject.toml names
    the project), or None."""
    for folder in (path, *path.parents):
        pyproject = folder / "pyproject.toml"
        try:
            if pyproject.is_file() and _PROJECT_NAME_RE.search(pyproject.read_text(encoding="utf-8")):
                return folder
        except OSError:
            continue
    return None


def default_folder(cwd: Path | None = None) -> Path:
    """Where the demo copies the quickstart when no folder is given: ``<cwd>/ilastik-widget-demo``, or
    ``~/ilastik-widget-demo`` when ``cwd`` is inside a source checkout."""
    cwd = (cwd or Path.cwd()).resolve()
    if source_checkout(cwd) is not None:
        return Path.home() / FOLDER_NAME
    return cwd / FOLDER_NAME


def prepare(folder: Path) -> Path:
    """Copy the quickstart into ``folder`` unless a copy is already there; return the notebook's path."""
    folder.mkdir(parents=True, exist_ok=True)
    target = folder / NOTEBOOK
    if not target.exists():
        shutil.copyfile(quickstart_path(), target)
    return target


def lab_command(folder: Path, *, port: int | None = None, no_browser: bool = False) -> list[str]:
    """The command that starts JupyterLab in ``folder`` with the quickstart notebook open, on
    ``port`` when given and without opening a browser with ``no_browser``."""
    cmd = [
        sys.executable,
        "-m",
        "jupyterlab",
        f"--ServerApp.root_dir={folder}",
        f"--LabApp.default_url=/lab/tree/{NOTEBOOK}",
    ]
    if port is not None:
        cmd += [f"--port={int(port)}", "--port-retries=0"]
    if no_browser:
        cmd.append("--no-browser")
    if hasattr(os, "geteuid") and os.geteuid() == 0:
        cmd.append("--allow-root")  # containers (Docker, CI) often run as root; JupyterLab refuses it otherwise
    return cmd


def main(args) -> int:
    """Entry point of ``ilastik-widget demo [FOLDER] [--no-browser] [--port P]`` (``args`` from cli.py's parser)."""
    if importlib.util.find_spec("jupyterlab") is None:
        print("ilastik-widget: error: JupyterLab is not installed: pip install 'ilastik-widget[demo]'", file=sys.stderr)
        return 1
    given = getattr(args, "folder", None)
    folder = Path(given).expanduser().resolve() if given else default_folder()
    try:
        notebook = prepare(folder)
    except OSError as exc:
        print(f"ilastik-widget: error: {exc}", file=sys.stderr)
        return 1
    print(f"ilastik-widget: opening {notebook} in JupyterLab (Ctrl+C to stop)", flush=True)
    proc = subprocess.Popen(
        lab_command(folder, port=getattr(args, "port", None), no_browser=bool(getattr(args, "no_browser", False))),
        cwd=folder,
    )
    try:
        return proc.wait()
    except KeyboardInterrupt:
        # JupyterLab got the same Ctrl+C and shuts down by itself; wait for it so no server is left behind.
        proc.terminate()
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()
        raise
