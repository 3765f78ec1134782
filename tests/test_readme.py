"""Every ```python block of README.md runs, in order, in one namespace, as a reader would paste them.

The blocks run in a temporary working directory. The image files they name are made there first, from what the
blocks themselves say, so a changed snippet needs no change here:

- each string literal ending in .ome.zarr or .tif/.tiff names an input image: a crop of scikit-image's RGB
  immunohistochemistry image (the README's example image) is written under that name, as OME-Zarr (channels first)
  or TIFF (channels last); an OME-Zarr opened with ``t=`` somewhere in the README is written as a time series;
- each http(s) URL is served by a loopback http server this test starts: the URL is rewritten to that server
  (``https://example.org/data/x.ome.zarr`` -> ``http://127.0.0.1:PORT/example.org/data/x.ome.zarr``) and the file
  is made under the served folder.

No block is skipped: a fence that looks like Python but is not written ```python fails the test.
"""

from __future__ import annotations

import functools
import http.server
import os
import re
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import tifffile
import zarr
from skimage import data

README = Path(__file__).resolve().parents[1] / "README.md"
_FENCE_RE = re.compile(r"^```([^\n`]*)\n(.*?)^```$", re.M | re.S)
_IMAGE_RE = re.compile(r"""["']([^"'\s]+\.(?:ome\.zarr|tiff?))["']""")
_URL_RE = re.compile(r"https?://([^/\s\"']+)/")
_TIME_SERIES_RE = re.compile(r"""open_source\(\s*["']([^"']+)["'][^)]*\bt\s*=""")


def python_blocks() -> list[tuple[int, str]]:
    """(line number, code) of each ```python block of the README, in order."""
    text = README.read_text(encoding="utf-8")
    blocks = []
    for m in _FENCE_RE.finditer(text):
        info = m.group(1).strip()
        line = text.count("\n", 0, m.start()) + 1
        if info.lower().startswith("py") and info != "python":
            raise AssertionError(f"README.md:{line}: write ```python (not ```{info}) so tests/test_readme.py runs it")
        if info == "python":
            blocks.append((line, m.group(2)))
    return blocks


BLOCKS = python_blocks()


def _image(time_series: bool) -> np.ndarray:
    """(y, x, 3) uint8, or (t, y, x, 3) with 5 time points: crops of the README's example image."""
    ihc = data.immunohistochemistry()
    if time_series:
        return np.stack([ihc[16 * t : 16 * t + 96, 64:160] for t in range(5)])
    return ihc[:128, :160]


def _write_ome_zarr(path: Path, image: np.ndarray) -> None:
    """OME-Zarr 0.4 with one level, channels first: (c, y, x) or (t, c, y, x)."""
    if image.ndim == 3:
        array, axes = np.moveaxis(image, -1, 0), "cyx"
    else:
        array, axes = np.moveaxis(image, -1, 1), "tcyx"
    group = zarr.open_group(str(path), mode="w", zarr_format=2)
    group.create_array("0", data=np.ascontiguousarray(array), chunks=array.shape)
    kinds = {"t": "time", "c": "channel"}
    group.attrs["multiscales"] = [
        {
            "version": "0.4",
            "axes": [{"name": a, "type": kinds.get(a, "space")} for a in axes],
            "datasets": [{"path": "0", "coordinateTransformations": [{"type": "scale", "scale": [1.0] * len(axes)}]}],
        }
    ]


def _write_image(path: Path, time_series: bool) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    image = _image(time_series)
    if path.name.endswith(".ome.zarr"):
        _write_ome_zarr(path, image)
    else:
        tifffile.imwrite(path, image, photometric="rgb")


def _serve(folder: Path) -> tuple[http.server.ThreadingHTTPServer, threading.Thread]:
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(folder))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    return server, thread


@pytest.fixture(scope="module")
def readme_env(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[dict[str, Any], dict[str, Any]]]:
    """The working directory with the blocks' input files, the URL rewrite and the shared namespace."""
    work = tmp_path_factory.mktemp("readme")
    served = work / "served"
    served.mkdir()
    server, thread = _serve(served)
    base = f"http://127.0.0.1:{server.server_address[1]}/"
    code = "\n".join(block for _, block in BLOCKS)
    time_series = set(_TIME_SERIES_RE.findall(code))
    for name in sorted(set(_IMAGE_RE.findall(code))):
        local = _URL_RE.sub(lambda m: str(served / m.group(1)) + "/", name)
        _write_image(work / local, name in time_series)
    namespace: dict[str, Any] = {"__name__": "__readme__"}
    cwd = os.getcwd()
    os.chdir(work)
    try:
        yield {"work": work, "rewrite": lambda block: _URL_RE.sub(lambda m: f"{base}{m.group(1)}/", block)}, namespace
    finally:
        os.chdir(cwd)
        for value in list(namespace.values()):
            if type(value).__name__ == "IlastikWidget":
                value.close()
        server.shutdown()
        server.server_close()
        thread.join()


def test_the_readme_has_python_blocks():
    assert len(BLOCKS) >= 4, f"README.md has {len(BLOCKS)} ```python blocks"


@pytest.mark.parametrize(("line", "block"), BLOCKS, ids=[f"README.md:{line}" for line, _ in BLOCKS])
def test_readme_block_runs(readme_env: tuple[dict[str, Any], dict[str, Any]], line: int, block: str) -> None:
    env, namespace = readme_env
    failed = namespace.get("__failed__")
    assert failed is None, f"an earlier block failed ({failed}); this one needs its names"
    try:
        exec(compile(env["rewrite"](block), f"README.md:{line}", "exec"), namespace)
    except BaseException:
        namespace["__failed__"] = f"README.md:{line}"
        raise
