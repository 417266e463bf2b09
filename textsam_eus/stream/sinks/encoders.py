"""PyAV video encoders behind the video sinks: H.264 MP4 of the overlay and a lossless FFV1 mask video.

Both write files that survive an abrupt stop: the MP4 is fragmented (a self-contained fragment about every second,
the moov box first), the Matroska file is written in clusters of at most a second, and every packet is flushed to
the file as it is muxed. After SIGKILL or a full disk everything up to the last complete fragment plays.

This module must stay free of torch and of the engine packages (of ``model`` it imports only torch-free modules).
"""

from __future__ import annotations

import math
import os
from fractions import Fraction
from pathlib import Path
from typing import Any, Iterator, Mapping

import numpy as np

from ...model.errors import UserError
from ...model.imports import require_pyav
from ..manifest import claim

__all__ = ["SinkError", "VideoEncoder", "MaskVideoEncoder", "read_mask_video", "FRAGMENTED_MP4"]

# fragment at every keyframe, moov first, fragments addressable on their own; written through at once
FRAGMENTED_MP4 = {"movflags": "frag_keyframe+empty_moov+default_base_moof", "flush_packets": "1"}
STREAMABLE_MKV = {"cluster_time_limit": "1000", "flush_packets": "1"}


class SinkError(UserError, ValueError):
    """A sink cannot be created or written (message says which and why)."""


def _fps_fraction(fps: float) -> Fraction:
    if isinstance(fps, bool) or not isinstance(fps, (int, float, Fraction, np.floating, np.integer)):
        raise SinkError(f"fps must be a positive number, got {fps!r}")
    if not (float(fps) > 0 and math.isfinite(float(fps))):
        raise SinkError(f"fps must be a positive number, got {fps!r}")
    if isinstance(fps, Fraction):
        return fps
    return Fraction(float(fps)).limit_denominator(1001)


def _chroma_alignment(pix_fmt: str) -> tuple[int, int]:
    """(x, y) multiples a frame size must have for ``pix_fmt`` (2, 2 for yuv420p)."""
    import av

    try:
        fmt = av.VideoFormat(pix_fmt, 64, 64)
    except Exception as e:
        raise SinkError(f"unknown pixel format {pix_fmt!r}: {e}") from None
    ax = ay = 1
    for comp in fmt.components:
        if comp.is_chroma and comp.width and comp.height:
            ax = max(ax, 64 // int(comp.width))
            ay = max(ay, 64 // int(comp.height))
    return ax, ay


class _AvVideoEncoder:
    """Shared PyAV encoder: lazy open on first frame, pts handling, idempotent close."""

    _input_format = "rgb24"
    _default_codec_options: dict[str, str] = {}

    def __init__(self, path, fps, codec, pix_fmt, time_base=None, options=None,
                 container_options=None, on_bad_pts="nudge"):
        av = require_pyav()
        self.path = Path(path)
        self.fps = float(fps) if fps is not None else None
        self._rate = _fps_fraction(fps)
        try:
            av.codec.Codec(codec, "w")
        except Exception as e:
            raise SinkError(f"video encoder {codec!r} is not available in this PyAV/FFmpeg "
                            f"build: {e}") from None
        self.codec = codec
        self.pix_fmt = pix_fmt
        self._align = _chroma_alignment(pix_fmt)
        if time_base is None:
            if self.path.suffix.lower() == ".avi":  # frame-based container
                time_base = 1 / self._rate
            else:
                time_base = Fraction(1, 90000)
        self.time_base = Fraction(time_base)
        if self.time_base <= 0:
            raise SinkError(f"time_base must be > 0, got {time_base}")
        if on_bad_pts not in ("nudge", "drop"):
            raise SinkError(f"on_bad_pts must be 'nudge' or 'drop', got {on_bad_pts!r}")
        self.on_bad_pts = on_bad_pts
        self.options = {**self._default_codec_options, **(options or {})}
        self.container_options = dict(container_options or {})
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.size: tuple[int, int] | None = None          # encoded (width, height)
        self.input_size: tuple[int, int] | None = None    # frames as given
        self.padding: tuple[int, int] = (0, 0)            # (right, bottom) pixels added
        self.frames_written = 0
        self.stats: dict[str, int] = {"written": 0, "pts_nudged": 0, "pts_dropped": 0}
        self._container = None
        self._stream = None
        self._last_ticks: int | None = None
        self._pts0: float | None = None
        self._closed = False
        self._write_error: Exception | None = None
        self._good_bytes = 0

    # ---------------------------------------------------------------- open
    def _open(self, width: int, height: int) -> None:
        import av

        ax, ay = self._align
        pw, ph = (-width) % ax, (-height) % ay
        self.input_size = (width, height)
        self.padding = (pw, ph)
        self.size = (width + pw, height + ph)
        claim(self.path)
        try:
            container = av.open(str(self.path), mode="w", options=self.container_options or None)
        except (av.FFmpegError, OSError, ValueError) as e:
            raise SinkError(f"cannot create video file {self.path}: {e}") from None
        try:
            stream = container.add_stream(self.codec, rate=self._rate)
            stream.width, stream.height = self.size
            stream.pix_fmt = self.pix_fmt
            stream.time_base = self.time_base
            stream.codec_context.time_base = self.time_base
            if self.options:
                stream.options = {k: str(v) for k, v in self.options.items()}
        except Exception as e:
            container.close()
            raise SinkError(f"cannot set up {self.codec} stream for {self.path}: {e}") from None
        self._container, self._stream = container, stream

    # ---------------------------------------------------------------- frames
    def _prepare(self, image: np.ndarray) -> np.ndarray:  # pragma: no cover - overridden
        return image

    def _ticks_for(self, pts_seconds: float | None) -> int | None:
        step = max(1, int(round(1 / (self._rate * self.time_base))))
        if pts_seconds is None:
            ticks = 0 if self._last_ticks is None else self._last_ticks + step
            return ticks
        pts_seconds = float(pts_seconds)
        if not math.isfinite(pts_seconds):
            raise SinkError(f"pts_seconds must be finite, got {pts_seconds}")
        if self._pts0 is None:
            next_ticks = 0 if self._last_ticks is None else self._last_ticks + step
            self._pts0 = pts_seconds - float(next_ticks * self.time_base)
        ticks = int(round((pts_seconds - self._pts0) / self.time_base))
        if self._last_ticks is not None and ticks <= self._last_ticks:
            if self.on_bad_pts == "drop":
                self.stats["pts_dropped"] += 1
                return None
            self.stats["pts_nudged"] += 1
            ticks = self._last_ticks + 1
        return ticks

    def write(self, image: np.ndarray, pts_seconds: float | None = None) -> bool:
        """Encode one frame. ``pts_seconds`` (monotonic) keeps source timing; else frame index.

        Returns False when the frame was dropped because of a non-increasing pts
        (``on_bad_pts='drop'``), True otherwise.
        """
        import av

        if self._closed:
            raise SinkError(f"{type(self).__name__} for {self.path} is already closed")
        img = self._prepare(np.asarray(image))
        h, w = img.shape[:2]
        if self._container is None:
            self._open(w, h)
        elif (w, h) != self.input_size:
            raise SinkError(f"frame size changed from {self.input_size[0]}x{self.input_size[1]} "
                            f"to {w}x{h} while writing {self.path}")
        ticks = self._ticks_for(pts_seconds)
        if ticks is None:
            return False
        pw, ph = self.padding
        if pw or ph:
            pad = [(0, ph), (0, pw)] + [(0, 0)] * (img.ndim - 2)
            img = np.pad(img, pad)
        frame = av.VideoFrame.from_ndarray(np.ascontiguousarray(img), format=self._input_format)
        frame.pts = ticks
        frame.time_base = self.time_base
        for packet in self._stream.encode(frame):
            self._mux(packet)
        self._last_ticks = ticks
        self.frames_written += 1
        self.stats["written"] = self.frames_written
        return True

    def _mux(self, packet) -> None:
        """Mux one packet; remember the file size after each success (a fragment boundary), so a failed write
        (a full disk) can be cut back to the last complete fragment."""
        try:
            self._container.mux(packet)
        except Exception as exc:
            self._write_error = exc
            raise
        try:
            self._good_bytes = os.stat(self.path).st_size
        except OSError:
            pass

    # ---------------------------------------------------------------- close
    def close(self) -> None:
        """Flush the encoder and finalise the file. Idempotent.

        After a failed write (a full disk) nothing more is written: the file is cut back to its last complete
        fragment, so what it holds plays cleanly (``stats['truncated_to_bytes']``), and ``frames_written`` becomes
        the number of frames the file really holds. The same when finalising fails (then this raises).
        """
        if self._closed:
            return
        self._closed = True
        container, stream = self._container, self._stream
        self._container = self._stream = None
        if container is None:
            return
        if self._write_error is not None:
            try:
                container.close()
            except Exception:
                pass
            self._cut_back()
            return
        err = None
        try:
            for packet in stream.encode(None):
                container.mux(packet)
        except Exception as e:  # still try to write the trailer
            err = e
        try:
            container.close()
        except Exception as e:
            err = err or e
        if err is not None:
            self._cut_back()
            raise SinkError(f"error while finalising {self.path}: {err}") from err

    def _cut_back(self) -> None:
        """Cut the file back to its last complete fragment and count the frames it holds."""
        try:
            with open(self.path, "r+b") as f:
                f.truncate(self._good_bytes)
        except OSError:
            pass
        self.stats["truncated_to_bytes"] = self._good_bytes
        self.frames_written = self.stats["written"] = _count_frames(self.path)

    @property
    def closed(self) -> bool:
        return self._closed

    def __enter__(self):
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is None:
            self.close()
        else:
            try:
                self.close()
            except Exception:
                pass  # do not mask the original exception

    def __del__(self):
        try:
            self.close()
        except Exception:
            pass


class VideoEncoder(_AvVideoEncoder):
    """Write RGB frames to an H.264 MP4 (default) through PyAV.

    Odd sizes are padded right/bottom with black to the chroma alignment of ``pix_fmt``
    (even for yuv420p); the padding is kept in the output and reported in ``padding``
    (right, bottom), ``size`` (encoded) and ``input_size``.

    ``write(image_rgb, pts_seconds=None)``: explicit pts are rebased so that the first
    written frame starts at 0 and converted to ``time_base`` ticks (default 1/90000, or
    1/fps for AVI); non-increasing pts are nudged by one tick (or dropped with
    ``on_bad_pts='drop'``) and counted in ``stats``.  Without pts, frames are spaced 1/fps.

    MP4/MOV files are fragmented (``FRAGMENTED_MP4``) with a keyframe every ``keyframe_s`` seconds, so what was
    written before a SIGKILL or a full disk plays; ``container_options={}`` writes a classic MP4 instead.
    ``close()`` flushes and finalises, idempotent; the context manager closes also when the block raises.
    """

    def __init__(self, path: str | os.PathLike, fps: float, codec: str = "libx264", crf: int = 18,
                 pix_fmt: str = "yuv420p", time_base: Fraction | None = None, *,
                 preset: str | None = "ultrafast", keyframe_s: float = 1.0, threads: int | None = None,
                 options: Mapping[str, Any] | None = None,
                 container_options: Mapping[str, Any] | None = None,
                 on_bad_pts: str = "nudge") -> None:
        opts: dict[str, Any] = {}
        if codec in ("libx264", "libx264rgb", "libx265"):
            if crf is not None:
                opts["crf"] = str(int(crf))
            if preset:
                opts["preset"] = preset
            rate = float(_fps_fraction(fps))
            opts["g"] = str(max(1, int(round(rate * keyframe_s))))
            opts["bf"] = "0"  # no B-frames: fragments start at pts 0 and each frame is muxed at once
            if threads:
                opts["threads"] = str(int(threads))
        opts.update(options or {})
        if container_options is None and Path(path).suffix.lower() in (".mp4", ".mov", ".m4v"):
            container_options = FRAGMENTED_MP4
        super().__init__(path, fps, codec, pix_fmt, time_base=time_base, options=opts,
                         container_options=container_options, on_bad_pts=on_bad_pts)
        self.crf = crf

    def _prepare(self, image: np.ndarray) -> np.ndarray:
        if image.ndim == 2:
            image = np.repeat(image[:, :, None], 3, axis=2)
        if image.ndim != 3 or image.shape[2] != 3:
            raise SinkError(f"expected an HxWx3 RGB image, got shape {image.shape}")
        if image.dtype != np.uint8:
            raise SinkError(f"expected a uint8 image, got {image.dtype}")
        return image


class MaskVideoEncoder(_AvVideoEncoder):
    """Lossless mask video: FFV1, gray8, in Matroska (``.mkv``); masks stored as 0/255.

    Any non-zero mask value is written as 255.  Read back with :func:`read_mask_video`. Matroska files are
    written in clusters of at most a second and flushed per packet (``STREAMABLE_MKV``), so they survive SIGKILL.
    """

    _input_format = "gray"

    def __init__(self, path: str | os.PathLike, fps: float, *, codec: str = "ffv1",
                 time_base: Fraction | None = None, on_bad_pts: str = "nudge") -> None:
        container_options = STREAMABLE_MKV if Path(path).suffix.lower() == ".mkv" else None
        super().__init__(path, fps, codec, "gray", time_base=time_base, options=None,
                         container_options=container_options, on_bad_pts=on_bad_pts)

    def _prepare(self, mask: np.ndarray) -> np.ndarray:
        if mask.ndim == 3 and mask.shape[2] == 1:
            mask = mask[:, :, 0]
        if mask.ndim != 2:
            raise SinkError(f"expected an HxW mask, got shape {mask.shape}")
        return np.where(mask > 0, np.uint8(255), np.uint8(0))


def _count_frames(path: Path) -> int:
    """Video frames (packets with data) a file holds, by demuxing it (0 when it does not open)."""
    import av

    try:
        with av.open(str(path)) as container:
            stream = container.streams.video[0]
            return sum(1 for packet in container.demux(stream) if packet.size)
    except Exception:  # noqa: BLE001 - an empty or unreadable file holds no frame
        return 0


def read_mask_video(path: str | os.PathLike) -> Iterator[np.ndarray]:
    """Yield the masks of a :class:`MaskVideoEncoder` file as uint8 HxW arrays (0/255)."""
    import av

    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        for frame in container.decode(stream):
            yield np.ascontiguousarray(frame.to_ndarray(format="gray"))


