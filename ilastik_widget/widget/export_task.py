"""The widget's export: :func:`~ilastik_widget.io.export.export_session` in a worker thread, its progress in the
``progress`` trait (``{"task": "exporting", "done", "total", "seconds_left"}``, at most two updates a second) and
the status line, stopped by the widget's Stop (``IlastikWidget.stop()`` or the panel's ``stop`` message)."""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from typing import TYPE_CHECKING, Any

from .progress import UPDATE_SECONDS

if TYPE_CHECKING:
    from .widget import IlastikWidget

log = logging.getLogger("ilastik_widget")


def _left(seconds: float) -> str:
    return f"{round(seconds)} s" if seconds < 90 else f"{round(seconds / 60)} min"


class ExportTask:
    """One export at a time for a widget."""

    def __init__(self, widget: IlastikWidget):
        self.widget = widget
        self._lock = threading.Lock()
        self._executor: ThreadPoolExecutor | None = None
        self._future: Future | None = None
        self._closed = False

    def _stops(self) -> int:
        # The widget's Stop counts its stops in the live updater: an export started before one gives up.
        return int(getattr(self.widget._live, "_stops", 0))

    def start(
        self,
        path: str | os.PathLike,
        outputs: Sequence[str],
        *,
        objects: dict | None = None,
        format: str = "zarr",
        overwrite: bool = False,
    ) -> Future:
        """Start an export (see ``IlastikWidget.export``); what can be checked at once raises here."""
        from ..io.batch_objects import params_dict
        from ..io.export import _check_outputs

        outputs = _check_outputs(outputs)
        session = self.widget.session
        if not session.is_trained:
            raise RuntimeError("the session is not trained: label at least two classes before exporting")
        if "objects" in outputs and objects is None:
            last = self.widget.last_objects
            if last is None:
                raise ValueError(
                    "the objects output needs the objects' parameters: find objects first (w.objects(...)) or pass "
                    "objects={'label': <class>, 'threshold': ...}"
                )
            objects = params_dict(last.params)
        with self._lock:
            if self._closed:
                raise RuntimeError("the widget is closed")
            if self._future is not None and not self._future.done():
                raise RuntimeError("an export is under way: wait for it, or stop it first")
            if self._executor is None:
                self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="ilastik-export")
            options = {"objects": objects, "format": format, "overwrite": overwrite}
            self._future = self._executor.submit(self._run, path, outputs, options, self._stops())
            return self._future

    def _run(self, path: str | os.PathLike, outputs: tuple[str, ...], options: dict, stops: int) -> dict[str, Any]:
        from ..io.export import ExportStopped, export_session

        w = self.widget
        started = time.monotonic()
        shown = [0.0]

        def report(done: int, total: int) -> None:
            now = time.monotonic()
            if done < total and now - shown[0] < UPDATE_SECONDS:
                return
            shown[0] = now
            left = (now - started) / done * (total - done) if done else None
            text = f"Exporting: {done} of {total} steps…" + (f" about {_left(left)} left" if left and left >= 1 else "")
            seconds = None if left is None else round(left, 1)
            w._set_traits(progress={"task": "exporting", "done": done, "total": total, "seconds_left": seconds})
            w._live.status.show(text, busy=True)

        def cancelled() -> bool:
            return self._closed or self._stops() != stops

        w._live.status.show("Exporting…", busy=True)
        try:
            result = export_session(w.session, path, outputs, progress=report, cancelled=cancelled, **options)
        except ExportStopped:
            w._live.status.show("Export stopped: nothing was written.", busy=False)
            raise
        except Exception as exc:
            from .protocol import describe_exception

            w._live.status.error(f"Export failed: {describe_exception(exc)}")
            w._live.status.show(w._live.idle_text(), busy=False)
            raise
        finally:
            w._set_traits(progress={})
        w._live.status.show(f"Exported to {os.fspath(path)}.", busy=False)
        return result

    def wait(self, timeout: float | None = 60.0) -> None:
        """Block until the export under way, if any, is done (at most ``timeout`` seconds); its failure
        is not raised here."""
        with self._lock:
            future = self._future
        if future is not None:
            try:
                future.result(timeout)
            except Exception:
                pass

    def close(self) -> None:
        """Stop the export under way and the worker thread; no export starts after this."""
        with self._lock:
            self._closed = True
            executor = self._executor
        if executor is not None:
            executor.shutdown(wait=False, cancel_futures=True)
