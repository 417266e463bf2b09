"""Frame sources for the streaming pipeline.

Every source is a context manager and an iterator of :class:`~textsam_eus.stream.frames.Frame`
and exposes ``fps``, ``size`` (width, height), ``is_live``, ``n_frames`` and a ``stats`` dict.

* :class:`VideoFileSource`   - recorded videos through PyAV (any container/codec FFmpeg reads),
  robust to corrupt / truncated files.
* :class:`CaptureSource`     - live capture cards / webcams / GStreamer pipelines through OpenCV,
  with bounded reconnects when the device drops out.
* :class:`ImageFolderSource` - a folder of still images (sorted naturally).
* :class:`PhantomSource`     - the synthetic EUS phantom (ground truth available as ``last_mask``).
* :func:`open_source`        - dispatch from a command-line string.
* :class:`ROI`               - region-of-interest crops (e.g. the EUS image area of the processor screen).

This module must stay free of torch and of the model / engine packages.
"""

from __future__ import annotations

import glob
import math
import os
import re
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterator

import numpy as np

from .frames import Frame

__all__ = [
    "SourceError",
    "FrameSource",
    "VideoFileSource",
    "CaptureSource",
    "ImageFolderSource",
    "PhantomSource",
    "open_source",
    "ROI",
    "list_presets",
    "IMAGE_EXTENSIONS",
    "list_video_devices",
    "opencv_has_gstreamer",
]

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff")

ACCEPTED_SPECS = (
    "  - a video file readable by FFmpeg (e.g. clip.mp4, clip.avi, clip.mkv, clip.ts)\n"
    "  - a folder of images (png/jpg/jpeg/bmp/tif/tiff)\n"
    "  - a capture device index (e.g. 0) or a V4L2 device path (e.g. /dev/video0)\n"
    "  - a GStreamer pipeline string containing '!' (e.g. 'v4l2src ! videoconvert ! appsink')\n"
    "  - 'phantom' or 'phantom:N' for N synthetic phantom frames"
)


class SourceError(ValueError):
    """A frame source cannot be opened or is misconfigured (message says which and why)."""


# --------------------------------------------------------------------------- helpers


def _to_rgb_u8(img: np.ndarray, bgr: bool = True) -> np.ndarray:
    """Convert gray / BGR / BGRA, 8/16-bit or float images to C-contiguous uint8 RGB."""
    import cv2

    if img.dtype != np.uint8:
        if img.dtype == np.uint16:
            img = ((img.astype(np.uint32) + 128) // 257).astype(np.uint8)
        elif np.issubdtype(img.dtype, np.floating):
            f = np.nan_to_num(img.astype(np.float32))
            if f.size and float(f.max()) <= 1.0:
                f = f * 255.0
            img = np.clip(f + 0.5, 0, 255).astype(np.uint8)
        else:  # other integer types (int32 labels, int16, ...)
            img = np.clip(img, 0, 255).astype(np.uint8)
    if img.ndim == 2:
        out = cv2.cvtColor(img, cv2.COLOR_GRAY2RGB)
    elif img.ndim == 3 and img.shape[2] == 1:
        out = cv2.cvtColor(img[:, :, 0], cv2.COLOR_GRAY2RGB)
    elif img.ndim == 3 and img.shape[2] == 3:
        out = cv2.cvtColor(img, cv2.COLOR_BGR2RGB) if bgr else img
    elif img.ndim == 3 and img.shape[2] == 4:
        out = cv2.cvtColor(img, cv2.COLOR_BGRA2RGB if bgr else cv2.COLOR_RGBA2RGB)
    else:
        raise SourceError(f"unsupported image shape {img.shape} (expected gray, BGR or BGRA)")
    return np.ascontiguousarray(out)


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
    """Base class: context manager + iterator of :class:`Frame`.

    Subclasses implement :meth:`_frames` (a generator) and :meth:`_release`.
    """

    fps: float | None = None
    size: tuple[int, int] = (0, 0)
    is_live: bool = False
    n_frames: int | None = None
    name: str = ""

    def __init__(self) -> None:
        self.stats: dict[str, Any] = {
            "decoded": 0,
            "skipped_packets": 0,
            "decode_errors": 0,
            "reconnects": 0,
        }
        self._gen: Iterator[Frame] | None = None
        self._closed = False
        self._released = False
        self._lock = threading.Lock()

    # -- iteration
    def _frames(self) -> Iterator[Frame]:  # pragma: no cover - abstract
        raise NotImplementedError

    def __iter__(self) -> "FrameSource":
        return self

    def __next__(self) -> Frame:
        if self._closed:
            self._finish()
            raise StopIteration
        if self._gen is None:
            self._gen = self._frames()
        frame = next(self._gen)
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
        if gen is not None:
            try:
                gen.close()
            except Exception:
                pass
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


# --------------------------------------------------------------------------- video files


class VideoFileSource(FrameSource):
    """Decode a recorded video with PyAV, packet by packet.

    Args:
        path: any container/codec FFmpeg can read.
        fps: override the frame rate (useful for raw ``.h264`` streams that carry none).
        max_consecutive_errors: stop after this many demux errors in a row.

    Corrupt or truncated files: every decodable frame is produced; packets the decoder
    rejects are skipped and counted (``stats['skipped_packets']``, ``stats['decode_errors']``);
    packets/frames FFmpeg flags as corrupt are counted (``corrupt_packets``, ``corrupt_frames``)
    and still delivered (FFmpeg conceals the damage); iteration ends cleanly.

    Raises:
        SourceError: at construction, for a missing/empty file, a file FFmpeg cannot read,
            or a file without a video stream.
    """

    def __init__(self, path: str | os.PathLike, *, fps: float | None = None,
                 max_consecutive_errors: int = 32) -> None:
        super().__init__()
        import av

        self.path = Path(path)
        self.name = str(self.path)
        self.is_live = False
        self.max_consecutive_errors = int(max_consecutive_errors)
        self.stats.update(demux_errors=0, corrupt_packets=0, corrupt_frames=0)
        self._container = None

        if not self.path.exists():
            raise SourceError(f"video file not found: {self.path}")
        if self.path.is_dir():
            raise SourceError(f"{self.path} is a folder, not a video file "
                              "(use ImageFolderSource / open_source for image folders)")
        if self.path.stat().st_size == 0:
            raise SourceError(f"{self.path}: file is empty (0 bytes), not a video")
        try:
            container = av.open(str(self.path), mode="r")
        except (av.FFmpegError, OSError, UnicodeDecodeError) as e:
            raise SourceError(
                f"{self.path}: not a video file FFmpeg can read ({type(e).__name__}: {e})"
            ) from None
        self._container = container
        kinds = [s.type for s in container.streams]
        videos = [s for s in container.streams if s.type == "video"]
        fmt = getattr(container.format, "name", "?")
        if not videos:
            self._release()
            found = ", ".join(sorted(set(kinds))) or "no streams at all"
            raise SourceError(f"{self.path}: no video stream in this {fmt} file (found: {found})")
        stream = videos[0]
        codec_name = stream.codec_context.name if stream.codec_context else None
        if fmt == "tty" or codec_name in (None, "ansi", "bintext", "xbin", "idf"):
            self._release()
            raise SourceError(f"{self.path}: looks like a text file, not a video "
                              f"(FFmpeg format {fmt!r}, codec {codec_name!r})")
        width = int(stream.codec_context.width or 0)
        height = int(stream.codec_context.height or 0)
        if width <= 0 or height <= 0:
            self._release()
            raise SourceError(f"{self.path}: video stream has no frame size "
                              f"(codec {codec_name!r}); the file is probably damaged")
        self._stream = stream
        self.codec = codec_name
        self.format = fmt
        self.size = (width, height)
        if fps is not None:
            if not (fps > 0 and math.isfinite(fps)):
                raise SourceError(f"fps must be > 0, got {fps}")
            self.fps = float(fps)
        else:
            rate = None
            for r in (stream.average_rate, stream.guessed_rate, stream.base_rate):
                if r is not None and r > 0:
                    rate = float(r)
                    break
            self.fps = rate
        self._fps_override = fps is not None
        self.n_frames = int(stream.frames) if stream.frames and stream.frames > 0 else None
        self.time_base = stream.time_base

    def _release(self) -> None:
        c, self._container = self._container, None
        if c is not None:
            try:
                c.close()
            except Exception:
                pass

    def _make(self, vf, index: int) -> Frame:
        img = np.ascontiguousarray(vf.to_ndarray(format="rgb24"))
        ts = time.monotonic()
        pts = None
        if vf.pts is not None and not self._fps_override:
            t = vf.time
            pts = float(t) if t is not None else None
        if pts is None and self.fps:
            pts = index / self.fps
        return Frame(index=index, image=img, timestamp=ts, pts=pts, source=self.name)

    def _frames(self) -> Iterator[Frame]:
        import av

        container, stream = self._container, self._stream
        if container is None:
            return
        index = 0
        consecutive = 0
        flushed = False
        demux = container.demux(stream)
        while True:
            try:
                packet = next(demux)
                consecutive = 0
            except StopIteration:
                break
            except av.FFmpegError:
                self.stats["demux_errors"] += 1
                self.stats["decode_errors"] += 1
                consecutive += 1
                if consecutive >= self.max_consecutive_errors:
                    break
                demux = container.demux(stream)  # resume reading after the bad spot
                continue
            if packet.size == 0 and packet.dts is None:
                flushed = True  # PyAV's end-of-stream flush packet
            elif packet.is_corrupt:
                self.stats["corrupt_packets"] += 1
            try:
                decoded = packet.decode()
            except av.FFmpegError:  # InvalidDataError is a subclass
                self.stats["skipped_packets"] += 1
                self.stats["decode_errors"] += 1
                continue
            for vf in decoded:
                if vf.is_corrupt:
                    self.stats["corrupt_frames"] += 1
                frame = self._make(vf, index)
                index += 1
                self.stats["decoded"] = index
                yield frame
        if not flushed:  # demux ended on an error: drain the decoder
            try:
                remaining = stream.codec_context.decode(None)
            except av.FFmpegError:
                self.stats["decode_errors"] += 1
                remaining = []
            for vf in remaining:
                if vf.is_corrupt:
                    self.stats["corrupt_frames"] += 1
                frame = self._make(vf, index)
                index += 1
                self.stats["decoded"] = index
                yield frame


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
        self.warnings: list[str] = []
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
            if cap is not None:
                try:
                    cap.release()
                except Exception:
                    pass
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
        if cap is not None:
            try:
                cap.release()
            except Exception:
                pass
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
                try:
                    cap.release()
                except Exception:
                    pass
                continue
            self._cap = cap
            self.stats["reconnects"] += 1
            return img
        return None

    def _frames(self) -> Iterator[Frame]:
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
            frame = Frame(index=index, image=rgb, timestamp=ts, pts=None, source=self.name)
            index += 1
            self.stats["decoded"] = index
            yield frame

    def _release(self) -> None:
        cap, self._cap = self._cap, None
        if cap is not None:
            try:
                cap.release()
            except Exception:
                pass


# --------------------------------------------------------------------------- image folders


class ImageFolderSource(FrameSource):
    """Images of a folder in natural sort order (``frame2`` before ``frame10``).

    Images are read with ``cv2.IMREAD_UNCHANGED``; gray, BGRA, 16-bit and float images are
    converted to uint8 RGB.  Unreadable files are skipped and counted in ``decode_errors``.
    ``pts`` is ``index / fps``.
    """

    def __init__(self, folder: str | os.PathLike, fps: float = 15.0) -> None:
        super().__init__()
        self.folder = Path(folder)
        self.name = str(self.folder)
        if not self.folder.exists():
            raise SourceError(f"image folder not found: {self.folder}")
        if not self.folder.is_dir():
            raise SourceError(f"{self.folder} is not a folder")
        if not (fps and fps > 0):
            raise SourceError(f"fps must be > 0, got {fps}")
        files = [p for p in self.folder.iterdir()
                 if p.is_file() and p.suffix.lower() in IMAGE_EXTENSIONS]
        if not files:
            raise SourceError(f"no images ({'/'.join(e[1:] for e in IMAGE_EXTENSIONS)}) "
                              f"found in folder {self.folder}")
        self.files = sorted(files, key=lambda p: _natural_key(p.name))
        self.fps = float(fps)
        self.is_live = False
        self.n_frames = len(self.files)
        first = self._load(self.files[0])
        if first is None:
            self.size = (0, 0)
        else:
            self.size = (first.shape[1], first.shape[0])

    @staticmethod
    def _load(path: Path) -> np.ndarray | None:
        import cv2

        try:
            buf = np.fromfile(str(path), dtype=np.uint8)  # works with non-ASCII paths
            img = cv2.imdecode(buf, cv2.IMREAD_UNCHANGED) if buf.size else None
        except (OSError, cv2.error):
            img = None
        if img is None:
            return None
        return _to_rgb_u8(img, bgr=True)

    def _frames(self) -> Iterator[Frame]:
        index = 0
        for path in self.files:
            img = self._load(path)
            if img is None:
                self.stats["skipped_packets"] += 1
                self.stats["decode_errors"] += 1
                continue
            ts = time.monotonic()
            frame = Frame(index=index, image=img, timestamp=ts, pts=index / self.fps,
                          source=str(path))
            index += 1
            self.stats["decoded"] = index
            yield frame


# --------------------------------------------------------------------------- phantom


class PhantomSource(FrameSource):
    """Synthetic EUS phantom frames (``textsam_eus.common.phantom.PhantomClip``).

    ``last_mask`` holds the ground-truth mask (uint8 HxW, 0/1) of the most recent frame.
    With ``realtime=True`` frames are paced at ``fps`` and the source behaves as live.
    """

    def __init__(self, n_frames: int = 150, seed: int = 0, width: int = 640, height: int = 480,
                 fps: float = 15.0, realtime: bool = False) -> None:
        super().__init__()
        if int(n_frames) <= 0:
            raise SourceError(f"phantom n_frames must be > 0, got {n_frames}")
        if int(width) <= 0 or int(height) <= 0:
            raise SourceError(f"phantom size must be positive, got {width}x{height}")
        if not (fps and fps > 0):
            raise SourceError(f"fps must be > 0, got {fps}")
        from textsam_eus.common.phantom import PhantomClip, PhantomConfig  # lazy by design

        self.n_frames = int(n_frames)
        self.seed = int(seed)
        self.fps = float(fps)
        self.size = (int(width), int(height))
        self.realtime = bool(realtime)
        self.is_live = self.realtime
        self.name = f"phantom:{self.n_frames}:seed{self.seed}"
        self._clip = PhantomClip(self.n_frames, self.seed,
                                 config=PhantomConfig(height=int(height), width=int(width)),
                                 fps=self.fps)
        self.last_mask: np.ndarray | None = None

    def _frames(self) -> Iterator[Frame]:
        t0 = time.monotonic()
        for index, item in enumerate(self._clip):
            if index >= self.n_frames:
                break
            image, mask = item[0], item[1]
            if self.realtime:
                delay = t0 + index / self.fps - time.monotonic()
                if delay > 0:
                    time.sleep(delay)
            img = np.asarray(image)
            if img.dtype != np.uint8 or img.ndim != 3 or img.shape[2] != 3:
                img = _to_rgb_u8(img, bgr=False)
            img = np.ascontiguousarray(img)
            self.last_mask = np.ascontiguousarray(np.asarray(mask, dtype=np.uint8))
            frame = Frame(index=index, image=img, timestamp=time.monotonic(),
                          pts=index / self.fps, source=self.name)
            self.stats["decoded"] = index + 1
            yield frame

    def _release(self) -> None:
        self._clip = None


# --------------------------------------------------------------------------- dispatch


def open_source(spec: str | int | os.PathLike, **kw) -> FrameSource:
    """Open a frame source from a command-line string (see ``ACCEPTED_SPECS``).

    Keyword arguments are passed to the chosen source's constructor.
    """
    if isinstance(spec, bool):
        raise SourceError(f"invalid source {spec!r}; accepted forms:\n{ACCEPTED_SPECS}")
    if isinstance(spec, int):
        return CaptureSource(spec, **kw)
    if isinstance(spec, os.PathLike):
        spec = os.fspath(spec)
    if not isinstance(spec, str) or not spec.strip():
        raise SourceError(f"invalid source {spec!r}; accepted forms:\n{ACCEPTED_SPECS}")
    s = spec.strip()
    if "!" in s:
        return CaptureSource(s, backend=kw.pop("backend", "gstreamer"), **kw)
    low = s.lower()
    if low == "phantom" or low.startswith("phantom:"):
        n = low.split(":", 1)[1] if ":" in low else ""
        if n:
            if not n.isdigit() or int(n) <= 0:
                raise SourceError(f"invalid phantom spec {spec!r}: use 'phantom' or 'phantom:N' "
                                  "with N a positive frame count")
            kw.setdefault("n_frames", int(n))
        return PhantomSource(**kw)
    if s.isdigit():
        return CaptureSource(int(s), **kw)
    if s.startswith("/dev/video"):
        return CaptureSource(s, **kw)
    p = Path(s).expanduser()
    if p.is_file():
        return VideoFileSource(p, **kw)
    if p.is_dir():
        return ImageFolderSource(p, **kw)
    raise SourceError(f"cannot open source {spec!r}: no such file or folder, and not a device, "
                      f"pipeline or phantom spec. Accepted forms:\n{ACCEPTED_SPECS}")


# --------------------------------------------------------------------------- ROI

_PRESETS: dict[str, tuple[tuple[int, int, int, int], str]] = {
    # EUS database crop of an 800x600 processor screen: rows 57-513, cols 45-755
    # (1-based inclusive) -> frame[56:513, 44:755]
    "eus800x600": ((44, 56, 711, 457), "EUS image area of an 800x600 processor screen "
                                       "(rows 57-513, cols 45-755, 1-based inclusive)"),
}


@dataclass
class ROI:
    """Axis-aligned region of interest in pixel coordinates (0-based, ``w`` x ``h``)."""

    x: int
    y: int
    w: int
    h: int

    def __post_init__(self) -> None:
        for f in ("x", "y", "w", "h"):
            v = getattr(self, f)
            if isinstance(v, bool) or not isinstance(v, (int, np.integer)):
                raise ValueError(f"ROI.{f} must be an int, got {v!r}")
            setattr(self, f, int(v))
        if self.x < 0 or self.y < 0:
            raise ValueError(f"ROI x/y must be >= 0, got x={self.x}, y={self.y}")
        if self.w <= 0 or self.h <= 0:
            raise ValueError(f"ROI w/h must be > 0, got w={self.w}, h={self.h}")

    def __str__(self) -> str:
        return f"{self.x},{self.y},{self.w},{self.h}"

    @classmethod
    def parse(cls, text: str) -> "ROI":
        """Parse ``'x,y,w,h'`` (a preset name is accepted too)."""
        if isinstance(text, ROI):
            return text
        t = str(text).strip()
        if t.lower() in _PRESETS:
            return cls.preset(t)
        parts = [p.strip() for p in t.replace(";", ",").split(",")]
        if len(parts) != 4 or not all(re.fullmatch(r"[+-]?\d+", p) for p in parts):
            raise ValueError(f"invalid ROI {text!r}: expected 'x,y,w,h' (four integers, e.g. "
                             f"'44,56,711,457') or a preset name ({', '.join(_PRESETS)})")
        x, y, w, h = (int(p) for p in parts)
        try:
            return cls(x, y, w, h)
        except ValueError as e:
            raise ValueError(f"invalid ROI {text!r}: {e}") from None

    @classmethod
    def preset(cls, name: str) -> "ROI":
        key = str(name).strip().lower()
        if key not in _PRESETS:
            raise ValueError(f"unknown ROI preset {name!r}; available: {', '.join(_PRESETS)}")
        return cls(*_PRESETS[key][0])

    @classmethod
    def full(cls, width: int, height: int) -> "ROI":
        return cls(0, 0, int(width), int(height))

    @property
    def slices(self) -> tuple[slice, slice]:
        return slice(self.y, self.y + self.h), slice(self.x, self.x + self.w)

    def fits(self, width: int, height: int) -> bool:
        return self.x + self.w <= width and self.y + self.h <= height

    def validate(self, width: int, height: int) -> "ROI":
        """Raise :class:`SourceError` when the ROI does not lie inside a ``width x height`` frame."""
        if self.fits(width, height):
            return self
        msg = (f"ROI {self} (x={self.x}, y={self.y}, w={self.w}, h={self.h}; right edge "
               f"{self.x + self.w}, bottom edge {self.y + self.h}) lies outside the "
               f"{width}x{height} frame.")
        cw, ch = width - self.x, height - self.y
        if cw > 0 and ch > 0:
            fixed = ROI(self.x, self.y, min(self.w, cw), min(self.h, ch))
            msg += f" Fix: use --roi {fixed} (clipped to the frame)"
        else:
            msg += " Fix: choose a ROI inside the frame"
        msg += (f", --roi 0,0,{width},{height} for the full frame, or a preset matching the "
                f"screen size ({', '.join(_PRESETS)}).")
        raise SourceError(msg)

    def crop(self, image: np.ndarray) -> np.ndarray:
        """The ROI view of ``image`` (no copy). Raises SourceError if it does not fit."""
        h, w = image.shape[:2]
        self.validate(w, h)
        ys, xs = self.slices
        return image[ys, xs]

    def paste(self, full_shape: tuple[int, ...], mask_roi: np.ndarray) -> np.ndarray:
        """Map a ROI-sized mask back to full-frame coordinates (zeros outside the ROI)."""
        fh, fw = int(full_shape[0]), int(full_shape[1])
        mask_roi = np.asarray(mask_roi)
        if mask_roi.shape[:2] != (self.h, self.w):
            raise ValueError(f"mask shape {mask_roi.shape[:2]} does not match ROI {self} "
                             f"(expected {(self.h, self.w)})")
        self.validate(fw, fh)
        out = np.zeros((fh, fw) + mask_roi.shape[2:], dtype=mask_roi.dtype)
        ys, xs = self.slices
        out[ys, xs] = mask_roi
        return out


def list_presets() -> dict[str, ROI]:
    """Available ROI presets: name -> ROI (descriptions in ``ROI_PRESET_INFO``)."""
    return {k: ROI(*v[0]) for k, v in _PRESETS.items()}


ROI_PRESET_INFO: dict[str, str] = {k: v[1] for k, v in _PRESETS.items()}
