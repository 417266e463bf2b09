"""The stage threads' supervisor: starts them, waits for the write stage, and bounds how long a stop may take.

A stop request ends the run within ``stop_timeout_s`` whatever the engine is doing: stages still busy then (an
engine call that does not return) are left behind and the outputs are finalised without their frames.

This module must stay free of torch and of the model / engine packages.
"""

from __future__ import annotations

import threading
import time
from typing import Callable

from .control import RunControl
from .stages.base import Stage, run_stage

__all__ = ["Supervisor", "HEARTBEAT_S"]

HEARTBEAT_S = 2.0  # how often summary.json is refreshed during a run


class Supervisor:
    """Runs ``stages`` (the last one writes and finalises the outputs), one daemon thread each.

    ``heartbeat()`` is called every :data:`HEARTBEAT_S` while the run lasts (summary.json), ``poll()`` every tenth
    of a second (the source's warnings); ``closing()`` says whether finalisation has begun, ``finalise(timeout)``
    finalises the outputs from here when the stages did not stop in time."""

    def __init__(self, control: RunControl, stop_timeout_s: float, *, heartbeat: Callable[[], None],
                 poll: Callable[[], None], closing: Callable[[], bool], finalise: Callable[..., None]) -> None:
        self.control = control
        self.stop_timeout_s = stop_timeout_s
        self.heartbeat = heartbeat
        self.poll = poll
        self.closing = closing
        self.finalise = finalise

    def start(self, stages: list[Stage]) -> None:
        for st in stages:
            st.thread = threading.Thread(target=run_stage, args=(st, self.control.stop_event, self.control.errors),
                                         name=st.name, daemon=True)
            st.thread.start()

    def wait(self, stages: list[Stage]) -> bool:
        """Wait for the write stage (which finalises the outputs), refreshing summary.json. After a stop request
        the stages get ``stop_timeout_s`` to drain; then the outputs are finalised from here without the stages
        still busy (True: stages were left behind)."""
        writer = stages[-1].thread
        last_beat, deadline = time.monotonic(), None
        while writer.is_alive():
            writer.join(timeout=0.1)
            self.poll()
            now = time.monotonic()
            if deadline is None and self.control.stopping:
                deadline = now + self.stop_timeout_s
            if deadline is not None and now > deadline and not self.closing() and writer.is_alive():
                busy = [st.name for st in stages if st.thread.is_alive() and st is not stages[-1]]
                self.control.warn(f"{', '.join(busy) or 'the writer'} did not stop within {self.stop_timeout_s:g} s "
                                  "of the stop request (an engine or source call still running): the outputs were "
                                  "finalised without the frames in flight")
                self.finalise(timeout=10.0)
                return True
            if now - last_beat > HEARTBEAT_S:
                self.heartbeat()
                last_beat = now
        return False

    def join(self, stages: list[Stage], left_behind: bool) -> None:
        """Give the stages the rest of ``stop_timeout_s`` to end (1 s when some were left behind); what a stage left
        behind may still report an error: not this run's any more."""
        end = time.monotonic() + (1.0 if left_behind else self.stop_timeout_s)
        for st in stages:
            if st.thread is not None:
                st.thread.join(timeout=max(0.0, end - time.monotonic()))
        if left_behind:
            self.control.detach_errors()
