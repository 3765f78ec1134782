"""Autosave: keep a project file up to date after every change of a session, at the cost of the change.

``enable_autosave(session, path)`` writes the project once (a complete file), then, after each change of labels,
classes or features, appends that change to the project's journal (:mod:`ilastik_widget.io.journal`): one ``write``
of the changed strokes and the small state, in the thread that made the change, without flushing to disk. A killed
kernel loses nothing that was appended (the data is with the operating system), and ``load_session(path)`` reads the
file and its journal. A background thread flushes the journal to disk after a burst of changes (``sync_delay``) and
folds it into a new project file when it has grown (``compact_bytes``) or the session has been idle
(``idle_seconds``): the image and the other large parts are written then, not per stroke. ``close()`` folds the
journal in and removes it, leaving one complete file.

When the file on disk is not the one this saver wrote (removed, replaced by something else) or the last save failed,
the next change writes the complete file at once in the changing thread, so its outcome is known immediately:
``last_error`` holds the failure (None once a save succeeds) and ``on_error`` is called with it (and with None when
saving works again); failures are also logged. Temporary files of interrupted saves of the project are removed when
the autosave starts.
"""

from __future__ import annotations

import logging
import os
import threading
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

from .archive import commit, remove_stale_temporaries
from .journal import Journal, make_record
from .project import Snapshot, save_session, stage_project, take_snapshot

__all__ = ["AutoSaver", "autosave", "enable_autosave"]

log = logging.getLogger("ilastik_widget")


def autosave(session, path, **kw) -> Path:
    """Save now, atomically (the previous file stays intact until the new one is complete)."""
    return save_session(session, path, **kw)


class AutoSaver:
    """Saves a session to ``path`` after every change of labels, classes or features (see the module docstring).

    Parameters
    ----------
    session : Session
        The session to save.
    path : path
        The project file.
    compact_bytes : int
        Fold the journal into the project file once it holds this many bytes.
    idle_seconds : float
        Fold the journal in after this long without a change.
    sync_delay : float
        Flush the journal to disk this long after a change (changes meanwhile share the flush).
    on_error : callable, optional
        Called with the exception when a save fails, and with None when saving works again (from the changing
        thread or the saver's thread).
    save_kwargs
        Passed to :func:`~ilastik_widget.io.project.save_session` (``embed_image``, ``include_model``; the model is
        not stored by default).

    Raises
    ------
    OSError, ProjectError
        When the first save fails (nothing is being saved then).
    """

    EVENTS = ("labels", "classes", "features")

    def __init__(
        self,
        session,
        path,
        *,
        compact_bytes: int = 4 * 2**20,
        idle_seconds: float = 30.0,
        sync_delay: float = 0.2,
        on_error: Callable[[Exception | None], Any] | None = None,
        **save_kwargs: Any,
    ) -> None:
        self.session = session
        self.path = Path(os.fspath(path))
        save_kwargs.setdefault("include_model", False)  # a forest per change would be large
        self.save_kwargs = save_kwargs
        self.compact_bytes = int(compact_bytes)
        self.idle_seconds = float(idle_seconds)
        self.sync_delay = float(sync_delay)
        self.on_error = on_error
        self.id = uuid.uuid4().hex
        self.n_saves = 0  # complete files written
        self.n_appends = 0  # changes appended to the journal
        self.last_error: Exception | None = None
        self._lock = threading.Lock()  # the journal, the mirror of what is on disk, the file's identity
        self._journal = Journal(self.path, self.id)
        self._seq = 0  # number of the last journal record
        self._base_seq = 0  # the last record the project file holds
        self._base_stat: os.stat_result | None = None
        self._mirror = Snapshot((), {})  # the state as of record _seq (set by the first save)
        self._unsynced = False
        self._closed = False
        self._wake = threading.Event()
        remove_stale_temporaries(self.path)
        session.add_listener(self._on_event)
        try:
            self.save()
        except BaseException:
            session.remove_listener(self._on_event)
            self._journal.close()
            raise
        self._thread = threading.Thread(target=self._run, name="ilastik-widget-autosave", daemon=True)
        self._thread.start()

    # ------------------------------------------------------------------ the changing thread
    def _on_event(self, event: str, **info: Any) -> None:
        if event not in self.EVENTS or self._closed:
            return
        with self._lock:
            if self._closed:
                return
            try:
                if self.last_error is not None or not self._file_is_ours():
                    self._save_locked()
                else:
                    self._append_locked()
            except Exception:  # reported by _failed; never raised into the session's change
                return
        self._wake.set()

    def _file_is_ours(self) -> bool:
        try:
            st = os.stat(self.path)
        except OSError:
            return False
        b = self._base_stat
        same = b is not None and (st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns) == (
            b.st_dev,
            b.st_ino,
            b.st_size,
            b.st_mtime_ns,
        )
        return same and self._journal.intact()

    def _append_locked(self) -> None:
        snap = take_snapshot(self.session)
        if snap.strokes == self._mirror.strokes and snap.state == self._mirror.state:
            return
        try:
            self._journal.append(make_record(self._seq + 1, self._mirror.strokes, snap.strokes, snap.state))
        except Exception as exc:
            self._failed(exc)
            self._save_locked()  # the journal cannot take it: write the whole file instead (raises if that fails)
            return
        self._seq += 1
        self._mirror = snap
        self.n_appends += 1
        self._unsynced = True

    def save(self) -> None:
        """Write the complete project file now (synchronously) and start an empty journal."""
        with self._lock:
            self._save_locked()

    def _save_locked(self) -> None:
        try:
            snap = take_snapshot(self.session)
            auto = {"id": self.id, "journal_seq": self._seq}
            st = commit(stage_project(self.session, self.path, snap, autosave=auto, **self.save_kwargs), self.path)
            self._base_stat, self._base_seq, self._mirror = st, self._seq, snap
            self._journal.reset(self._seq)
            self.n_saves += 1
        except Exception as exc:
            self._failed(exc)
            raise
        self._succeeded()

    # ------------------------------------------------------------------ reporting
    def _failed(self, exc: Exception) -> None:
        self.last_error = exc
        log.warning("ilastik_widget: autosave to %s failed: %s", self.path, exc)
        self._report(exc)

    def _succeeded(self) -> None:
        if self.last_error is not None:
            self.last_error = None
            self._report(None)

    def _report(self, exc: Exception | None) -> None:
        if self.on_error is not None:
            try:
                self.on_error(exc)
            except Exception:
                log.exception("ilastik_widget: autosave on_error callback failed")

    # ------------------------------------------------------------------ the saver's thread
    def _run(self) -> None:
        while not self._closed:
            woken = self._wake.wait(timeout=self.idle_seconds)
            if self._closed:
                break
            if woken:
                self._wake.clear()
                time.sleep(self.sync_delay)  # let a burst of changes share one flush
            try:
                self.flush()
                if self._journal.nbytes >= self.compact_bytes or (not woken and self._seq > self._base_seq):
                    self._compact()
            except Exception as exc:
                with self._lock:
                    self._failed(exc)

    def flush(self) -> None:
        """Make the changes appended so far durable (flush the journal to disk)."""
        with self._lock:
            fd = os.dup(self._journal.fd) if self._unsynced and self._journal.fd is not None else None
            self._unsynced = False
        if fd is not None:
            try:
                os.fsync(fd)
            finally:
                os.close(fd)

    def _compact(self) -> None:
        """Fold the journal into a new project file; changes keep being appended meanwhile."""
        with self._lock:
            snap, seq = self._mirror, self._seq
            if seq == self._base_seq:
                return
        tmp = stage_project(
            self.session, self.path, snap, autosave={"id": self.id, "journal_seq": seq}, **self.save_kwargs
        )
        with self._lock:
            if self._closed or self._base_seq >= seq or not self._file_is_ours():
                os.unlink(tmp)  # a complete save happened meanwhile (or the file is not ours): it wins
                return
            try:
                self._base_stat = commit(tmp, self.path)
                self._base_seq = seq
                self._journal.reset(seq)
                self.n_saves += 1
            except Exception as exc:
                self._failed(exc)
                return
            self._succeeded()

    # ------------------------------------------------------------------ end
    def close(self) -> None:
        """Stop saving; fold the journal into the project file and remove it (kept if that fails)."""
        if self._closed:
            return
        self.session.remove_listener(self._on_event)
        self._closed = True
        self._wake.set()
        if threading.current_thread() is not self._thread:
            self._thread.join()
        with self._lock:
            try:
                if self.last_error is not None or self._seq > self._base_seq or not self._file_is_ours():
                    self._save_locked()
            except Exception:
                self._journal.close()
                return
            self._journal.close(remove=True)

    def __enter__(self) -> AutoSaver:
        return self

    def __exit__(self, *a: Any) -> None:
        self.close()


def enable_autosave(session, path, **kwargs: Any) -> AutoSaver:
    """Save ``session`` to ``path`` now and after every change; returns the AutoSaver (``.close()`` stops it).

    See :class:`AutoSaver` for the parameters.
    """
    return AutoSaver(session, path, **kwargs)
