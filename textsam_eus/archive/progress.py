"""The archive's progress on the console: files and frames done, the frame rate, the time left.

The time left is estimated from bytes (the files' sizes are known before any is opened): bytes annotated so far,
counting a file in progress by its share of frames done, over the time since the first worker was ready. Skipped
files count neither way. On a terminal the line is redrawn in place; elsewhere (a log) one line every
``every_s`` seconds. Free of torch and Ray.
"""

from __future__ import annotations

import sys
import time

__all__ = ["ArchiveProgress", "format_duration"]


def format_duration(seconds: float | None) -> str:
    if seconds is None or seconds != seconds or seconds < 0:
        return "?"
    seconds = int(round(seconds))
    h, rest = divmod(seconds, 3600)
    m, s = divmod(rest, 60)
    return f"{h}:{m:02d}:{s:02d}" if h else f"{m}:{s:02d}"


class ArchiveProgress:
    """``update`` with the counts; ``line`` is what is shown."""

    def __init__(self, files: int, total_bytes: int, enabled: bool = True, stream=None, every_s: float = 5.0) -> None:
        self.files, self.total_bytes = int(files), max(0, int(total_bytes))
        self.stream = stream or sys.stderr
        self.enabled = enabled
        self.tty = bool(getattr(self.stream, "isatty", lambda: False)())
        self.every_s = 0.5 if self.tty else every_s
        self.t0: float | None = None
        self._last = 0.0
        self.finished = 0
        self.counts: dict[str, int] = {}
        self.frames = 0
        self.bytes_done = 0.0
        self.skipped_bytes = 0

    def start(self) -> None:
        self.t0 = time.monotonic()

    def update(self, counts: dict[str, int], frames_done: int, frames_running: int, bytes_done: float,
               skipped_bytes: int) -> None:
        self.counts, self.frames = dict(counts), int(frames_done) + int(frames_running)
        self.finished = sum(counts.values())
        self.bytes_done, self.skipped_bytes = float(bytes_done), int(skipped_bytes)

    def line(self) -> str:
        elapsed = time.monotonic() - self.t0 if self.t0 is not None else 0.0
        fps = self.frames / elapsed if elapsed > 0 else 0.0
        todo = max(0.0, self.total_bytes - self.skipped_bytes)
        eta = None
        if self.bytes_done > 0 and elapsed > 0:
            eta = (todo - self.bytes_done) / (self.bytes_done / elapsed)
        parts = ", ".join(f"{n} {s}" for s, n in self.counts.items() if n)
        return (f"annotate: {self.finished}/{self.files} files ({parts or 'none finished'}), {self.frames} frames, "
                f"{fps:.1f} frames/s, {format_duration(elapsed)} elapsed, ETA {format_duration(eta)}")

    def show(self, force: bool = False) -> None:
        if not self.enabled:
            return
        now = time.monotonic()
        if not force and now - self._last < self.every_s:
            return
        self._last = now
        if self.tty:
            self.stream.write("\r\x1b[K" + self.line())
        else:
            self.stream.write(self.line() + "\n")
        self.stream.flush()

    def close(self) -> None:
        if self.enabled and self.tty:
            self.stream.write("\n")
            self.stream.flush()
