"""A small threaded http server on 127.0.0.1 serving a directory, for tests of remote reading.

It answers GET and HEAD with byte ranges (``Range: bytes=a-b`` and suffix ranges, as sharded formats need) and can:
require a bearer token (401 without one, 403 with a wrong one), redirect every request to a second server (as
object stores redirect to signed URLs), send CORS headers or not, fail a number of requests with 503 or by
resetting the connection, accept connections but never answer, and look paths up as an object store does
(``object_store``: a doubled slash is not collapsed). Every request is recorded (path, whether an
Authorization header came, the range) so tests can check what was fetched; requests that carry an ``Origin`` header
(a browser's cross-origin fetches; the kernel's readers send none) are listed apart in ``from_browser``.

>>> with LoopbackServer(root) as srv:                 # doctest: +SKIP
...     url = srv.url + "/image.zarr"
"""

from __future__ import annotations

import http.server
import os
import re
import socket
import struct
import threading
import time
from urllib.parse import unquote, urlsplit


def open_connections(*ports: int) -> int:
    """This process's TCP connections (either end, listening sockets aside) with a local or remote port among
    ``ports``: the servers' and their clients' sockets, and no other file this process has open."""
    own = set()
    for fd in os.listdir("/proc/self/fd"):
        try:
            target = os.readlink(f"/proc/self/fd/{fd}")
        except OSError:  # closed since listed
            continue
        if target.startswith("socket:["):
            own.add(target[8:-1])
    count = 0
    for table in ("/proc/self/net/tcp", "/proc/self/net/tcp6"):
        with open(table) as f:
            next(f)
            for line in f:
                field = line.split()
                local, remote, state, inode = field[1], field[2], field[3], field[9]
                if inode in own and state != "0A" and {int(local[-4:], 16), int(remote[-4:], 16)} & set(ports):
                    count += 1
    return count


class _Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: _Server

    def log_message(self, *args):  # quiet
        pass

    def setup(self):
        super().setup()
        # headers and body go out in two writes: without this, Nagle's algorithm holds the body back until the
        # client's delayed acknowledgement of the headers (40 ms per small answer)
        self.connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        with self.server.owner.lock:
            self.server.owner.connections += 1

    def do_HEAD(self):
        self._answer(head=True)

    def do_GET(self):
        self._answer(head=False)

    def do_OPTIONS(self):
        self.send_response(204)
        self._cors()
        self.send_header("Access-Control-Allow-Headers", "Authorization, Range")
        self.send_header("Content-Length", "0")
        self.end_headers()

    def _cors(self):
        if self.server.owner.cors:
            self.send_header("Access-Control-Allow-Origin", "*")
            self.send_header("Access-Control-Expose-Headers", "Content-Range, Content-Length")

    def _status(self, code: int):
        self.send_response(code)
        self._cors()
        self.send_header("Content-Length", "0")
        self.end_headers()

    def _answer(self, head: bool):
        srv = self.server.owner
        path = unquote(urlsplit(self.path).path)
        auth = self.headers.get("Authorization")
        with srv.lock:
            srv.requests.append((path, auth, self.headers.get("Range")))
            if self.headers.get("Origin") is not None:
                srv.from_browser.append(path)
            hang = srv.hang
            fail = srv.fail_next > 0 and not path.endswith(srv.never_fail)
            if fail:
                srv.fail_next -= 1
        if hang:
            srv._hanging.wait(600)  # accept, read the request, never answer
            return
        if fail:
            if srv.fail_mode == "reset":  # RST instead of an answer
                self.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
                self.close_connection = True
                return
            self._status(503)
            return
        if srv.token is not None:
            if auth is None:
                self._status(401)
                return
            if auth != f"Bearer {srv.token}":
                self._status(403)
                return
        if srv.redirect_to is not None:
            self.send_response(302)
            query = f"?signature={srv.signature}" if srv.signature else ""
            self.send_header("Location", f"{srv.redirect_to.url}{self.path.split('?')[0]}{query}")
            self._cors()
            self.send_header("Content-Length", "0")
            self.end_headers()
            return
        if srv.require_signature and f"signature={srv.require_signature}" not in self.path:
            self._status(403)
            return
        file = os.path.normpath(os.path.join(srv.root, path.lstrip("/")))
        if srv.object_store and "//" in path:  # a key, not a file path: "a//b" is not "a/b"
            self._status(404)
            return
        if not file.startswith(os.path.normpath(srv.root)) or not os.path.isfile(file):
            self._status(404)
            return
        with open(file, "rb") as fh:
            data = fh.read()
        rng = self.headers.get("Range")
        if rng:
            m = re.fullmatch(r"bytes=(\d*)-(\d*)", rng.strip())
            if not m or (not m.group(1) and not m.group(2)):
                self._status(416)
                return
            a, b = m.groups()
            if a == "":
                start, end = max(0, len(data) - int(b)), len(data) - 1
            else:
                start, end = int(a), min(int(b) if b else len(data) - 1, len(data) - 1)
            if start > end and len(data):
                self._status(416)
                return
            body = data[start : end + 1]
            self.send_response(206)
            self.send_header("Content-Range", f"bytes {start}-{end}/{len(data)}")
        else:
            body = data
            self.send_response(200)
        self._cors()
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if not head:
            self.wfile.write(body)


class _Server(http.server.ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True
    request_queue_size = 128  # tensorstore opens dozens of connections at once; a short backlog drops their SYNs
    owner: LoopbackServer

    def handle_error(self, request, client_address):  # clients that reset or time out are part of the tests
        pass


class LoopbackServer:
    """Serve ``root`` on 127.0.0.1 (a free port) until :meth:`close`; see the module docstring for the options."""

    def __init__(self, root, *, token: str | None = None, cors: bool = True, host: str = "127.0.0.1"):
        self.root = os.fspath(root)
        self.token = token
        self.cors = cors
        self.redirect_to: LoopbackServer | None = None
        self.signature: str | None = None  # query string the redirect adds
        self.require_signature: str | None = None  # answer 403 to requests without it
        self.fail_next = 0
        self.fail_mode = "503"
        self.never_fail: tuple[str, ...] = ()
        self.hang = False
        self.object_store = False  # paths as keys: a doubled slash is not collapsed (404)
        self.requests: list[tuple[str, str | None, str | None]] = []
        self.from_browser: list[str] = []  # paths of the requests that came with an Origin header
        self.connections = 0  # connections accepted
        self.lock = threading.Lock()
        self._hanging = threading.Event()
        self._srv = _Server((host, 0), _Handler)
        self._srv.owner = self
        self.port = self._srv.server_address[1]
        self.url = f"http://{host}:{self.port}"
        self._thread = threading.Thread(target=self._srv.serve_forever, daemon=True, name="loopback-http")
        self._thread.start()

    def chunk_requests(self, metadata=("zarr.json", ".zarray", ".zattrs", ".zgroup", "attributes.json", "info")):
        """Paths requested that are not metadata documents."""
        with self.lock:
            return [p for p, _, _ in self.requests if not p.endswith(metadata)]

    def clear(self) -> None:
        with self.lock:
            self.requests.clear()
            self.from_browser.clear()

    def close(self) -> None:
        self._hanging.set()
        self._srv.shutdown()
        self._srv.server_close()
        self._thread.join(10)

    def __enter__(self) -> LoopbackServer:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


class SilentServer:
    """Accepts connections on 127.0.0.1 and never reads or answers (a server that hangs)."""

    def __init__(self):
        self._sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self._sock.bind(("127.0.0.1", 0))
        self._sock.listen(64)
        self.port = self._sock.getsockname()[1]
        self.url = f"http://127.0.0.1:{self.port}"
        self._conns: list[socket.socket] = []
        self._stop = False
        self._thread = threading.Thread(target=self._accept, daemon=True, name="silent-http")
        self._thread.start()

    def _accept(self):
        self._sock.settimeout(0.05)
        while not self._stop:
            try:
                conn, _ = self._sock.accept()
                conn.setblocking(False)
                self._conns.append(conn)
            except OSError:
                pass
            for c in list(self._conns):  # read and ignore requests; close when the client gives up
                try:
                    if c.recv(65536) == b"":
                        c.close()
                        self._conns.remove(c)
                except BlockingIOError:
                    pass
                except OSError:
                    c.close()
                    self._conns.remove(c)
            time.sleep(0.01)

    def close(self) -> None:
        self._stop = True
        self._thread.join(5)
        for c in self._conns:
            c.close()
        self._sock.close()

    def __enter__(self) -> SilentServer:
        return self

    def __exit__(self, *exc) -> None:
        self.close()
