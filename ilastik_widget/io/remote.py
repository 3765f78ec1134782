"""Reading over http(s) that behaves: timeouts, retries, bearer tokens and redirects.

Every request made by the image readers themselves (metadata, Deep Zoom tiles, objects behind redirects) goes
through :class:`HttpClient`:

* a connect timeout and a read timeout (seconds without a byte from the server), from ``timeout=`` or the module
  default :data:`DEFAULT_TIMEOUT` (environment variable ``ILASTIK_WIDGET_TIMEOUT``); a server that accepts and never
  answers gives a :class:`~ilastik_widget.io.errors.SourceError` naming the host after that time, not a hang;
* retries with exponential backoff for transient failures (connection refused or reset, HTTP 429, 500, 502, 503,
  504), never for a stalled server (the timeout is an answer);
* a bearer token from ``token=`` or the environment variable ``ILASTIK_WIDGET_TOKEN``, sent as
  ``Authorization: Bearer ...`` only over https (or to this machine), never logged or shown; redirects (e.g. to
  signed URLs of an object store) are followed and the token is dropped when one leads to another host or scheme;
* errors that name the host and the problem: HTTP 401/403 (a token is needed, or was refused), 404, other statuses,
  refused connections, TLS failures, responses larger than expected;
* connections kept alive in one pool per process that every client shares (:func:`close_connections` closes the idle
  ones): opening the next image on a server reuses them instead of connecting (and, over https, negotiating TLS)
  for each of its metadata requests. Tokens, timeouts and retries are per request, never stored with a connection.
"""

from __future__ import annotations

import functools
import math
import os
import threading
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

from ..core.json_numbers import is_finite_number
from .errors import HttpStatusError, SourceError, SourceNotFoundError, display_url, host_of

__all__ = [
    "DEFAULT_RETRIES",
    "DEFAULT_TIMEOUT",
    "TOKEN_ENV",
    "HttpClient",
    "RemoteOptions",
    "close_connections",
    "remote_options",
]

TOKEN_ENV = "ILASTIK_WIDGET_TOKEN"
TIMEOUT_ENV = "ILASTIK_WIDGET_TIMEOUT"


def _timeout_from_env() -> float:
    raw = os.environ.get(TIMEOUT_ENV, "")
    try:
        value = float(raw)
    except ValueError:
        return 30.0
    return value if math.isfinite(value) and value > 0 else 30.0


#: Seconds to wait for a connection and, once connected, for each piece of an answer.
DEFAULT_TIMEOUT: float = _timeout_from_env()
#: Further attempts after a transient failure.
DEFAULT_RETRIES: int = 3
_RETRY_STATUSES = frozenset({429, 500, 502, 503, 504})
_LOOPBACK = frozenset({"localhost", "127.0.0.1", "::1"})
#: Largest metadata document read (a JSON or XML file of a few kB in practice).
MAX_METADATA_BYTES = 16 * 2**20


@dataclass(frozen=True)
class RemoteOptions:
    """How to reach a server: ``timeout`` (connect, read) in seconds, ``retries``, and the bearer ``token``.

    The token never appears in ``repr``, in comparisons or in error messages.
    """

    timeout: tuple[float, float]
    retries: int = DEFAULT_RETRIES
    token: str | None = field(default=None, repr=False, compare=False)

    def headers_for(self, url: str) -> dict[str, str]:
        """Request headers for ``url``: the bearer token when one is set (refused over plain http to another host)."""
        if not self.token:
            return {}
        parts = urlsplit(url)
        if parts.scheme != "https" and (parts.hostname or "") not in _LOOPBACK:
            raise SourceError(
                f"refusing to send the token to {host_of(url)} over unencrypted {parts.scheme}: use an https URL"
            )
        return {"Authorization": f"Bearer {self.token}"}


def remote_options(timeout: Any = None, token: Any = None, retries: Any = None) -> RemoteOptions:
    """Check and complete the user's ``timeout``, ``token`` and ``retries``.

    ``timeout`` is seconds (one number for connecting and reading, or a ``(connect, read)`` pair), default
    :data:`DEFAULT_TIMEOUT`. ``token`` is a string, ``None`` for the environment variable ``ILASTIK_WIDGET_TOKEN``,
    or ``False`` for no token at all.
    """
    if timeout is None:
        timeout = DEFAULT_TIMEOUT
    pair = tuple(timeout) if isinstance(timeout, (tuple, list)) else (timeout, timeout)
    if len(pair) != 2 or not all(is_finite_number(t) and t > 0 for t in pair):
        raise ValueError(f"timeout must be a positive number of seconds or a (connect, read) pair, not {timeout!r}")
    if retries is None:
        retries = DEFAULT_RETRIES
    if isinstance(retries, bool) or not isinstance(retries, int) or not 0 <= retries <= 20:
        raise ValueError(f"retries must be an integer from 0 to 20, not {retries!r}")
    if token is None:
        token = os.environ.get(TOKEN_ENV) or None
    elif token is False:
        token = None
    if token is not None:
        if not isinstance(token, str) or not token.strip():
            raise ValueError("token must be a non-empty string (or None for $ILASTIK_WIDGET_TOKEN, False for none)")
        token = token.strip()
        if any(c in token for c in "\r\n\0 \t") or not token.isprintable():
            # the value goes into a header line: nothing that could end or split it
            raise ValueError("the token contains white space or control characters")
    return RemoteOptions((float(pair[0]), float(pair[1])), int(retries), token)


@functools.cache
def _retry_class():
    """The retry policy's class, made once (urllib3 is imported on first use; a class per request cost ~20 us)."""
    from urllib3.exceptions import ConnectTimeoutError, NewConnectionError, ReadTimeoutError
    from urllib3.util.retry import Retry

    class _Retry(Retry):
        """Retry transient failures, but answer a stalled server within the timeout instead of waiting again."""

        def increment(self, method=None, url=None, response=None, error=None, _pool=None, _stacktrace=None):
            # (a refused connection is a NewConnectionError, which urllib3 derives from ConnectTimeoutError)
            if isinstance(error, (ReadTimeoutError, ConnectTimeoutError)) and not isinstance(error, NewConnectionError):
                raise error
            return super().increment(method, url, response, error, _pool, _stacktrace)

    return _Retry


@dataclass
class Response:
    """Body, status and final URL (after redirects) of a GET."""

    data: bytes
    status: int
    url: str
    redirected: bool


_SHARED: tuple[int, Any] | None = None  # (process id, urllib3.PoolManager)
_SHARED_LOCK = threading.Lock()


def _shared_pool():
    """The connection pool of this process (a new one after a fork: sockets must not be shared between processes).
    At most 8 servers with at most 8 idle connections each are kept."""
    import urllib3

    global _SHARED
    with _SHARED_LOCK:
        if _SHARED is None or _SHARED[0] != os.getpid():
            _SHARED = (os.getpid(), urllib3.PoolManager(num_pools=8, maxsize=8, block=False))
        return _SHARED[1]


def close_connections() -> None:
    """Close the idle connections that the http clients of this process keep alive for their next requests."""
    with _SHARED_LOCK:
        if _SHARED is not None and _SHARED[0] == os.getpid():
            _SHARED[1].clear()


class HttpClient:
    """A small thread-safe http(s) client with the behaviour described in the module docstring.

    Parameters
    ----------
    options : RemoteOptions
        Timeouts, retries and token (see :func:`remote_options`).
    """

    def __init__(self, options: RemoteOptions | None = None):
        import urllib3

        self.options = options or remote_options()
        self._timeout = urllib3.Timeout(connect=self.options.timeout[0], read=self.options.timeout[1])
        self._pool = _shared_pool()

    def __repr__(self) -> str:
        return f"HttpClient(timeout={self.options.timeout}, retries={self.options.retries})"

    def close(self) -> None:
        """Nothing to release: the connections are the process's shared pool (see :func:`close_connections`)."""

    def __enter__(self) -> HttpClient:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def __getstate__(self) -> dict:  # connections do not travel to other processes
        return {"options": self.options}

    def __setstate__(self, state: dict) -> None:
        HttpClient.__init__(self, state["options"])

    def get(
        self,
        url: str,
        *,
        byte_range: tuple[int, int] | None = None,
        missing_ok: bool = False,
        max_bytes: int | None = None,
        what: str = "",
    ) -> Response | None:
        """GET ``url`` (``byte_range`` is ``(start, stop)``, stop exclusive).

        Returns ``None`` for a missing object (HTTP 404 or 410) when ``missing_ok``; raises
        :class:`SourceNotFoundError` for it otherwise, and :class:`SourceError` for every other failure.
        ``what`` says in messages what was read (e.g. ``"metadata"``).
        """
        import urllib3
        from urllib3.exceptions import (
            ConnectTimeoutError,
            HTTPError,
            LocationParseError,
            MaxRetryError,
            NewConnectionError,
            ProtocolError,
            ReadTimeoutError,
            SSLError,
        )

        headers = dict(self.options.headers_for(url))
        if byte_range is not None:
            headers["Range"] = f"bytes={int(byte_range[0])}-{int(byte_range[1]) - 1}"
        n = self.options.retries
        retry = _retry_class()(
            total=None,
            connect=n,
            read=n,
            status=n,
            other=0,
            redirect=10,
            backoff_factor=0.25,
            backoff_max=4.0,
            status_forcelist=_RETRY_STATUSES,
            allowed_methods=frozenset({"GET"}),
            raise_on_status=False,
            respect_retry_after_header=False,  # a Retry-After of an hour must not stall the kernel
        )
        where = display_url(url)
        label = f"{what} " if what else ""
        try:
            resp = self._pool.request(
                "GET", url, headers=headers, timeout=self._timeout, retries=retry, preload_content=False
            )
        except NewConnectionError as exc:
            raise SourceError(self._failure_text(url, exc, label)) from None
        except (ReadTimeoutError, ConnectTimeoutError, urllib3.exceptions.TimeoutError) as exc:
            raise SourceError(
                f"{host_of(url)} did not answer within {self._timeout_text(exc)} s (reading {label}{where})"
            ) from None
        except MaxRetryError as exc:
            raise SourceError(self._failure_text(url, exc.reason, label)) from None
        except (ProtocolError, SSLError) as exc:
            raise SourceError(self._failure_text(url, exc, label)) from None
        except LocationParseError as exc:
            raise SourceError(f"not a valid URL: {where} ({exc})") from None
        except HTTPError as exc:
            raise SourceError(f"reading {label}{where} failed: {type(exc).__name__}: {exc}") from None
        try:
            history = list(getattr(resp.retries, "history", ()) or ())
            final_url = history[-1].redirect_location if history and history[-1].redirect_location else url
            status = resp.status
            if status in (404, 410):
                if missing_ok:
                    return None
                raise SourceNotFoundError(f"nothing at {where} (HTTP {status} from {host_of(url)})")
            if status in (401, 403):
                raise HttpStatusError(self._auth_text(url, status, label), status)
            if byte_range is not None and status == 416:
                raise SourceError(f"{host_of(url)} refused the byte range of {label}{where} (HTTP 416)")
            if not 200 <= status < 300:
                tried = f" after {n + 1} attempts" if status in _RETRY_STATUSES and n else ""
                raise HttpStatusError(f"{host_of(url)} answered HTTP {status} for {label}{where}{tried}", status)
            data = self._read_body(resp, url, max_bytes, label)
        except (ReadTimeoutError, urllib3.exceptions.TimeoutError) as exc:
            raise SourceError(
                f"{host_of(url)} stopped sending within {self._timeout_text(exc)} s (reading {label}{where})"
            ) from None
        except (ProtocolError, HTTPError) as exc:
            raise SourceError(f"the connection to {host_of(url)} broke while reading {label}{where}: {exc}") from None
        finally:
            resp.drain_conn()  # an unread error body would break the next request on this connection
            resp.release_conn()
        if byte_range is not None and status == 200:  # the server ignored the range: cut the part asked for
            data = data[int(byte_range[0]) : int(byte_range[1])]
        return Response(data, status, final_url, bool(history))

    def get_many(self, urls: Iterable[str], **kwargs) -> list[Response | None]:
        """:meth:`get` each URL, in parallel threads (results in the order of ``urls``)."""
        urls = list(urls)
        if len(urls) <= 1:
            return [self.get(u, **kwargs) for u in urls]
        from concurrent.futures import ThreadPoolExecutor

        with ThreadPoolExecutor(max_workers=min(8, len(urls)), thread_name_prefix="ilastik-http") as pool:
            return list(pool.map(lambda u: self.get(u, **kwargs), urls))

    # ------------------------------------------------------------------ messages
    def _timeout_text(self, exc) -> str:
        t = self._timeout.connect_timeout if "connect" in str(exc).lower() else self._timeout.read_timeout
        return f"{t:g}"

    def _auth_text(self, url: str, status: int, label: str) -> str:
        word = "refused access to" if status == 401 else "forbade access to"
        if self.options.token:
            hint = "the token was refused (wrong or expired?)" if status == 401 else "the token does not grant access"
        else:
            hint = f"it may need a token: pass token=... or set ${TOKEN_ENV}"
        return f"{host_of(url)} {word} {label}{display_url(url)} (HTTP {status}): {hint}"

    @staticmethod
    def _failure_text(url: str, reason: Any, label: str) -> str:
        from urllib3.exceptions import NewConnectionError, ProtocolError, SSLError

        host = host_of(url)
        text = str(reason)
        if isinstance(reason, NewConnectionError) or "refused" in text.lower():
            why = "connection refused" if "refused" in text.lower() else text.split(": ", 1)[-1]
            return f"cannot connect to {host}: {why} (reading {label}{display_url(url)})"
        if isinstance(reason, SSLError):
            return f"TLS error with {host}: {text} (reading {label}{display_url(url)})"
        if isinstance(reason, ProtocolError):
            return f"the connection to {host} broke: {text} (reading {label}{display_url(url)})"
        if "redirect" in text.lower():
            return f"too many redirects from {host} for {display_url(url)}"
        return f"reading {label}{display_url(url)} from {host} failed: {text}"

    @staticmethod
    def _read_body(resp, url: str, max_bytes: int | None, label: str) -> bytes:
        declared = resp.headers.get("Content-Length")
        if max_bytes is not None and declared and declared.isdigit() and int(declared) > max_bytes:
            raise SourceError(
                f"{label}{display_url(url)} is {int(declared)} bytes, more than the {max_bytes} expected at most"
            )
        chunks, total = [], 0
        for piece in resp.stream(2**20, decode_content=True):
            chunks.append(piece)
            total += len(piece)
            if max_bytes is not None and total > max_bytes:
                raise SourceError(f"{label}{display_url(url)} is larger than the {max_bytes} bytes expected at most")
        return b"".join(chunks)
