"""The frame-source base class, its error type and shared helpers (no torch; of ``model`` only its torch-free
modules)."""

from __future__ import annotations

import glob
import re
import sys
import threading
from pathlib import Path
from typing import Any, Iterator

import numpy as np

from ..model.errors import UserError
from ..model.pixels import IMAGE_EXTENSIONS, to_rgb_uint8  # noqa: F401 (IMAGE_EXTENSIONS: re-exported)
from .record import FrameRecord

# the file names a folder of recordings is searched for (``stream --source FOLDER``, ``annotate``); DICOM files are
# found by their content (``DICM`` after the preamble), whatever their extension
VIDEO_EXTENSIONS = (".mp4", ".avi", ".mkv", ".mov", ".ts", ".m4v", ".webm", ".mpg", ".mpeg", ".h264")


class SourceError(UserError, ValueError):
    """A frame source cannot be opened or is misconfigured (message says which and why)."""


# --------------------------------------------------------------------------- helpers


def _to_rgb_u8(img: np.ndarray, bgr: bool = True) -> np.ndarray:
    """Gray / BGR(A) / RGB(A), 8/16-bit or float images as C-contiguous uint8 RGB, by the one pixel rule of
    :mod:`textsam_eus.model.pixels` (what training reads the same files with)."""
    return to_rgb_uint8(img, "bgr" if bgr else "rgb")


def release_quietly(resource, method: str = "close") -> None:
    """Call ``resource.<method>()`` if there is a resource, ignoring its errors (teardown of files/devices)."""
    if resource is None:
        return
    try:
        getattr(resource, method)()
    except Exception:
        pass


def _natural_key(name: str) -> list:
    return [int(t) if t.isdigit() else t.lower() for t in re.split(r"(\d+)", name)]


def list_video_devices() -> list[str]:
    """The ``/dev/video*`` device nodes present (Linux); empty elsewhere."""
    if not sys.platform.startswith("linux"):
        return []
    return sorted(glob.glob("/dev/video*"), key=_natural_key)


def opencv_has_gstreamer() -> bool:
    """True when this OpenCV build reports GStreamer support."""
    import cv2

    for line in cv2.getBuildInformation().splitlines():
        if "GStreamer" in line and ":" in line:
            return line.split(":", 1)[1].strip().upper().startswith("YES")
    return False


class FrameSource:
    """Base class: context manager + iterator of :class:`FrameRecord`.

    Subclasses implement :meth:`_frames` (a generator) and :meth:`_release`.
    """

    fps: float | None = None
    size: tuple[int, int] = (0, 0)
    is_live: bool = False
    n_frames: int | None = None
    name: str = ""
    per_file_outputs: bool = False  # image folders: outputs named after each input file

    def __init__(self) -> None:
        self.warnings: list[str] = []  # e.g. "requested 1920x1080, device delivers 1280x720" (also added while read)
        self.exhausted = False  # the frames ran out by themselves (not closed early)
        self.ended_early: str | None = None  # why the input ended before its stated end (a truncated file)
        self.stats: dict[str, Any] = {
            "decoded": 0,
            "skipped_packets": 0,
            "decode_errors": 0,
            "reconnects": 0,
        }
        self._gen: Iterator[FrameRecord] | None = None
        self._closed = False
        self._released = False
        self._lock = threading.Lock()

    # -- iteration
    def _frames(self) -> Iterator[FrameRecord]:  # pragma: no cover - abstract
        raise NotImplementedError

    def __iter__(self) -> "FrameSource":
        return self

    def __next__(self) -> FrameRecord:
        if self._closed:
            self._finish()
            raise StopIteration
        if self._gen is None:
            self._gen = self._frames()
        try:
            frame = next(self._gen)
        except StopIteration:
            self.exhausted = not self._closed
            raise
        if self._closed:  # closed from another thread while this one was reading
            self._finish()
            raise StopIteration
        return frame

    # -- lifetime
    def _release(self) -> None:  # pragma: no cover - overridden
        pass

    def _finish(self) -> None:
        with self._lock:
            if self._released:
                return
            self._released = True
            gen, self._gen = self._gen, None
        release_quietly(gen)
        self._release()

    def close(self) -> None:
        """Release the underlying file/device. Idempotent.

        Safe to call from another thread while a frame is being read: the release then
        happens in the reading thread as soon as that read returns.
        """
        self._closed = True
        gen = self._gen
        if gen is not None and gen.gi_running:
            return
        self._finish()

    @property
    def closed(self) -> bool:
        return self._closed

    def __enter__(self):
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        self.close()

    def __del__(self):  # best effort
        try:
            self.close()
        except Exception:
            pass

    def __repr__(self) -> str:
        w, h = self.size
        return (
            f"{type(self).__name__}({self.name!r}, size={w}x{h}, fps={self.fps}, "
            f"live={self.is_live}, n_frames={self.n_frames})"
        )


# --------------------------------------------------------------------------- wrapped sources


def wrapped_sources(source) -> Iterator[Any]:
    """``source`` and the sources it wraps (a ``--realtime`` replay wraps a file or folder source)."""
    for _ in range(4):
        if source is None:
            return
        yield source
        source = getattr(source, "inner", None)


def through(source, attr: str, default):
    """``source.<attr>``, or that of the source it wraps, when it has none."""
    for s in wrapped_sources(source):
        value = getattr(s, attr, None)
        if value is not None and value is not False:
            return value
    return default


def input_files(source) -> list[Path]:
    """The files ``source`` reads (a video or DICOM file, the images of a folder; through a ``--realtime``
    replay): ``--overwrite`` never removes them."""
    files: list[Path] = []
    for s in wrapped_sources(source):
        path = getattr(s, "path", None)
        if isinstance(path, Path):
            files.append(path)
        files += [p for p in getattr(s, "files", None) or [] if isinstance(p, Path)]
    return files
