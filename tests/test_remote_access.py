"""Remote access that behaves, against loopback http servers: bearer tokens (never shown or saved), redirects to
another host and to signed URLs, transient failures retried, stalled and refused servers answered within the
timeout with the host named, and nothing left open after a failure."""

from __future__ import annotations

import gc
import logging
import os
import threading
import time
import traceback

import numpy as np
import pytest
from format_fixtures import write_dzi, write_n5, write_precomputed, write_zarr3_sharded
from loopback_http import LoopbackServer, SilentServer, open_connections

import ilastik_widget.io
from ilastik_widget.io.errors import SourceError
from ilastik_widget.io.remote import HttpClient, close_connections, remote_options
from ilastik_widget.io.sources import open_source

IO_PACKAGE = os.path.dirname(ilastik_widget.io.__file__)
TOKEN = "tok-3f9a1c77-secret"
RNG = np.random.default_rng(11)
VOLUME = RNG.integers(0, 250, (12, 50, 40), dtype=np.uint8)
SLIDE = RNG.integers(0, 255, (150, 130), dtype=np.uint8)


@pytest.fixture(scope="module")
def root(tmp_path_factory):
    root = tmp_path_factory.mktemp("remote")
    write_precomputed(root / "pc", VOLUME)
    write_precomputed(root / "pc_sharded", VOLUME, sharded=True)
    write_n5(root / "n5", VOLUME)
    write_zarr3_sharded(root / "z3", VOLUME, (8, 32, 32), (4, 16, 16))
    write_dzi(root, "slide", SLIDE, tile=64, overlap=1)
    return root


@pytest.fixture(autouse=True)
def no_env_token(monkeypatch):
    monkeypatch.delenv("ILASTIK_WIDGET_TOKEN", raising=False)


def _data(name):
    return SLIDE if name.endswith(".dzi") else VOLUME


# ---------------------------------------------------------------------- tokens
def test_token_needed_refused_and_accepted(root, tmp_path, caplog, monkeypatch):
    caplog.set_level(logging.DEBUG)
    with LoopbackServer(root, token=TOKEN) as srv:
        with pytest.raises(SourceError, match=r"127\.0\.0\.1:\d+ refused access .*HTTP 401.*pass token="):
            open_source(f"{srv.url}/pc")
        with pytest.raises(SourceError, match=r"forbade access .*HTTP 403.*the token does not grant access") as err:
            open_source(f"{srv.url}/pc", token="wrong-token")
        assert "wrong-token" not in str(err.value)
        for name in ("pc", "pc_sharded", "n5", "z3", "slide.dzi"):
            src = open_source(f"{srv.url}/{name}", token=TOKEN)
            np.testing.assert_array_equal(src[...], _data(name))
            np.testing.assert_array_equal(src.array.compute(), _data(name))
            shown = [repr(src), str(src), repr(src._base), repr(src.array), str(src.reference()), repr(src.storage)]
            assert not any(TOKEN in text for text in shown)
            assert src.storage.needs_token
        monkeypatch.setenv("ILASTIK_WIDGET_TOKEN", TOKEN)
        np.testing.assert_array_equal(open_source(f"{srv.url}/n5")[...], VOLUME)  # from the environment
        with pytest.raises(SourceError, match="HTTP 401"):
            open_source(f"{srv.url}/n5", token=False)  # False: no token at all
        # a saved project refers to the URL, never to the token
        from ilastik_widget.core.session import Session
        from ilastik_widget.io.project import save_session

        s = Session(open_source(f"{srv.url}/pc"), classes=["a", "b"])
        save_session(s, tmp_path / "p.ilastikw")
        assert TOKEN.encode() not in (tmp_path / "p.ilastikw").read_bytes()
    assert not any(TOKEN in r.getMessage() for r in caplog.records)


def test_widget_and_project_take_a_token_and_keep_it_out(root, tmp_path):
    from ilastik_widget.io.project import load_session, save_session
    from ilastik_widget.widget.widget import IlastikWidget

    with LoopbackServer(root, token=TOKEN) as srv:
        w = IlastikWidget(f"{srv.url}/pc", token=TOKEN, timeout=5)
        np.testing.assert_array_equal(w.session.image[3].compute(), VOLUME[3])
        raw = w.source_info["layer_specs"][0]
        assert raw["source"]["url"].startswith("mem://") and "fallback" not in raw  # the browser has no token
        assert TOKEN not in str(w.source_info)
        save_session(w.session, tmp_path / "p.ilastikw")
        w.close()
        assert TOKEN.encode() not in (tmp_path / "p.ilastikw").read_bytes()
        with pytest.raises(SourceError, match="HTTP 401"):
            load_session(tmp_path / "p.ilastikw")
        s = load_session(tmp_path / "p.ilastikw", token=TOKEN, timeout=5)
        np.testing.assert_array_equal(s.image[5].compute(), VOLUME[5])
        w = IlastikWidget.from_project(tmp_path / "p.ilastikw", token=TOKEN, autosave=False)
        np.testing.assert_array_equal(w.session.image[7].compute(), VOLUME[7])
        w.close()
    with pytest.raises(ValueError, match="token apply to an image given as a path or URL"):
        IlastikWidget(VOLUME, token=TOKEN)


def test_chunk_reads_after_a_token_is_revoked_name_the_problem(root):
    with LoopbackServer(root, token=TOKEN) as srv:
        src = open_source(f"{srv.url}/z3", token=TOKEN)
        srv.token = "rotated"
        with pytest.raises(SourceError) as err:
            src[...]
        assert "z3" in str(err.value) and TOKEN not in str(err.value) and "403" in str(err.value)


def test_token_never_sent_over_plain_http_to_another_machine():
    # refused before any connection is made (the host does not even resolve)
    with pytest.raises(SourceError, match="refusing to send the token to data.example.invalid over unencrypted http"):
        open_source("http://data.example.invalid/image.zarr", token=TOKEN, timeout=1)


def test_bad_arguments():
    with pytest.raises(ValueError, match="timeout must be a positive number"):
        open_source("http://127.0.0.1:9/x", timeout=-1)
    with pytest.raises(ValueError, match="timeout must be a positive number"):
        open_source("http://127.0.0.1:9/x", timeout=(10**400, 5))  # beyond float range
    with pytest.raises(ValueError, match="white space or control characters"):
        open_source("http://127.0.0.1:9/x", token="abc\r\nX-Injected: 1")
    with pytest.raises(SourceError, match="contains credentials: pass them as token"):
        open_source("https://user:pw@example.org/a.zarr")
    with pytest.raises(ValueError, match="storage_options apply to fsspec URLs"):
        open_source("https://example.org/a.zarr", storage_options={"headers": {"Authorization": "Bearer x"}})


# ---------------------------------------------------------------------- redirects
@pytest.mark.parametrize("name", ["pc", "pc_sharded", "n5", "z3", "slide.dzi"])
def test_redirect_to_another_host_drops_the_token(root, name):
    with LoopbackServer(root) as target, LoopbackServer(root, token=TOKEN) as front:
        front.redirect_to = target
        src = open_source(f"{front.url}/{name}", token=TOKEN)
        np.testing.assert_array_equal(src[...], _data(name))
        assert src.url == f"{front.url}/{name}"  # the user's URL, which a browser follows itself
        assert {auth for _, auth, _ in target.requests} == {None}
        assert {auth for _, auth, _ in front.requests} == {f"Bearer {TOKEN}"}


@pytest.mark.parametrize("name", ["pc", "n5", "z3", "slide.dzi"])
def test_redirect_of_every_object_to_a_signed_url(root, name):
    with LoopbackServer(root) as store, LoopbackServer(root, token=TOKEN) as proxy:
        proxy.redirect_to, proxy.signature, store.require_signature = store, "sig123", "sig123"
        src = open_source(f"{proxy.url}/{name}", token=TOKEN)
        np.testing.assert_array_equal(src[...], _data(name))
        np.testing.assert_array_equal(src[2:5, 7:30:3] if src.ndim == 3 else src[7:90:3, 2:5], _data(name)[2:5, 7:30:3] if src.ndim == 3 else _data(name)[7:90:3, 2:5])  # fmt: skip
        assert {auth for _, auth, _ in store.requests} == {None}
        store.clear()
        src[...]
        assert store.chunk_requests() == []  # fetched objects are kept


def test_sharded_precomputed_behind_signed_urls_is_refused_clearly(root):
    with LoopbackServer(root) as store, LoopbackServer(root) as proxy:
        proxy.redirect_to, proxy.signature, store.require_signature = store, "s", "s"
        with pytest.raises(SourceError, match="sharded precomputed volume cannot be read from a server that redirects"):
            open_source(f"{proxy.url}/pc_sharded")


# ---------------------------------------------------------------------- failures
@pytest.mark.parametrize("mode", ["503", "reset"])
def test_transient_failures_are_retried(root, mode):
    with LoopbackServer(root) as srv:
        srv.fail_mode, srv.fail_next = mode, 2
        src = open_source(f"{srv.url}/n5")  # metadata: two failures, then the answer
        srv.fail_next = 2
        np.testing.assert_array_equal(src[...], VOLUME)  # chunks (tensorstore's retries)
        srv.fail_next = 2
        np.testing.assert_array_equal(open_source(f"{srv.url}/slide.dzi")[...], SLIDE)


def test_persistent_server_errors_name_host_and_status(root):
    with LoopbackServer(root) as srv:
        srv.fail_next = 10**6
        with pytest.raises(SourceError, match=rf"127\.0\.0\.1:{srv.port} answered HTTP 503 .* after 4 attempts"):
            open_source(f"{srv.url}/pc")
        srv.fail_next = 0
        src = open_source(f"{srv.url}/pc_sharded")
        srv.fail_next = 10**6
        with pytest.raises(SourceError, match=r"pc_sharded .*Service Unavailable|pc_sharded .*503"):
            src[...]


def test_server_that_never_answers_gives_an_error_within_the_timeout():
    with SilentServer() as srv:
        for url in (f"{srv.url}/image.zarr", f"precomputed://{srv.url}/vol", f"{srv.url}/slide.dzi"):
            t0 = time.monotonic()
            with pytest.raises(SourceError, match=rf"127\.0\.0\.1:{srv.port} did not answer within 1 s"):
                open_source(url, timeout=1)
            assert time.monotonic() - t0 < 30  # (pytest-timeout would catch a hang; this names it)


def test_server_that_stops_answering_after_opening(root):
    with LoopbackServer(root) as srv:
        src = open_source(f"{srv.url}/slide.dzi", timeout=1)
        srv.hang = True
        with pytest.raises(SourceError, match="did not answer within 1 s"):
            src[...]


def test_refused_connection_is_named():
    with pytest.raises(SourceError, match=r"cannot connect to 127\.0\.0\.1:9: connection refused"):
        open_source("http://127.0.0.1:9/image.zarr", timeout=2)


def test_missing_documents(root):
    with LoopbackServer(root) as srv:
        with pytest.raises(FileNotFoundError, match="no zarr, N5, precomputed or Deep Zoom image at"):
            open_source(f"{srv.url}/nothing-here")
        with pytest.raises(FileNotFoundError, match=r"nothing at .*missing\.dzi \(HTTP 404"):
            open_source(f"{srv.url}/missing.dzi")


def _threads_started_by_readers(monkeypatch) -> list[threading.Thread]:
    """The threads started from now on with the readers (``ilastik_widget.io``) on the starting thread's stack, so
    that threads started meanwhile by what earlier tests left running are not counted."""
    started: list[threading.Thread] = []
    start = threading.Thread.start

    def recording_start(thread):
        if any(frame.filename.startswith(IO_PACKAGE) for frame in traceback.extract_stack()):
            started.append(thread)
        start(thread)

    monkeypatch.setattr(threading.Thread, "start", recording_start)
    return started


def _running(threads: list[threading.Thread]) -> int:
    """How many of ``threads`` still run, the readers' bounded pools aside (checked separately)."""
    pools = ("ilastik-metadata", "ilastik-dzi")
    return sum(t.is_alive() and not t.name.startswith(pools) for t in threads)


def _settled(count, limit: int) -> bool:
    """``count() <= limit`` within a few seconds (the servers notice closed connections asynchronously), with the
    idle connections that the clients keep alive for their next requests closed first."""
    deadline = time.monotonic() + 5
    while True:
        settled = count() <= limit
        if settled or time.monotonic() > deadline:
            return settled
        close_connections()
        gc.collect()
        time.sleep(0.05)


def test_failed_opens_leave_no_threads_or_connections(root, monkeypatch):
    with LoopbackServer(root, token=TOKEN) as srv, SilentServer() as silent:

        def failures():
            for call in (
                lambda: open_source(f"{srv.url}/pc"),  # 401
                lambda: open_source(f"{srv.url}/pc", token="bad"),  # 403
                lambda: open_source(f"{srv.url}/nothing", token=TOKEN),  # 404
                lambda: open_source(f"{silent.url}/x.zarr", timeout=0.5),  # stalled
                lambda: open_source("http://127.0.0.1:9/x.zarr", timeout=0.5),  # refused
            ):
                with pytest.raises(SourceError):
                    call()

        failures()  # warm up (tensorstore's own thread pools start once)
        started = _threads_started_by_readers(monkeypatch)
        for _ in range(3):
            failures()
        assert _settled(lambda: _running(started), 0), [t.name for t in started if t.is_alive()]
        # the sockets to and of these servers, not every file of the process: threads left by earlier tests open
        # and close files of their own meanwhile (a CI run once counted one such file)
        assert _settled(lambda: open_connections(srv.port, silent.port), 0), open_connections(srv.port, silent.port)
        from ilastik_widget.io.opener import METADATA_THREADS

        assert sum(t.name.startswith("ilastik-metadata") for t in threading.enumerate()) <= METADATA_THREADS


def test_clients_share_kept_alive_connections(root):
    """Opening the next image on a server reuses the connections of the last (no connect, no TLS handshake per
    metadata request); close_connections() closes the idle ones."""
    with LoopbackServer(root) as srv:
        close_connections()
        for _ in range(3):
            HttpClient(remote_options(timeout=5)).get(f"{srv.url}/pc/info")
        assert srv.connections == 1
        np.testing.assert_array_equal(open_source(f"{srv.url}/pc")[...], VOLUME)
        before, n_requests = srv.connections, len(srv.requests)
        for _ in range(5):
            open_source(f"{srv.url}/pc")
        time.sleep(0.5)  # the probes the precomputed volume did not need end
        # each open sends six format probes at once (and reads the volume's info): 30 connections or more if every
        # open connected anew, a few more than the first open kept when connections are kept
        assert len(srv.requests) - n_requests >= 35 and srv.connections - before <= 12, srv.connections - before
        close_connections()
        before = srv.connections
        HttpClient(remote_options(timeout=5)).get(f"{srv.url}/pc/info")
        assert srv.connections == before + 1


def test_format_detection_asks_for_the_likeliest_document_first(root, monkeypatch):
    """zarr.json is asked for alone for a moment: a zarr v3 image on a near server opens without the five other
    probes; any other format gets them all (and opens as before)."""
    from ilastik_widget.io import formats

    monkeypatch.setattr(formats, "PROBE_FIRST_ALONE", 5.0)  # a slow machine still answers within it
    probes = ("zarr.json", ".zarray", ".zattrs", ".zgroup", "attributes.json", "info")
    with LoopbackServer(root) as srv:
        np.testing.assert_array_equal(open_source(f"{srv.url}/z3")[...], VOLUME)
        asked = [p for p, _, _ in srv.requests if p.endswith(probes)]
        assert asked == ["/z3/zarr.json"], asked
        srv.clear()
        np.testing.assert_array_equal(open_source(f"{srv.url}/pc")[...], VOLUME)
        time.sleep(0.5)  # the probes precomputed does not need end
        asked = {p.rsplit("/", 1)[1] for p, _, _ in srv.requests if p.startswith("/pc/") and p.endswith(probes)}
        assert asked == set(probes), asked


def test_http_client_byte_ranges_and_size_limits(root):
    with LoopbackServer(root) as srv, HttpClient(remote_options(timeout=5)) as client:
        url = f"{srv.url}/pc/info"
        whole = client.get(url).data
        assert client.get(url, byte_range=(3, 10)).data == whole[3:10]
        with pytest.raises(SourceError, match="more than the 10 expected at most"):
            client.get(url, max_bytes=10, what="metadata")
        assert client.get(f"{srv.url}/pc/none", missing_ok=True) is None
