"""Errors of the image readers, and keeping secrets out of their messages.

Every problem with a source the user named (a path, a URL, metadata found there) is a :class:`SourceError`, a
``ValueError`` whose message names the place (file, URL or host) and what is wrong there.
"""

from __future__ import annotations

import re
from urllib.parse import urlsplit, urlunsplit

__all__ = ["HttpStatusError", "SourceError", "SourceNotFoundError", "display_url", "host_of", "redact"]


class SourceError(ValueError):
    """An image source that cannot be read as asked: malformed metadata, a server error, a refused token..."""


class SourceNotFoundError(SourceError, FileNotFoundError):
    """Nothing at the path or URL (also a ``FileNotFoundError``)."""


class HttpStatusError(SourceError):
    """A server answered with an error status (``status``), e.g. 401, 403 or 500."""

    def __init__(self, message: str, status: int):
        super().__init__(message)
        self.status = int(status)


def display_url(url: str) -> str:
    """``url`` fit for a message: without a query string (signed URLs carry credentials there) or user info."""
    try:
        parts = urlsplit(url)
    except ValueError:
        return "<unparseable URL>"
    if not parts.scheme or not parts.netloc:
        return url
    host = parts.hostname or ""
    if parts.port is not None:
        host = f"{host}:{parts.port}"
    return urlunsplit((parts.scheme, host, parts.path, "", ""))


def host_of(url: str) -> str:
    """``host[:port]`` of ``url`` (for messages)."""
    try:
        parts = urlsplit(url)
        return parts.hostname + (f":{parts.port}" if parts.port is not None else "") if parts.hostname else url
    except ValueError:
        return "<unparseable URL>"


# tensorstore appends the whole JSON spec (with any request headers) to its error messages
_SPEC_RE = re.compile(r"\s*\[tensorstore_spec=.*$", re.DOTALL)
_AUTH_RE = re.compile(r"(authorization\s*:\s*)(bearer\s+)?[^\s\"',\]]+", re.IGNORECASE)


def redact(message: str, *secrets: str | None) -> str:
    """``message`` without tensorstore's spec dump, ``Authorization`` header values, or any of ``secrets``."""
    out = _SPEC_RE.sub("", str(message))
    out = _AUTH_RE.sub(lambda m: m.group(1) + "<redacted>", out)
    for s in secrets:
        if s:
            out = out.replace(s, "<redacted>")
    return out
