"""What every stage of a run shares: the stop request, its reason, the signals, the errors and the warnings.

:class:`RunControl` is the one mutable thing the stage threads have in common. A stop request (a signal, a stage's
error, a closed window, the caller) sets ``stop_event``; the first reason given is kept. SIGINT/SIGTERM, any
number of them, only ask the run to stop (the first prints one line): they cannot interrupt the finalisation.

This module must stay free of torch and of the model / engine packages.
"""

from __future__ import annotations

import signal
import sys
import threading
from contextlib import contextmanager
from typing import Callable, Iterator

from .outdir import is_disk_full

__all__ = ["RunControl"]


class RunControl:
    """A run's stop request and what it collected. ``on_stop`` runs on a signal or :meth:`request_stop` (it
    closes the source, so a blocked read returns)."""

    def __init__(self, on_stop: Callable[[], None]) -> None:
        self.stop_event = threading.Event()
        self.errors: list[BaseException] = []  # the stage threads' (the first is raised after finalisation)
        self.reason: str | None = None  # why the run was asked to stop (max frames, window closed, the caller's)
        self.signals: list[str] = []  # SIGINT / SIGTERM received, in order
        self.warnings: list[str] = []  # the run's and the source's, printed once each
        self._on_stop = on_stop
        self._source_warnings_seen = 0

    # ------------------------------------------------------------------ stopping
    def note_reason(self, reason: str) -> None:
        """Keep ``reason`` as the stop reason unless one was given before (the input ended at max_frames)."""
        self.reason = self.reason or reason

    def stop(self, reason: str) -> None:
        """Stop the run (from a stage): ``reason`` kept unless one was given before."""
        self.note_reason(reason)
        self.stop_event.set()

    def request_stop(self, reason: str) -> None:
        """Stop the run from any thread (a worker told to stop by its driver), and close the source."""
        self.stop(reason)
        self._on_stop()

    @property
    def stopping(self) -> bool:
        return self.stop_event.is_set()

    # ------------------------------------------------------------------ signals
    def on_signal(self, signum, _frame) -> None:
        name = signal.Signals(signum).name
        self.signals.append(name)
        if len(self.signals) == 1:
            print(f"\n{name}: stopping; finalising the outputs (further signals are ignored until done)",
                  file=sys.stderr, flush=True)
        self.stop_event.set()
        self._on_stop()

    @contextmanager
    def signals_handled(self, enabled: bool) -> Iterator[None]:
        """SIGINT/SIGTERM ask the run to stop while inside (main thread only, when ``enabled``); the previous
        handlers come back only after everything inside, the finalisation included, is done."""
        old = {}
        if enabled and threading.current_thread() is threading.main_thread():
            for sig in (signal.SIGINT, signal.SIGTERM):
                old[sig] = signal.signal(sig, self.on_signal)
        try:
            yield
        finally:
            for sig, handler in old.items():
                signal.signal(sig, handler)

    # ------------------------------------------------------------------ errors and warnings
    def fail(self, exc: BaseException) -> None:
        self.errors.append(exc)

    def disk_full(self) -> BaseException | None:
        """The first error that is a full disk, or None."""
        return next((e for e in self.errors if is_disk_full(e)), None)

    def detach_errors(self) -> None:
        """Stages left behind may still report an error: it is not this run's any more (they keep the old list)."""
        self.errors = list(self.errors)

    def warn(self, message: str) -> None:
        """Record a warning for summary.json and print it once, as one line."""
        if message not in self.warnings:
            self.warnings.append(message)
            print(f"warning: {message}", file=sys.stderr, flush=True)

    def poll_source_warnings(self, source) -> None:
        """The source's warnings, also those raised while it is read (a truncated file, a skipped still)."""
        found = list(getattr(source, "warnings", None) or [])
        for w in found[self._source_warnings_seen:]:
            self.warn(w)
        self._source_warnings_seen = len(found)
