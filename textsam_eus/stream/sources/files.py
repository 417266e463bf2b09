"""Recorded inputs as frame sources: :class:`VideoFileSource` (a video file, through PyAV) and
:class:`ImageFolderSource` (a folder of stills), and :func:`unique_stems` (the output names of input files).

This module must stay free of torch and of the engine packages (of ``model`` it imports only torch-free modules).
"""


from __future__ import annotations

import hashlib
import math
import os
import time
import unicodedata
from pathlib import Path
from typing import Iterator

import numpy as np

from ...model.imports import require_pyav
from ...model.pixels import MIN_FRAME_SIDE
from ..base import IMAGE_EXTENSIONS, FrameSource, SourceError, _natural_key, _to_rgb_u8, release_quietly
from ..record import FrameRecord

__all__ = ["VideoFileSource", "ImageFolderSource", "unique_stems"]

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
        av = require_pyav()
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
        if self.n_frames is None and stream.duration and self.fps:  # fragmented MP4 has no frame count: estimate
            self.n_frames = max(1, int(round(float(stream.duration * stream.time_base) * self.fps))) or None
        self.time_base = stream.time_base

    def _release(self) -> None:
        c, self._container = self._container, None
        release_quietly(c)

    def _emit(self, video_frames) -> Iterator[FrameRecord]:
        """Frames in decode order; ``stats['decoded']`` is the running count (and the next index)."""
        for vf in video_frames:
            if vf.is_corrupt:
                self.stats["corrupt_frames"] += 1
            frame = self._make(vf, self.stats["decoded"])
            self.stats["decoded"] += 1
            yield frame

    def _make(self, vf, index: int) -> FrameRecord:
        img = np.ascontiguousarray(vf.to_ndarray(format="rgb24"))
        ts = time.monotonic()
        pts = None
        if vf.pts is not None and not self._fps_override:
            t = vf.time
            pts = float(t) if t is not None else None
        if pts is None and self.fps:
            pts = index / self.fps
        return FrameRecord(index=index, image=img, timestamp=ts, pts=pts, source=self.name)

    def _frames(self) -> Iterator[FrameRecord]:
        import av

        container, stream = self._container, self._stream
        if container is None:
            return
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
            yield from self._emit(decoded)
        if not flushed:  # demux ended on an error: drain the decoder
            try:
                remaining = stream.codec_context.decode(None)
            except av.FFmpegError:
                self.stats["decode_errors"] += 1
                remaining = []
            yield from self._emit(remaining)


# --------------------------------------------------------------------------- image folders


def _name_key(name: str) -> str:
    """What makes two output names the same on some file system: case and Unicode normal form."""
    return unicodedata.normalize("NFC", name).casefold()


def _safe_stem(stem: str, max_bytes: int = 200) -> str:
    """``stem`` as a file or folder name: never empty, ``.`` or ``..``; at most ``max_bytes`` bytes (a long one is
    cut and ends with a hash of the whole, so it stays distinct)."""
    if not stem.strip("."):
        stem = "unnamed" + stem.replace(".", "_")
    raw = stem.encode("utf-8", "surrogateescape")
    if len(raw) > max_bytes:
        digest = hashlib.sha1(raw).hexdigest()[:8]
        stem = raw[:max_bytes - 9].decode("utf-8", "ignore") + "_" + digest
    return stem


def unique_stems(paths: list[Path]) -> dict[Path, str]:
    """Output stems for input files, unique by construction (also where case or the Unicode form is all that
    differs, as on macOS or Windows): the file's stem; ``stem_ext`` where two files share a stem (``clip.mp4`` and
    ``clip.mkv`` -> ``clip_mp4``, ``clip_mkv``); and where that is taken too (``clip_mp4.mp4`` keeps ``clip_mp4``)
    ``stem_ext_2``, ``_3``, ... Names are never empty, ``.`` or ``..``."""
    own = {p: _safe_stem(p.stem) for p in paths}
    counts: dict[str, int] = {}
    for name in own.values():
        counts[_name_key(name)] = counts.get(_name_key(name), 0) + 1
    wanted = {p: own[p] if counts[_name_key(own[p])] == 1 else _safe_stem(f"{p.stem}_{p.suffix.lstrip('.').lower()}")
              for p in paths}
    used: set[str] = set()
    out: dict[Path, str] = {}
    for p in sorted(paths, key=lambda q: (wanted[q] != own[q], str(q))):  # a file's own stem first
        name, n = wanted[p], 2
        while _name_key(name) in used:
            name, n = _safe_stem(f"{wanted[p]}_{n}"), n + 1
        used.add(_name_key(name))
        out[p] = name
    return {p: out[p] for p in paths}


class ImageFolderSource(FrameSource):
    """Images of a folder in natural sort order (``frame2`` before ``frame10``).

    Images are read with ``cv2.IMREAD_UNCHANGED``; gray, BGRA, 16-bit and float images are
    converted to uint8 RGB (NaN/inf pixels become 0, with a warning naming the file). Each record's ``index`` is
    the file's position in the sorted list, ``file`` its path and ``name`` its output stem (:func:`unique_stems`),
    so outputs are named after their inputs. Unreadable files and images smaller than the model takes (8x8) are
    skipped, listed in ``unreadable`` as ``(index, path)`` with the reason in ``skip_reasons[index]``, and warned
    about; unreadable ones are counted in ``decode_errors``. Images may have different sizes. ``pts`` is
    ``index / fps``.
    """

    per_file_outputs = True

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
        self.stems = unique_stems(self.files)
        self.fps = float(fps)
        self.is_live = False
        self.n_frames = len(self.files)
        self.unreadable: list[tuple[int, str]] = []
        self.skip_reasons: dict[int, str] = {}
        first = next((img for img in (self._load(p, warn=False) for p in self.files[:8])
                      if img is not None and min(img.shape[:2]) >= MIN_FRAME_SIDE), None)
        self.size = (0, 0) if first is None else (first.shape[1], first.shape[0])

    def _load(self, path: Path, warn: bool = True) -> np.ndarray | None:
        import cv2

        try:
            buf = np.fromfile(str(path), dtype=np.uint8)  # works with non-ASCII paths
            img = cv2.imdecode(buf, cv2.IMREAD_UNCHANGED) if buf.size else None
        except (OSError, cv2.error):
            img = None
        if img is None:
            return None
        if np.issubdtype(img.dtype, np.floating):
            bad = int(img.size - np.count_nonzero(np.isfinite(img)))
            if bad:  # the pixel rule's NaN -> 0, named here with the file (the rule's own warning has no name)
                img = np.where(np.isfinite(img), img, 0).astype(img.dtype)
                if warn:
                    self.warnings.append(f"{path.name}: {bad} pixel values are NaN or infinite; they are set to 0 "
                                         "(black)")
        return _to_rgb_u8(img, bgr=True)

    def _skip(self, index: int, path: Path, reason: str) -> None:
        self.unreadable.append((index, str(path)))
        self.skip_reasons[index] = reason
        self.warnings.append(f"{path.name}: {reason}: skipped")

    def _frames(self) -> Iterator[FrameRecord]:
        for index, path in enumerate(self.files):
            img = self._load(path)
            if img is None:
                self.stats["skipped_packets"] += 1
                self.stats["decode_errors"] += 1
                self.unreadable.append((index, str(path)))
                continue
            if min(img.shape[:2]) < MIN_FRAME_SIDE:
                self._skip(index, path, f"too small ({img.shape[1]}x{img.shape[0]} pixels; the model takes "
                                        f"{MIN_FRAME_SIDE}x{MIN_FRAME_SIDE} or more)")
                continue
            self.stats["decoded"] += 1
            yield FrameRecord(index=index, image=img, timestamp=time.monotonic(), pts=index / self.fps,
                              source=self.name, file=str(path), name=self.stems[path])
