"""The write stage: every record to every sink, in order; then the sinks' finalisation, whatever stopped the run.

This module must stay free of torch and of the model / engine packages.
"""

from __future__ import annotations

import threading
import time
from typing import Any, Callable

from ..base import through
from ..control import RunControl
from ..outdir import OutputFolder
from ..record import FrameRecord
from ..sinks.base import Sink
from ..sinks.index import OutputIndexSink
from ..sinks.registry import OpenSinks, SinkRequest, open_sinks
from ..sinks.report import LatencyReport

__all__ = ["WriteStage"]


class WriteStage:
    """The fan-out of the pipeline's last stage: :meth:`open` opens the sinks from the registry
    (:func:`~textsam_eus.stream.sinks.registry.open_sinks`), ``self(record)`` writes one record to each (then its
    timings to the report sink), :meth:`close` finalises them once: in the stage's own thread after the last record,
    or from the main thread when the stage did not stop in time. On a full disk the output folder's reserve is
    freed first, to make room for the finalisation. ``outputs.csv`` is closed last: rows whose frame a video lost
    say so, then the rows of the inputs that gave no frame.

    State: the opened sinks, ``frames_out`` (records written), whether finalisation has begun (``closing``: it is
    never cut short) and ended (``finalised``), and the lock between a write in progress and finalisation."""

    name = "write"

    def __init__(self, source, control: RunControl, progress: Callable[[int], None] | None = None) -> None:
        self.source = source
        self.control = control
        self.progress = progress
        self.opened: OpenSinks | None = None
        self.folder: OutputFolder | None = None  # its reserve is freed to finalise on a full disk
        self.frames_out = 0
        self.closing = False  # finalisation has begun (it is never cut short)
        self.finalised = False
        self._lock = threading.Lock()  # a write in progress vs. finalising the sinks from the main thread
        self._closed = False

    # ------------------------------------------------------------------ opening
    def open(self, request: SinkRequest, folder: OutputFolder, report: LatencyReport,
             extra: list[Sink] | None = None) -> None:
        self.folder = folder
        self.opened = open_sinks(request, extra=extra, report=report)

    @property
    def sinks(self) -> list[Sink]:
        return self.opened.sinks if self.opened is not None else []

    @property
    def index(self) -> OutputIndexSink | None:
        return self.opened.index if self.opened is not None else None

    def get(self, name: str) -> Sink | None:
        """The opened sink of registry name ``name`` (``"thumbnails"``, ``"png"``, ...), or None."""
        return self.opened.get(name) if self.opened is not None else None

    # ------------------------------------------------------------------ writing
    def __call__(self, rec: FrameRecord) -> None:
        with self._lock:
            if self._closed:  # finalised without this stage (it did not stop in time)
                return None
            t = time.perf_counter()
            for sink in self.sinks:
                sink.write(rec)
                if sink.stop_requested:
                    self.control.stop("window closed")
            rec.timings["sink_write"] = (time.perf_counter() - t) * 1e3
            rec.timings["capture_to_written"] = (time.monotonic() - rec.timestamp) * 1e3
            self.opened.report.write(rec)
            self.frames_out += 1
            if self.progress:
                self.progress(1)
        rec.image = rec.overlay = rec.mask = None  # nothing of the frame outlives its write
        return None

    # ------------------------------------------------------------------ finalising
    def close(self, timeout: float | None = None) -> None:
        """Finalise every sink once, waiting at most ``timeout`` for a write in progress (None: as long as it
        takes)."""
        self.closing = True
        if not self._lock.acquire(timeout=-1 if timeout is None else timeout):
            self.control.warn(f"a sink write did not return within {timeout:g} s: the outputs could not be finalised")
            return
        try:
            if self._closed:
                return
            self._closed = True
            if self.control.disk_full() is not None and self.folder is not None:
                self.folder.release_reserve()  # room to finalise what was written
            for sink in self.sinks:
                if sink is self.index:
                    continue
                try:
                    sink.close()
                except BaseException as exc:  # noqa: BLE001 - the others still close
                    self.control.fail(exc)
            if self.index is not None:
                self._close_index()
            self.finalised = True
        finally:
            self._lock.release()

    def _close_index(self) -> None:
        reason = "disk full" if self.control.disk_full() is not None else "not written"
        try:
            for sink in self.sinks:
                lost = sink.lost_rows() if hasattr(sink, "lost_rows") else None
                if lost is not None:
                    column, first = lost
                    self.index.mark_lost(column, first, f"{column} lost ({reason})")
            reasons = through(self.source, "skip_reasons", None) or {}
            for index, path in getattr(self.source, "unreadable", []) or []:
                self.index.add_missing(index, path, reasons.get(index, "unreadable"))
        except BaseException as exc:  # noqa: BLE001
            self.control.fail(exc)
        try:
            self.index.close()
        except BaseException as exc:  # noqa: BLE001
            self.control.fail(exc)

    # ------------------------------------------------------------------ describing
    def outputs(self) -> dict[str, Any]:
        """What the sinks wrote, for ``summary.json`` (each sink describes itself, in writing order)."""
        outputs: dict[str, Any] = {}
        for sink in self.sinks:
            outputs.update(sink.describe())
        return outputs

    def describe(self) -> dict[str, Any]:
        return {"frames_out": self.frames_out, "outputs": self.outputs()}
