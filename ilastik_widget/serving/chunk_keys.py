"""The zarr keys the viewer reads from the kernel, parsed in one place (mirrored by ``js/src/data/chunk_keys.ts``).

The browser's ``mem://<widget>/`` kvstore asks for keys relative to the widget's root. Four arrays exist, each an
OME-Zarr multiscale group whose levels are zarr v2 arrays:

``raw/<level>/<i>.<j>[.<k>][.0]``
    the image (a trailing channel index when it is shown in colour);
``labels/<level>/<i>.<j>[.<k>]``
    the painted labels;
``predictions/<layout>/<level>/<i>.<j>[.<k>].0``
    the class probabilities, the classes as a trailing channel axis. ``layout`` numbers the array's shape: it changes
    when the number of classes changes, so the viewer's layer gets a new URL (and new metadata) exactly then.
``objects/<version>/<level>/<i>.<j>[.<k>]``
    the label image of the widget's last objects (``uint32``, 0 = no object). ``version`` numbers the result: every
    new result has a new URL, so the viewer never mixes chunks of two results.

Metadata keys are ``<array>/.zgroup``, ``<array>/.zattrs`` and ``<array>/<level>/.zarray`` (``.zattrs``), with the
``<layout>`` after ``predictions`` and the ``<version>`` after ``objects``.

Volumes are served in Neuroglancer's precomputed format instead, so that every level offers chunks flat along each
axis and each panel reads the plane it shows (see :mod:`~ilastik_widget.serving.pyramid`): the metadata is
``<array>/info`` and a chunk is ``<array>/<level>/<x0>-<x1>_<y0>-<y1>_<z0>-<z1>`` (:class:`BoxKey`; the box in the
level's voxels, x first as precomputed writes it).
"""

from __future__ import annotations

import re
from dataclasses import dataclass

#: The arrays of a widget, in the order of their layers.
ARRAYS = ("raw", "labels", "predictions", "objects")
#: The arrays whose path carries a number (the predictions' layout, the objects' version): a new number is a new URL.
NUMBERED_ARRAYS = ("predictions", "objects")
#: Metadata files of a zarr v2 group or array.
METADATA_NAMES = (".zgroup", ".zattrs", ".zarray")
MAX_KEY_LENGTH = 512

_NUMBER = r"(0|[1-9][0-9]{0,8})"
_BOX = rf"{_NUMBER}-{_NUMBER}_{_NUMBER}-{_NUMBER}_{_NUMBER}-{_NUMBER}"
_KEY = re.compile(
    rf"^(?P<array>raw|labels|predictions|objects)"
    rf"(?:/(?P<layout>{_NUMBER}))?"
    rf"(?:/(?P<level>{_NUMBER}))?"
    rf"/(?P<leaf>\.zgroup|\.zattrs|\.zarray|info|{_BOX}|{_NUMBER}(?:\.{_NUMBER}){{1,3}})$"
)


@dataclass(frozen=True)
class ChunkKey:
    """A chunk of one level of one array: ``index`` is the chunk's grid index over all axes of that level's zarr
    array (spatial, then a channel axis when the array has one)."""

    array: str
    level: int
    index: tuple[int, ...]
    layout: int | None = None

    @property
    def address(self) -> str:
        """``"<level>/<i>.<j>..."``: the key without array and layout (the same chunk in any layout)."""
        return f"{self.level}/" + ".".join(str(i) for i in self.index)

    def __str__(self) -> str:
        return f"{array_path(self.array, self.layout)}/{self.address}"


@dataclass(frozen=True)
class BoxKey:
    """A chunk of a precomputed level, named by its box: ``box`` holds (start, stop) per spatial axis in array order
    ((z, y, x)), in voxels of that level."""

    array: str
    level: int
    box: tuple[tuple[int, int], ...]
    layout: int | None = None

    @property
    def address(self) -> str:
        """``"<level>/<x0>-<x1>_<y0>-<y1>_<z0>-<z1>"``: the key without array and layout."""
        return f"{self.level}/" + "_".join(f"{a}-{b}" for a, b in reversed(self.box))

    def __str__(self) -> str:
        return f"{array_path(self.array, self.layout)}/{self.address}"


@dataclass(frozen=True)
class MetadataKey:
    """A ``.zgroup`` / ``.zattrs`` / ``.zarray`` file of an array's group (``level`` None) or of one of its levels, or
    the ``info`` of a precomputed array."""

    array: str
    name: str
    level: int | None = None
    layout: int | None = None

    def __str__(self) -> str:
        level = "" if self.level is None else f"/{self.level}"
        return f"{array_path(self.array, self.layout)}{level}/{self.name}"


def array_path(array: str, layout: int | None = None) -> str:
    """The path of an array's group below the widget's root: ``raw``, ``labels``, ``predictions/<layout>`` or
    ``objects/<version>`` (``layout`` is the number of a numbered array)."""
    if array not in ARRAYS:
        raise ValueError(f"unknown array {array!r}; the arrays are {', '.join(ARRAYS)}")
    if (array in NUMBERED_ARRAYS) != (layout is not None):
        raise ValueError(f"the {' and '.join(NUMBERED_ARRAYS)} arrays, and only they, have a number in their path")
    return array if layout is None else f"{array}/{layout}"


def parse_key(key: object) -> ChunkKey | BoxKey | MetadataKey | None:
    """The chunk or metadata file a key names; None for anything else (malformed keys are not errors: the viewer
    reads them as missing)."""
    if not isinstance(key, str) or len(key) > MAX_KEY_LENGTH:
        return None
    m = _KEY.fullmatch(key)
    if m is None:
        return None
    array = m["array"]
    layout = None if m["layout"] is None else int(m["layout"])
    level = None if m["level"] is None else int(m["level"])
    if array in NUMBERED_ARRAYS and layout is None:
        return None
    if array not in NUMBERED_ARRAYS and layout is not None:
        # `raw/0/.zarray` matches layout=0, level=None: for raw and labels the number is the level
        layout, level = None, layout
        if m["level"] is not None:
            return None
    leaf = m["leaf"]
    if leaf.startswith(".") or leaf == "info":
        if leaf in (".zgroup", "info") and level is not None:
            return None
        return MetadataKey(array, leaf, level, layout)
    if level is None:
        return None
    if "-" in leaf:
        xyz = [tuple(int(v) for v in part.split("-")) for part in leaf.split("_")]
        if any(b <= a for a, b in xyz):
            return None
        return BoxKey(array, level, tuple((a, b) for a, b in reversed(xyz)), layout)
    return ChunkKey(array, level, tuple(int(i) for i in leaf.split(".")), layout)
