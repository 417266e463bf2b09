"""Live sources through PyAV/FFmpeg's input devices: V4L2 capture cards and ``lavfi`` filter graphs.

UVC capture cards (Magewell, Epiphan, Elgato, AVerMedia) are V4L2 devices on Linux. FFmpeg's ``v4l2`` demuxer opens
them with a requested size, frame rate and pixel format (``input_format``, e.g. ``mjpeg`` or ``yuyv422``), and
stamps each frame with the kernel's capture time. The same class opens an FFmpeg ``lavfi`` graph as a live source,
so a real live-paced stream needs no hardware: ``lavfi:testsrc2=size=800x600:rate=60,realtime`` or
``lavfi:movie=clip.mp4,realtime``.

This module must stay free of torch and of the engine packages (of ``model`` it imports only torch-free modules).
"""

from __future__ import annotations

import math
import os
import time
from typing import Any, Callable, Iterator

import numpy as np

from ...model.imports import require_pyav
from ..base import FrameSource, SourceError, list_video_devices, release_quietly
from ..record import FrameRecord

__all__ = ["AvLiveSource"]

_KINDS = {"v4l2": "video4linux2,v4l2", "lavfi": "lavfi"}


def _format_available(kind: str) -> bool:
    av = require_pyav()
    return _KINDS[kind] in av.formats_available or kind in av.formats_available


class AvLiveSource(FrameSource):
    """A V4L2 device (``kind='v4l2'``, ``url='/dev/video0'``) or an FFmpeg filter graph (``kind='lavfi'``).

    Args:
        width, height, fps: requested mode (V4L2: ``video_size``/``framerate``; ignored by lavfi, whose graph says).
        pixel_format: V4L2 ``input_format`` (``mjpeg``, ``yuyv422``, ``nv12``, ...).
        max_reconnects, reconnect_delay: after a read error the device is reopened at most this often, then the
            source ends with ``stats['lost'] = True``.
        options: further FFmpeg demuxer options.

    ``timestamp`` is the kernel's capture time when the device's timestamps are on this process's monotonic clock
    (V4L2 default), else the time the frame was read. ``stats['kernel_timestamps']`` says which.
    """

    def __init__(self, kind: str, url: str, *, width: int | None = None, height: int | None = None,
                 fps: float | None = None, pixel_format: str | None = None, max_reconnects: int = 5,
                 reconnect_delay: float = 0.5, options: dict[str, str] | None = None,
                 sleep_fn: Callable[[float], None] = time.sleep) -> None:
        super().__init__()
        if kind not in _KINDS:
            raise SourceError(f"unknown live source kind {kind!r}; choose one of {', '.join(_KINDS)}")
        for nm, v in (("width", width), ("height", height)):
            if v is not None and (isinstance(v, bool) or int(v) <= 0):
                raise SourceError(f"capture {nm} must be > 0, got {v}")
        if fps is not None and not (fps > 0 and math.isfinite(fps)):
            raise SourceError(f"capture fps must be > 0, got {fps}")
        if not url:
            raise SourceError(f"{kind}: give a device or graph, e.g. 'v4l2:/dev/video0' or "
                              "'lavfi:testsrc2=size=800x600:rate=30'")
        if not _format_available(kind):
            raise SourceError(f"this PyAV/FFmpeg build has no {kind!r} input; use a device index or /dev/videoN "
                              "(OpenCV) instead")
        self.kind, self.url = kind, url
        self.name = f"{kind}:{url}"
        self.is_live = True
        self.max_reconnects, self.reconnect_delay = int(max_reconnects), float(reconnect_delay)
        self._sleep = sleep_fn
        self._req = {"width": width, "height": height, "fps": fps}
        opts = dict(options or {})
        if kind == "v4l2":
            if not os.path.exists(url):
                devs = list_video_devices()
                raise SourceError(f"capture device {url} does not exist. " + (
                    "Video devices present: " + ", ".join(devs) + "." if devs else
                    "No /dev/video* devices exist: is the capture card plugged in and its driver loaded?"))
            if width and height:
                opts["video_size"] = f"{int(width)}x{int(height)}"
            if fps:
                opts["framerate"] = f"{fps:g}"
            if pixel_format:
                opts["input_format"] = str(pixel_format)
        elif width or height or pixel_format:
            self.warnings.append("lavfi graphs set their own size, rate and format: --width/--height/"
                                 "--pixel-format were ignored (put them in the graph, e.g. testsrc2=size=800x600)")
        self._options = opts
        self.stats.update(read_failures=0, reconnect_attempts=0, lost=False, kernel_timestamps=False)
        self._container = self._open()
        stream = self._container.streams.video[0]
        cc = stream.codec_context
        self.size = (int(cc.width or 0), int(cc.height or 0))
        rate = stream.average_rate or stream.guessed_rate or stream.base_rate
        self.fps = float(rate) if rate else (float(fps) if fps else None)
        if width and height and self.size != (int(width), int(height)):
            self.warnings.append(f"requested {int(width)}x{int(height)}, device delivers "
                                 f"{self.size[0]}x{self.size[1]}")
        if fps and self.fps and abs(self.fps - fps) > 0.5:
            self.warnings.append(f"requested {fps:g} fps, device delivers {self.fps:g} fps")

    def _open(self):
        import av

        try:
            container = av.open(self.url, format=self.kind, options=self._options or None)
        except (av.FFmpegError, OSError, ValueError) as exc:
            raise SourceError(f"cannot open {self.name} through FFmpeg ({type(exc).__name__}: {exc}); check the "
                              "device path or the filter graph") from None
        if not container.streams.video:
            container.close()
            raise SourceError(f"{self.name} has no video stream")
        return container

    def _timestamp(self, vf) -> float:
        now = time.monotonic()
        if self.kind == "v4l2" and vf.pts is not None and vf.time is not None:
            t = float(vf.time)
            if 0 <= now - t < 5.0:  # the kernel's monotonic capture time
                self.stats["kernel_timestamps"] = True
                return t
        return now

    def _reopen(self) -> bool:
        release_quietly(self._container)
        self._container = None
        for _ in range(self.max_reconnects):
            if self._closed:
                return False
            self._sleep(self.reconnect_delay)
            self.stats["reconnect_attempts"] += 1
            try:
                self._container = self._open()
            except SourceError:
                continue
            self.stats["reconnects"] += 1
            return True
        return False

    def _frames(self) -> Iterator[FrameRecord]:
        import av

        index = 0
        while not self._closed and self._container is not None:
            try:
                for vf in self._container.decode(video=0):
                    img = np.ascontiguousarray(vf.to_ndarray(format="rgb24"))
                    ts = self._timestamp(vf)
                    pts = float(vf.time) if vf.time is not None else None
                    yield FrameRecord(index=index, image=img, timestamp=ts, pts=pts, source=self.name)
                    index += 1
                    self.stats["decoded"] = index
                    if self._closed:
                        return
                return  # the graph/device ended
            except (av.FFmpegError, OSError) as exc:
                if self._closed:
                    return
                self.stats["read_failures"] += 1
                self.stats["decode_errors"] += 1
                if self.kind == "lavfi" or not self._reopen():
                    self.stats["lost"] = True
                    self.warnings.append(f"{self.name} lost: {type(exc).__name__}: {exc}")
                    return

    def _release(self) -> None:
        c, self._container = self._container, None
        release_quietly(c)

    def describe(self) -> dict[str, Any]:
        return {"kind": self.kind, "url": self.url, "options": dict(self._options)}
