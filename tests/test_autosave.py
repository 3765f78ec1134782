"""ilastik_widget.io.autosave: every change saved at the cost of the change, off the painting thread, surviving
killed kernels; stale temporary files cleaned when a project is opened."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import textwrap
import threading
import time
import zipfile
import zlib
from pathlib import Path

import numpy as np
import pytest

from ilastik_widget.core.features import FeatureSelection
from ilastik_widget.core.session import Session
from ilastik_widget.io import archive
from ilastik_widget.io.autosave import enable_autosave
from ilastik_widget.io.journal import journal_path
from ilastik_widget.io.project import ProjectError, load_session, read_project, save_session

REPO = Path(__file__).resolve().parents[1]
SEL = FeatureSelection.none().with_feature("gaussian_smoothing", 1.0, True)
ENV = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")])}


def _strokes(s):
    return [(t.id, t.label, t.points.tolist(), t.radius, tuple(t.axes), t.erase) for t in s.strokes]


def _image(shape=(64, 64)):
    return np.random.default_rng(8).normal(size=shape).astype(np.float32)


def _file_strokes(path):
    """Strokes in the project file itself, without its journal."""
    with zipfile.ZipFile(path) as zf:
        return len(json.loads(zf.read("project.json"))["strokes"])


def _wait_for(condition, timeout=30.0):
    t0 = time.monotonic()
    while not condition():
        if time.monotonic() - t0 > timeout:
            raise AssertionError("timed out")
        time.sleep(0.01)


def test_autosave_listener(tmp_path):
    s = Session(_image(), features=SEL)
    saver = enable_autosave(s, tmp_path / "auto.ilastikw")
    s.add_stroke(1, [[3, 3], [3, 20]])
    s.add_stroke(2, [[40, 40]], radius=3)
    s.rename_class(2, "Nuclei")
    assert _strokes(load_session(tmp_path / "auto.ilastikw")) == _strokes(s)
    assert load_session(tmp_path / "auto.ilastikw").classes[1].name == "Nuclei"
    s.undo()
    assert len(load_session(tmp_path / "auto.ilastikw").strokes) == 1
    saver.close()
    s.add_stroke(2, [[50, 50]])
    assert len(load_session(tmp_path / "auto.ilastikw").strokes) == 1
    # closing folded the journal into the file: one complete file is left
    assert sorted(p.name for p in tmp_path.iterdir()) == ["auto.ilastikw"]


def test_every_kind_of_change_comes_back_from_file_and_journal(tmp_path):
    img = _image((60, 70))
    s = Session(img, features=SEL, classes=["a", "b", "c"])
    path = tmp_path / "p.ilastikw"
    saver = enable_autosave(s, path, idle_seconds=3600)
    ids = [s.add_stroke(1 + i % 3, [[5 + 5 * i, 5], [5 + 5 * i, 50]], radius=2) for i in range(8)]
    s.remove_stroke(ids[2])  # from the middle
    s.undo()
    s.undo()
    s.redo()
    s.add_stroke(0, [[20, 20], [40, 40]], radius=3, erase=True)
    mask = np.zeros(img.shape, np.uint8)
    mask[30:40, 10:30] = 3
    s.annotations.import_labels(mask, source="m.tif")
    s.rename_class(1, "background")
    s.recolor_class(2, "#123456")
    s.remove_class(2)  # renumbers the labels of later classes
    s.add_class("d")
    s.feature_selection = SEL.with_feature("gaussian_gradient_magnitude", 1.6, True)
    assert saver.n_saves == 1 and saver.n_appends >= 10 and journal_path(path).exists()
    # what a killed kernel leaves: the first file plus the journal
    killed = tmp_path / "killed"
    killed.mkdir()
    shutil.copy(path, killed / path.name)
    shutil.copy(journal_path(path), journal_path(killed / path.name))
    saver.close()
    for p in (killed / path.name, path):
        s2 = load_session(p)
        assert [(c.name, c.color) for c in s2.classes] == [(c.name, c.color) for c in s.classes]
        assert s2.feature_selection == s.feature_selection
        assert [t.id for t in s2.strokes] == [t.id for t in s.strokes]
        np.testing.assert_array_equal(s2.labels(), s.labels())
        assert s2.add_stroke(1, [[1, 1]]) > max(t.id for t in s.strokes)


def test_a_stroke_costs_the_stroke_not_the_image_and_nothing_is_flushed_in_the_painting_thread(tmp_path, monkeypatch):
    img = np.random.default_rng(0).normal(size=(2048, 4096)).astype(np.float32)  # 32 MiB, embedded in the project
    s = Session(img, features=SEL)
    path = tmp_path / "big.ilastikw"
    saver = enable_autosave(s, path, idle_seconds=3600)
    before = path.stat()
    assert before.st_size > 32 * 2**20
    painter = threading.current_thread()
    fsyncs, written = [], []
    real_fsync, real_write = os.fsync, os.write

    def fsync(fd):
        fsyncs.append(threading.current_thread())
        return real_fsync(fd)

    def write(fd, data):
        if threading.current_thread() is painter:
            written.append(len(data))
        return real_write(fd, data)

    monkeypatch.setattr(os, "fsync", fsync)
    monkeypatch.setattr(os, "write", write)
    for i in range(20):
        s.add_stroke(1 + i % 2, [[10 + 3 * i, 10], [10 + 3 * i, 600]], radius=2)
    monkeypatch.undo()
    after = path.stat()
    assert (after.st_ino, after.st_mtime_ns) == (before.st_ino, before.st_mtime_ns)  # the big file was not rewritten
    assert 0 < sum(written) < 20 * 2000  # what the painting thread wrote: the strokes
    assert painter not in fsyncs
    assert _strokes(load_session(path, train=False)) == _strokes(s)  # and every stroke is there
    saver.close()
    assert _file_strokes(path) == 20 and not journal_path(path).exists()


def test_the_journal_is_folded_into_the_file_in_the_background(tmp_path):
    s = Session(_image(), features=SEL)
    path = tmp_path / "p.ilastikw"
    saver = enable_autosave(s, path, compact_bytes=1, idle_seconds=3600, sync_delay=0)
    for i in range(3):
        s.add_stroke(1, [[5 + i, 5]])
    _wait_for(lambda: _file_strokes(path) == 3 and saver.n_saves >= 2)
    assert saver.last_error is None
    assert _strokes(load_session(path)) == _strokes(s)
    # idle: folded in after idle_seconds without a change
    saver.close()
    saver = enable_autosave(s, path, idle_seconds=0.05, sync_delay=0)
    s.add_stroke(2, [[30, 30]])
    _wait_for(lambda: _file_strokes(path) == 4)
    saver.close()


def test_a_failed_save_is_reported_at_once_and_the_next_change_saves_everything(tmp_path):
    s = Session(_image(), features=SEL)
    path = tmp_path / "p.ilastikw"
    reports = []
    saver = enable_autosave(s, path, on_error=reports.append)
    path.unlink()
    path.mkdir()  # a directory in the file's place: saving fails (for root too, unlike permissions)
    s.add_stroke(1, [[3, 3]])
    assert isinstance(saver.last_error, OSError) and reports == [saver.last_error]
    s.add_stroke(2, [[9, 9]])
    assert saver.last_error is not None and len(s.strokes) == 2  # the labels are kept in the session
    path.rmdir()
    s.add_stroke(1, [[20, 20]])
    assert saver.last_error is None and reports[-1] is None
    assert _strokes(load_session(path)) == _strokes(s)
    saver.close()


def test_a_failure_in_the_saver_thread_is_reported(tmp_path, monkeypatch):
    from ilastik_widget.io import autosave as autosave_module

    s = Session(_image(), features=SEL)
    path = tmp_path / "p.ilastikw"
    reports = []
    saver = enable_autosave(s, path, compact_bytes=1, sync_delay=0, on_error=reports.append)

    def full_disk(*a, **k):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(autosave_module, "stage_project", full_disk)
    s.add_stroke(1, [[3, 3]])
    _wait_for(lambda: reports)
    assert "No space left" in str(saver.last_error) and reports[0] is saver.last_error
    assert len(load_session(path).strokes) == 1  # the journal still has the stroke
    monkeypatch.undo()
    s.add_stroke(2, [[9, 9]])  # after a failure, the next change writes the whole file at once
    assert saver.last_error is None and reports[-1] is None and _file_strokes(path) == 2
    saver.close()


def test_stale_temporaries_of_the_project_are_removed_when_it_is_opened(tmp_path):
    s = Session(_image(), features=SEL)
    path = save_session(s, tmp_path / "p.ilastikw")
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    host = archive._host()
    removed = [
        f".p.ilastikw.{host}.{dead.pid}.f0e1d2c3b4a5.tmp",  # its writer was killed
        f".p.ilastikw.journal.{host}.{dead.pid}.f0e1d2c3b4a5.tmp",
        ".p.ilastikw.a1b2c3d4.tmp",  # an older name, not written for two minutes
    ]
    kept = [
        f".p.ilastikw.{host}.{os.getpid()}.f0e1d2c3b4a5.tmp",  # a save in progress in this process
        f".p.ilastikw.otherhost.{dead.pid}.f0e1d2c3b4a5.tmp",  # a writer on another machine, recent
        ".p.ilastikw.k2j4h5g6.tmp",  # recent
        ".p.ilastikw.notes",  # not a temporary file of ours
        ".q.ilastikw.a1b2c3d4.tmp",  # another project's
        "p.ilastikw.a1b2c3d4.tmp",  # not hidden: not ours
    ]
    old = time.time() - 120
    for name in removed + kept:
        (tmp_path / name).write_bytes(b"x")
        if "a1b2c3d4" in name:
            os.utime(tmp_path / name, (old, old))
    load_session(path)
    left = {p.name for p in tmp_path.iterdir()}
    assert left == {"p.ilastikw", *kept}
    for name in kept[:3]:
        os.utime(tmp_path / name, (old, old))
    saver = enable_autosave(s, path)  # starting an autosave cleans too
    assert {p.name for p in tmp_path.iterdir()} == {"p.ilastikw", *kept[3:], journal_path(path).name}
    saver.close()


def _killed_copy(tmp_path, n=3):
    """A project and its journal as a killed kernel leaves them, with ``n`` strokes in the journal."""
    s = Session(_image(), features=SEL)
    path = tmp_path / "live" / "p.ilastikw"
    saver = enable_autosave(s, path, idle_seconds=3600)
    for i in range(n):
        s.add_stroke(1 + i % 2, [[5 + 10 * i, 5], [5 + 10 * i, 40]])
    out = tmp_path / "p.ilastikw"
    shutil.copy(path, out)
    shutil.copy(journal_path(path), journal_path(out))
    saver.close()
    return s, out, journal_path(out)


def test_a_damaged_journal(tmp_path):
    s, path, journal = _killed_copy(tmp_path)
    good = journal.read_bytes()
    # a record cut by the kill: ignored
    journal.write_bytes(good + b'0123abcd {"seq": 4, "keep"')
    assert _strokes(load_session(path)) == _strokes(s)
    # a damaged record: the changes before it load, with a warning
    lines = good.split(b"\n")
    lines[2] = lines[2].replace(b'"label":2', b'"label":1')
    journal.write_bytes(b"\n".join(lines))
    with pytest.warns(UserWarning, match="line 3 of the autosave journal is damaged"):
        assert _strokes(load_session(path)) == _strokes(s)[:1]
    # a well-formed record that does not fit: an error naming the journal and what to do
    body = json.dumps({"seq": 4, "keep": 10**9, "then": [], "strokes": {}, "state": {}}).encode()
    journal.write_bytes(good + b"%08x " % zlib.crc32(body) + body + b"\n")
    with pytest.raises(ProjectError, match=r"journal record 4 is damaged.*remove .*p\.ilastikw\.journal"):
        read_project(path)
    body = json.dumps(
        {
            "seq": 4,
            "keep": 3,
            "then": [99],
            "strokes": {"99": {"label": 1, "radius": 2, "axes": [0, 1], "erase": False, "points": [[1e9, 5]]}},
            "state": {},
        }
    ).encode()
    journal.write_bytes(good + b"%08x " % zlib.crc32(body) + body + b"\n")
    with pytest.raises(ProjectError, match=r"strokes\[3\] \(id 99\).*outside the image"):
        load_session(path)
    # a journal of another autosave (the file was saved since): ignored
    header = json.loads(lines[0].split(b" ", 1)[1])
    body = json.dumps({**header, "autosave_id": "0" * 32}).encode()
    journal.write_bytes(b"%08x " % zlib.crc32(body) + body + b"\n" + good.split(b"\n", 1)[1])
    assert len(load_session(path).strokes) == 0


KERNEL = textwrap.dedent("""
    import os, sys
    import numpy as np
    from ilastik_widget.core.features import FeatureSelection
    from ilastik_widget.core.session import Session
    from ilastik_widget.io.autosave import enable_autosave
    from ilastik_widget.io.project import load_session

    path = sys.argv[1]
    img = np.random.default_rng(0).normal(size=(120, 130)).astype(np.float32)
    sel = FeatureSelection.none().with_feature("gaussian_smoothing", 1.0, True)

    def stroke(i):
        rng = np.random.default_rng(1000 + i)
        pts = rng.uniform(0, 119, size=(int(rng.integers(1, 12)), 2))
        return dict(label=i % 2 + 1, points=pts, radius=float(rng.uniform(1, 4)), erase=i % 7 == 6)

    def kernel():
        s = load_session(path, train=False) if os.path.exists(path) else Session(img, features=sel)
        # fold the journal in often, so that kills also land in the middle of writing the whole file
        enable_autosave(s, path, compact_bytes=3000, idle_seconds=0.02, sync_delay=0.005)
        i = len(s.strokes)
        os.write(1, f"ready {i}\\n".encode())  # one write: a kill cannot cut a report in half
        while True:
            s.add_stroke(**stroke(i))
            os.write(1, f"stroke {i}\\n".encode())
            i += 1

    print("warm", flush=True)
    for _ in sys.stdin:  # one painting kernel per line, forked from this warm interpreter
        pid = os.fork()
        if pid == 0:
            try:
                kernel()
            except BaseException as exc:
                print("error", repr(exc).replace(chr(10), " "), flush=True)
            finally:
                os._exit(1)
        print("child", pid, flush=True)
        os.waitpid(pid, 0)
        print("gone", pid, flush=True)
""")


def _stroke(i):
    rng = np.random.default_rng(1000 + i)
    pts = rng.uniform(0, 119, size=(int(rng.integers(1, 12)), 2))
    return i % 2 + 1, pts, float(rng.uniform(1, 4)), i % 7 == 6


def _check_strokes(session, n_at_least):
    assert len(session.strokes) >= n_at_least
    for i, st in enumerate(session.strokes):
        label, pts, radius, erase = _stroke(i)
        assert (st.label, st.radius, st.erase) == (label, radius, erase)
        np.testing.assert_array_equal(st.points, pts)


@pytest.mark.skipif(not hasattr(os, "fork"), reason="forks painting kernels")
def test_twenty_sigkills_while_painting_lose_no_stroke(tmp_path):
    """A kernel paints until SIGKILL, reopens the project, paints on: 20 times. Every stroke it reported (it reports
    after add_stroke returns) is in the project, the same stroke, in order; no temporary file is left."""
    script = tmp_path / "kernel.py"
    script.write_text(KERNEL)
    path = tmp_path / "auto.ilastikw"
    proc = subprocess.Popen(
        [sys.executable, str(script), str(path)], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, env=ENV
    )
    watchdog = threading.Timer(240, proc.kill)  # a hang fails the test instead of blocking it
    watchdog.start()

    def line():
        text = proc.stdout.readline()
        assert text, "the kernel process ended"
        word, _, rest = text.strip().partition(" ")
        assert word != "error", rest
        return word, rest

    rng = np.random.default_rng(3)
    reported = 0
    pid = None
    try:
        assert line()[0] == "warm"
        for round_ in range(20):
            proc.stdin.write("go\n")
            proc.stdin.flush()
            word, pid = line()
            assert word == "child"
            wait_for = int(rng.integers(-1, 12))  # -1: kill while it opens the project and starts saving
            while wait_for >= 0:
                word, n = line()
                if word == "ready":
                    assert int(n) >= reported, (round_, n, reported)  # nothing reported was lost
                else:
                    assert word == "stroke", word
                    reported = max(reported, int(n) + 1)
                    wait_for -= 1
            os.kill(int(pid), signal.SIGKILL)
            while True:
                word, n = line()
                if word == "stroke":
                    reported = max(reported, int(n) + 1)
                elif word == "ready":
                    assert int(n) >= reported, (round_, n, reported)
                elif word == "gone":
                    break
    finally:
        watchdog.cancel()
        if pid is not None:
            try:
                os.kill(int(pid), signal.SIGKILL)
            except OSError:
                pass
        proc.kill()
        proc.wait()
    assert reported >= 20
    s = load_session(path, train=False)
    _check_strokes(s, reported)
    # temporary files of killed saves were removed when the project was opened
    left = {p.name for p in tmp_path.iterdir()} - {"kernel.py", path.name, journal_path(path).name}
    assert not left, left
