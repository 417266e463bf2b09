"""What every stage is made of: queues between stages and one runner for every stage thread.

A :class:`Stage` takes records from its inbox (a queue, or the source itself for the first stage), applies its
function and puts what it returns into its outbox. Every stage runs the same loop (:func:`run_stage`): errors stop
the whole pipeline and are kept for the caller; the end marker always reaches the next stage, so every stage ends.

This module must stay free of torch and of the model / engine packages.
"""

from __future__ import annotations

import queue
import threading
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Iterable

from ..record import FrameRecord

__all__ = ["END", "LatestQueue", "FifoQueue", "ReorderQueue", "Stage", "run_stage"]

END = object()  # the end-of-stream marker


STOP_GRACE_S = 2.0  # stopping: how long a full queue is given to make room before a record is left out


class FifoQueue:
    """Bounded FIFO (files: every frame, in order). ``put`` blocks while full; once the run is stopping it waits
    at most :data:`STOP_GRACE_S` for room (the next stage goes on draining what is queued, so a record already
    made, e.g. a segmented frame, still gets written), then leaves the record out, or makes room for the end
    marker (a next stage that no longer reads must still see the end)."""

    def __init__(self, size: int) -> None:
        self._q: queue.Queue = queue.Queue(size)

    def put(self, item, stop: threading.Event) -> None:
        stopping_since = None
        while True:
            try:
                self._q.put(item, timeout=0.1)
                return
            except queue.Full:
                if stop.is_set():
                    now = time.monotonic()
                    stopping_since = now if stopping_since is None else stopping_since
                    if now - stopping_since < STOP_GRACE_S:
                        continue
                    if item is not END:
                        return  # stopping: a frame may be left out, the end marker may not
                    try:
                        self._q.get_nowait()  # make room for the end marker
                    except queue.Empty:
                        pass

    def get(self):
        while True:
            try:
                return self._q.get(timeout=0.1)
            except queue.Empty:
                continue


class LatestQueue:
    """Live sources: a new frame replaces an unread one. The replaced frame is reported to ``on_drop`` as a record
    without pixels (index and timestamps only) and not kept, so dropping costs no memory. The end marker never
    replaces a frame; it is delivered after it."""

    def __init__(self, on_drop: Callable[[FrameRecord], None]) -> None:
        self._item: Any = None
        self._has = False
        self._ended = False
        self._cond = threading.Condition()
        self._on_drop = on_drop
        self.dropped = 0

    def put(self, item, stop: threading.Event | None = None) -> None:
        replaced = None
        with self._cond:
            if item is END:
                self._ended = True
            else:
                if self._has:
                    replaced = self._item
                self._item, self._has = item, True
            self._cond.notify()
        if replaced is not None:
            self.dropped += 1
            self._on_drop(replaced.as_dropped())

    def get(self):
        with self._cond:
            self._cond.wait_for(lambda: self._has or self._ended)
            if self._has:
                item, self._item, self._has = self._item, None, False
                return item
            return END


class ReorderQueue:
    """Joins ``producers`` parallel workers: records come out in ``seq`` order, the end marker after every
    producer has ended. A worker waits while ``size`` records are ahead of the next one (the next one always goes
    in, so the workers cannot deadlock)."""

    def __init__(self, producers: int, size: int) -> None:
        self._pending: dict[int, Any] = {}
        self._next = 0
        self._ended = 0
        self._producers = producers
        self._size = size
        self._cond = threading.Condition()

    def put(self, item, stop: threading.Event) -> None:
        with self._cond:
            if item is END:
                self._ended += 1
            else:
                while (item.seq != self._next and len(self._pending) >= self._size and not stop.is_set()):
                    self._cond.wait(0.1)
                self._pending[item.seq] = item
            self._cond.notify_all()

    def get(self):
        with self._cond:
            while True:
                if self._next in self._pending:
                    item = self._pending.pop(self._next)
                    self._next += 1
                    self._cond.notify_all()
                    return item
                if self._ended >= self._producers:
                    if self._pending:  # a worker stopped early: skip its missing records
                        self._next = min(self._pending)
                        continue
                    return END
                self._cond.wait(0.1)


@dataclass
class Stage:
    """One thread of the pipeline: ``fn(record) -> record | None`` between an inbox and an outbox.

    ``inbox`` is a queue, or an iterable of records for the first stage (the source). ``None`` from ``fn`` passes
    nothing on. ``close`` runs in the stage's thread after its last record (e.g. the sinks' finalisation).
    """

    name: str
    fn: Callable[[FrameRecord], FrameRecord | None]
    inbox: Any
    outbox: Any = None
    close: Callable[[], None] | None = None
    wait_key: str | None = None  # timings key for the time a record waited in the inbox
    shared_inbox: bool = False  # parallel workers of one stage: the end marker is passed on to the siblings
    thread: threading.Thread | None = field(default=None, repr=False)


def run_stage(stage: Stage, stop: threading.Event, errors: list[BaseException]) -> None:
    """The loop of every stage thread (see :class:`Stage`)."""
    queued = isinstance(stage.inbox, (FifoQueue, LatestQueue, ReorderQueue))
    try:
        items: Iterable = iter(stage.inbox.get, END) if queued else stage.inbox
        for record in items:
            if stop.is_set() and not queued:
                break  # the source stops at once; later stages finish what is already queued
            if stage.wait_key and record.t_queued is not None:
                record.timings[stage.wait_key] = (time.perf_counter() - record.t_queued) * 1e3
            out = stage.fn(record)
            if out is not None and stage.outbox is not None:
                out.t_queued = time.perf_counter()
                stage.outbox.put(out, stop)
    except BaseException as exc:  # noqa: BLE001 - reported by the pipeline after the outputs are finalised
        errors.append(exc)
        stop.set()
    finally:
        if stage.shared_inbox:
            stage.inbox.put(END, stop)  # the siblings end too
        if stage.outbox is not None:
            stage.outbox.put(END, stop)
        if stage.close is not None:
            try:
                stage.close()
            except BaseException as exc:  # noqa: BLE001
                errors.append(exc)
