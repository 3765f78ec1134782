"""Where an image lives: a local directory or file, or an http(s) URL, and the format the user named, if any.

:func:`parse_location` understands plain paths and URLs, ``file://`` URLs, and Neuroglancer's spellings of a data
source: the format as a scheme prefix (``precomputed://https://...``, ``n5://``, ``zarr://``, ``zarr2://``,
``zarr3://``, ``deepzoom://``) or as a pipeline suffix (``https://...|zarr3:``, ``|neuroglancer-precomputed:``...).
:class:`Location` reads the documents (metadata, tiles) under it, from disk or through
:class:`~ilastik_widget.io.remote.HttpClient`.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field, replace
from urllib.parse import quote, unquote, urlsplit, urlunsplit

from .errors import SourceError, SourceNotFoundError, display_url
from .remote import HttpClient

__all__ = ["FORMATS", "Location", "parse_location"]

#: Format names, as ``format=`` takes them and as ``ImageSource.data_format`` reports them.
FORMATS = ("zarr", "zarr2", "zarr3", "n5", "precomputed", "deepzoom")
_PREFIXES = {
    "precomputed": "precomputed",
    "neuroglancer-precomputed": "precomputed",
    "n5": "n5",
    "zarr": "zarr",
    "zarr2": "zarr2",
    "zarr3": "zarr3",
    "deepzoom": "deepzoom",
    "dzi": "deepzoom",
}


@dataclass(frozen=True)
class Location:
    """A local path (absolute) or an http(s) URL, without a trailing slash, and the format named by the user."""

    root: str
    remote: bool
    format: str | None = None
    query: str = ""  # an http URL's query string, sent with every request under it (signed URLs)
    client: HttpClient | None = field(default=None, repr=False, compare=False)

    @property
    def url(self) -> str | None:
        """The http(s) URL (with its query string), ``None`` for a local path."""
        if not self.remote:
            return None
        return self.root + (f"?{self.query}" if self.query else "")

    @property
    def where(self) -> str:
        """The location for messages (no query string: it may hold a signature)."""
        return display_url(self.root) if self.remote else self.root

    @property
    def name(self) -> str:
        """The last part of the path or URL, unquoted (``"image"`` when there is none)."""
        return unquote(self.root.rstrip("/").rsplit("/", 1)[-1]) or "image"

    def child(self, key: str) -> Location:
        """The location of ``key`` (a relative path) under this one."""
        key = key.strip("/")
        if not key:
            return self
        if self.remote:
            return replace(self, root=f"{self.root}/{quote(key, safe='/')}")
        return replace(self, root=os.path.join(self.root, *key.split("/")))

    def key_url(self, key: str) -> str:
        """URL of ``key`` under this (remote) location, with the query string."""
        return self.child(key).url or ""

    def key_where(self, key: str) -> str:
        """Where ``key`` under this location is, for messages (no query string)."""
        return self.child(key).where

    def read(self, key: str = "", *, missing_ok: bool = True, max_bytes: int | None = None, what: str = ""):
        """Bytes of the document ``key`` under this location; ``None`` when it does not exist and ``missing_ok``."""
        if self.remote:
            if self.client is None:
                raise RuntimeError("a remote Location needs an HttpClient")
            resp = self.client.get(self.key_url(key), missing_ok=missing_ok, max_bytes=max_bytes, what=what)
            return None if resp is None else resp.data
        path = self.child(key).root
        if not os.path.isfile(path):
            if missing_ok:
                return None
            raise SourceNotFoundError(f"no such file: {path!r}")
        if max_bytes is not None and os.path.getsize(path) > max_bytes:
            raise SourceError(f"{path}: {os.path.getsize(path)} bytes, more than the {max_bytes} expected for {what}")
        try:
            with open(path, "rb") as fh:
                return fh.read()
        except OSError as exc:
            raise SourceError(f"cannot read {path}: {exc.strerror or exc}") from None


def parse_location(spec: str, format: str | None = None) -> Location | None:
    """Parse a path, URL or Neuroglancer source string; ``None`` for URL schemes other than http(s) and file.

    Raises
    ------
    SourceError
        An unknown format, credentials in the URL, or a format named twice in different ways.
    """
    s = spec.strip()
    named = None
    if "|" in s:  # Neuroglancer pipeline: URL|format:
        s, _, tail = s.partition("|")
        fmt = tail.strip().rstrip(":").lower()
        if fmt not in _PREFIXES or ":" in tail.strip()[:-1]:
            raise SourceError(f"{spec!r}: unknown data format {tail!r} (known: {', '.join(FORMATS)})")
        named = _PREFIXES[fmt]
    scheme, sep, rest = s.partition("://")
    if sep and scheme.lower() in _PREFIXES:
        if named is not None:
            raise SourceError(f"{spec!r} names its format twice")
        named = _PREFIXES[scheme.lower()]
        s = rest
        scheme, sep, rest = s.partition("://")
    if format is not None:
        if format not in FORMATS:
            raise ValueError(f"format must be one of {', '.join(FORMATS)}, not {format!r}")
        if named is not None and named != format and not (named == "zarr" and format.startswith("zarr")):
            raise SourceError(f"{spec!r} is {named} but format={format!r} was given")
        named = format
    if sep and scheme.lower() == "file":
        path = unquote(urlsplit(s).path)
        return Location(os.path.abspath(path).rstrip(os.sep) or os.sep, False, named)
    if sep and scheme.lower() in ("http", "https"):
        try:
            parts = urlsplit(s)
            parts.port  # noqa: B018  (raises for a malformed port)
        except ValueError as exc:
            raise SourceError(f"not a valid URL: {display_url(s)!r} ({exc})") from None
        if not parts.hostname:
            raise SourceError(f"the URL {display_url(s)!r} has no host")
        if parts.username or parts.password:
            raise SourceError(
                f"the URL for {parts.hostname} contains credentials: pass them as token=... (or $ILASTIK_WIDGET_TOKEN)"
            )
        if parts.fragment:
            raise SourceError(f"the URL {display_url(s)!r} has a fragment (#...)")
        root = urlunsplit((parts.scheme.lower(), parts.netloc, parts.path.rstrip("/"), "", ""))
        return Location(root, True, named, parts.query)
    if sep:
        return None
    return Location(os.path.abspath(s).rstrip(os.sep) or os.sep, False, named)
