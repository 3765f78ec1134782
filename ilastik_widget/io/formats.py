"""Opening a location as an image: find out the format from its metadata and build the :class:`ImageSource`.

Formats, detected from the documents found at the location (or named by the user, see
:func:`~ilastik_widget.io.location.parse_location`):

================  =====================================  ==========================================================
format            metadata looked for                    levels / voxel size / axes
================  =====================================  ==========================================================
zarr v3           ``zarr.json``                          OME-Zarr 0.5 ``multiscales``, ``coordinateTransformations``
zarr v2           ``.zarray``, ``.zattrs``, ``.zgroup``  OME-Zarr 0.1-0.4 likewise
N5                ``attributes.json``                    ``s0, s1...`` with ``scales`` or ``downsamplingFactors``,
                                                         ``resolution``/``units`` or ``pixelResolution``, ``axes``
precomputed       ``info``                               ``scales`` (``resolution`` in nm), channels
Deep Zoom         a ``.dzi`` descriptor                  the pyramid's levels, RGB(A) or grey
================  =====================================  ==========================================================

N5 and precomputed store axes x first; the source shows them in the usual order (``zyx``, channels first).
Precomputed volumes one voxel deep become 2D images. Every array is read with tensorstore
(:mod:`~ilastik_widget.io.tensorstore_source`), except Deep Zoom tiles (:mod:`~ilastik_widget.io.dzi`) and zarr
arrays whose codecs tensorstore does not know, which zarr-python reads.
"""

from __future__ import annotations

import os
from dataclasses import replace

from . import metadata as md
from .errors import SourceError, SourceNotFoundError
from .location import Location
from .opener import Opener, StoredLayout
from .remote import HttpClient, RemoteOptions
from .tensorstore_source import DEFAULT_CACHE_BYTES

__all__ = ["StoredLayout", "detect_and_open", "open_location"]

#: seconds format detection waits for its first probe before sending the others (see ``Opener.iter_json``)
PROBE_FIRST_ALONE = 0.003


def open_location(
    loc: Location,
    *,
    options: RemoteOptions,
    channel_axis=None,
    axes: str | None = None,
    subpath: str | None = None,
    cache_bytes: int = DEFAULT_CACHE_BYTES,
):
    """Open the image at ``loc`` (see the module docstring); ``subpath`` names an array inside a group.

    Metadata probes that the detected format does not need are left to end on their own (within the timeout):
    their connections go back to the process's shared pool (:mod:`~ilastik_widget.io.remote`)."""
    if loc.remote:
        loc = replace(loc, client=HttpClient(options))
    if subpath:
        loc = loc.child(md._relative_path(subpath, loc.where, "path"))
    op = Opener(loc, options=options, cache_bytes=cache_bytes, channel_axis=channel_axis, axes=axes)
    return detect_and_open(op, loc)


def detect_and_open(op: Opener, loc: Location):
    """Open the image at ``loc`` with the format its metadata (or the user) names."""
    from .dzi import open_dzi
    from .n5_format import open_n5
    from .precomputed_format import open_precomputed
    from .zarr_format import open_zarr_node

    fmt = loc.format
    low = loc.root.lower()
    if fmt == "deepzoom" or low.endswith((".dzi", ".dzi.json")) or (fmt is None and low.endswith(".xml")):
        return open_dzi(op, loc)
    if not loc.remote and not os.path.exists(loc.root):
        raise SourceNotFoundError(f"no such file or directory: {loc.root!r}")
    if not loc.remote and os.path.isfile(loc.root):
        raise SourceError(f"{loc.root!r} is a file, not a zarr, N5 or precomputed directory nor a .dzi descriptor")
    probes = {
        None: ("zarr.json", ".zarray", ".zattrs", ".zgroup", "attributes.json", "info"),
        "zarr": ("zarr.json", ".zarray", ".zattrs", ".zgroup"),
        "zarr2": (".zarray", ".zattrs", ".zgroup"),
        "zarr3": ("zarr.json",),
        "n5": ("attributes.json",),
        "precomputed": ("info",),
    }[fmt]
    # the likeliest document alone for a moment: OME-Zarr 0.5 / zarr v3 then opens without the five other probes
    found = op.iter_json([(loc, key) for key in probes], probe=True, first_alone=PROBE_FIRST_ALONE)
    for key, doc in zip(probes, found):
        if doc is None:
            continue
        if loc.key_url(key) in op.redirects and op.rebased is None and op.objects is None:
            loc = op.follow_redirect(loc, key)
        if key == "zarr.json":
            return open_zarr_node(op, loc, 3, doc)
        if key == ".zarray":
            return open_zarr_node(op, loc, 2, doc)
        if key in (".zattrs", ".zgroup"):
            attrs = doc if key == ".zattrs" else (op.read_json(loc, ".zattrs") or {})
            return open_zarr_node(op, loc, 2, {"node_type": "group", "attributes": attrs})
        if key == "attributes.json":
            return open_n5(op, loc, doc)
        return open_precomputed(op, loc, doc)
    if op.forbidden is not None:
        raise op.forbidden
    looked = ", ".join(probes)
    what = {None: "zarr, N5, precomputed or Deep Zoom", "zarr": "zarr", "zarr2": "zarr v2", "zarr3": "zarr v3"}
    raise SourceNotFoundError(f"no {what.get(fmt, fmt)} image at {loc.where} (looked for {looked})")
