"""Live capture through OpenCV: device index, /dev/videoN (V4L2) or a GStreamer pipeline, with bounded reconnects.

This module must stay free of torch and of the model / engine packages.
"""

from __future__ import annotations

import math
import os
import sys
import time
from typing import Any, Callable, Iterator


from ..base import FrameSource, SourceError, _to_rgb_u8, list_video_devices, opencv_has_gstreamer, release_quietly
from ..record import FrameRecord

# --------------------------------------------------------------------------- live capture

_BACKENDS = {
    "auto": None,
    "any": "CAP_ANY",
    "v4l2": "CAP_V4L2",
    "gstreamer": "CAP_GSTREAMER",
    "ffmpeg": "CAP_FFMPEG",
    "dshow": "CAP_DSHOW",
    "msmf": "CAP_MSMF",
    "avfoundation": "CAP_AVFOUNDATION",
}


def _api_name(api: int) -> str:
    import cv2

    for key, const in _BACKENDS.items():
        if const and getattr(cv2, const, None) == api:
            return key.upper() if key != "any" else "ANY"
    return str(api)


class CaptureSource(FrameSource):
    """Live capture through OpenCV (capture cards, webcams, GStreamer pipelines).

    Args:
        device: an int index (or digit string), a ``/dev/videoN`` path (V4L2), a GStreamer
            pipeline string (contains ``'!'``; needs an OpenCV built with GStreamer), or any
            other string OpenCV can open (e.g. an RTSP URL).
        width, height, fps: requested capture mode (``cap.set``); actual values are read back.
        backend: 'auto', 'any', 'v4l2', 'gstreamer', 'ffmpeg', 'dshow', 'msmf', 'avfoundation'.
        max_reconnects: reconnect attempts after the device is lost (per loss).
        reconnect_delay: seconds to wait before each reconnect attempt.
        open_fn: dependency-injection hook ``open_fn(device, api_preference) -> capture``
            returning a ``cv2.VideoCapture``-like object (``isOpened/read/set/get/release``).
        fourcc: optional pixel format request, e.g. ``'MJPG'`` (many USB HDMI grabbers need it
            for full resolution/frame rate).
        buffer_size: optional ``CAP_PROP_BUFFERSIZE`` (1 = lowest latency where supported).

    Stats: ``decoded``, ``read_failures``, ``reconnect_attempts``, ``reconnects`` (successful),
    ``lost`` (True once the device is given up on; iteration then ends cleanly).
    """

    def __init__(self, device: int | str, width: int | None = None, height: int | None = None,
                 fps: float | None = None, backend: str = "auto", max_reconnects: int = 5,
                 reconnect_delay: float = 0.5, open_fn: Callable[..., Any] | None = None,
                 *, fourcc: str | None = None, buffer_size: int | None = None,
                 sleep_fn: Callable[[float], None] = time.sleep) -> None:
        super().__init__()
        import cv2

        if isinstance(device, str) and device.strip().isdigit():
            device = int(device.strip())
        if isinstance(device, bool) or not isinstance(device, (int, str)):
            raise SourceError(f"capture device must be an int index or a string, got {device!r}")
        backend = str(backend).lower()
        if backend not in _BACKENDS:
            raise SourceError(f"unknown capture backend {backend!r}; choose one of "
                              f"{', '.join(_BACKENDS)}")
        for nm, v in (("width", width), ("height", height)):
            if v is not None and int(v) <= 0:
                raise SourceError(f"capture {nm} must be > 0, got {v}")
        if fps is not None and not fps > 0:
            raise SourceError(f"capture fps must be > 0, got {fps}")
        if max_reconnects < 0:
            raise SourceError(f"max_reconnects must be >= 0, got {max_reconnects}")
        self.device = device
        self.name = f"capture:{device}"
        self.is_live = True
        self.n_frames = None
        self.max_reconnects = int(max_reconnects)
        self.reconnect_delay = float(reconnect_delay)
        self._req = dict(width=width, height=height, fps=fps, fourcc=fourcc,
                         buffer_size=buffer_size)
        self._open_fn = open_fn if open_fn is not None else cv2.VideoCapture
        self._sleep = sleep_fn
        self.stats.update(read_failures=0, reconnect_attempts=0, lost=False)
        self._cap = None

        is_pipeline = isinstance(device, str) and "!" in device
        if is_pipeline and backend in ("auto", "gstreamer"):
            if open_fn is None and not opencv_has_gstreamer():
                raise SourceError(
                    f"cannot open GStreamer pipeline {device!r}: this OpenCV build lacks "
                    "GStreamer support (cv2.getBuildInformation() reports GStreamer: NO). "
                    "Use a device index or /dev/videoN instead, or install an OpenCV built "
                    "with GStreamer."
                )
            apis = [cv2.CAP_GSTREAMER]
        elif backend != "auto":
            apis = [getattr(cv2, _BACKENDS[backend])]
        elif isinstance(device, str) and device.startswith("/dev/video"):
            apis = [cv2.CAP_V4L2]
        elif isinstance(device, int) and sys.platform.startswith("linux"):
            apis = [cv2.CAP_V4L2, cv2.CAP_ANY]
        else:
            apis = [cv2.CAP_ANY]

        if (open_fn is None and isinstance(device, str) and device.startswith("/dev/video")
                and not os.path.exists(device)):
            raise SourceError(f"capture device {device} does not exist. "
                              + self._devices_hint())

        tried = []
        for api in apis:
            tried.append(f"{device!r} with {_api_name(api)}")
            cap = self._try_open(device, api)
            if cap is not None:
                self._cap = cap
                self._api = api
                break
        if self._cap is None:
            raise SourceError(
                f"cannot open capture device {device!r}; tried: {'; '.join(tried)}. "
                + self._devices_hint()
            )
        self._configure(self._cap)
        self._read_props(self._cap)

    @staticmethod
    def _devices_hint() -> str:
        if not sys.platform.startswith("linux"):
            return "Check that the capture card is plugged in and not used by another program."
        devs = list_video_devices()
        if devs:
            return "Video devices present: " + ", ".join(devs) + "."
        return "No /dev/video* devices exist: is the capture card plugged in and its driver loaded?"

    def _try_open(self, device, api):
        try:
            cap = self._open_fn(device, api)
        except Exception:
            return None
        try:
            ok = cap is not None and bool(cap.isOpened())
        except Exception:
            ok = False
        if not ok:
            release_quietly(cap, "release")
            return None
        return cap

    def _configure(self, cap) -> None:
        import cv2

        r = self._req

        def _set(prop, value, label):
            try:
                ok = cap.set(prop, value)
            except Exception:
                ok = False
            if not ok:
                self.warnings.append(f"capture ignored request {label}={value}")

        if r["fourcc"]:
            code = str(r["fourcc"]).upper().ljust(4)[:4]
            _set(cv2.CAP_PROP_FOURCC, cv2.VideoWriter_fourcc(*code), "fourcc")
        if r["width"] is not None:
            _set(cv2.CAP_PROP_FRAME_WIDTH, float(r["width"]), "width")
        if r["height"] is not None:
            _set(cv2.CAP_PROP_FRAME_HEIGHT, float(r["height"]), "height")
        if r["fps"] is not None:
            _set(cv2.CAP_PROP_FPS, float(r["fps"]), "fps")
        if r["buffer_size"] is not None:
            _set(cv2.CAP_PROP_BUFFERSIZE, float(r["buffer_size"]), "buffer_size")

    def _read_props(self, cap) -> None:
        import cv2

        def _get(prop):
            try:
                v = float(cap.get(prop))
            except Exception:
                return 0.0
            return v if math.isfinite(v) else 0.0

        w, h, f = _get(cv2.CAP_PROP_FRAME_WIDTH), _get(cv2.CAP_PROP_FRAME_HEIGHT), _get(cv2.CAP_PROP_FPS)
        if w > 0 and h > 0:
            self.size = (int(round(w)), int(round(h)))
        elif self._req["width"] and self._req["height"]:
            self.size = (int(self._req["width"]), int(self._req["height"]))
        if f > 0:
            self.fps = f
        elif self._req["fps"]:
            self.fps = float(self._req["fps"])
        r = self._req
        if r["width"] and r["height"] and w > 0 and h > 0 and (int(w), int(h)) != (r["width"], r["height"]):
            self.warnings.append(f"requested {r['width']}x{r['height']}, device delivers {int(w)}x{int(h)}")

    def _read(self, cap):
        try:
            ok, img = cap.read()
        except Exception:
            return None
        if not ok or img is None or getattr(img, "size", 0) == 0:
            return None
        return img

    def _reconnect(self):
        """Bounded reconnect; returns the first image read after reconnecting, or None."""
        cap, self._cap = self._cap, None
        release_quietly(cap, "release")
        for _ in range(self.max_reconnects):
            if self._closed:
                return None
            if self.reconnect_delay > 0:
                self._sleep(self.reconnect_delay)
            self.stats["reconnect_attempts"] += 1
            cap = self._try_open(self.device, self._api)
            if cap is None:
                continue
            self._configure(cap)
            img = self._read(cap)
            if img is None:
                release_quietly(cap, "release")
                continue
            self._cap = cap
            self.stats["reconnects"] += 1
            return img
        return None

    def _frames(self) -> Iterator[FrameRecord]:
        index = 0
        first = True
        while not self._closed:
            img = self._read(self._cap) if self._cap is not None else None
            if img is None:
                self.stats["read_failures"] += 1
                img = self._reconnect()
                if img is None:
                    self.stats["lost"] = True
                    return
            ts = time.monotonic()
            rgb = _to_rgb_u8(img, bgr=True)
            if first:
                self.size = (rgb.shape[1], rgb.shape[0])
                first = False
            frame = FrameRecord(index=index, image=rgb, timestamp=ts, pts=None, source=self.name)
            index += 1
            self.stats["decoded"] = index
            yield frame

    def _release(self) -> None:
        cap, self._cap = self._cap, None
        release_quietly(cap, "release")


