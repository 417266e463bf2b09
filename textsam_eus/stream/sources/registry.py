"""``--source`` strings -> frame sources: one registry of source kinds, and :func:`open_source`.

Each :class:`SourceKind` names the form users type (``phantom:N``, ``v4l2:/dev/video0``, a file, ...), says whether
a string is of that form and opens it. :data:`SOURCES` is tried in order, the first kind that matches opens the
source (so ``phantom`` is never looked for as a file, and a GStreamer pipeline's ``!`` wins over a path). A string
no kind matches gets one error listing every accepted form (:data:`ACCEPTED_SPECS`, made from the registry). A new
kind of source is one class in this folder and one entry here.

This module must stay free of torch and of the engine packages.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from ..base import IMAGE_EXTENSIONS, FrameSource, SourceError
from .av_live import AvLiveSource
from .capture import CaptureSource
from .dicom import DicomSource, is_dicom_file
from .files import ImageFolderSource, VideoFileSource
from .phantom import PhantomSource
from .replay import RealtimeReplay

__all__ = ["SourceKind", "SOURCES", "ACCEPTED_SPECS", "source_kind", "open_source"]


@dataclass(frozen=True)
class SourceKind:
    """One form of ``--source``: ``matches(spec)`` on the stripped string, ``open(spec, kwargs)`` -> the source.

    ``form`` is its line in the list of accepted forms; ``listed`` its place there (the list reads files first,
    the order of :data:`SOURCES` is the order of matching)."""

    name: str
    matches: Callable[[str], bool]
    open: Callable[[str, dict], FrameSource]
    form: str
    listed: int


_CAPTURE_ONLY = ("width", "height", "pixel_format")


def _file_kwargs(spec: str, kw: dict) -> dict:
    bad = [k for k in _CAPTURE_ONLY if kw.get(k) is not None]
    if bad:
        flags = "/".join("--" + k.replace("_", "-") for k in bad)
        raise SourceError(f"{flags} apply to capture devices only; {spec} is read at its own size (to pace a "
                          "recording like a capture card, use --realtime [--speed X])")
    return {k: v for k, v in kw.items() if k not in _CAPTURE_ONLY}


def _prefixed(kind: str) -> Callable[[str], bool]:
    return lambda s: s.lower().startswith(kind + ":")


def _open_av_live(kind: str) -> Callable[[str, dict], FrameSource]:
    return lambda s, kw: AvLiveSource(kind, s[len(kind) + 1:], **kw)


def _open_gstreamer(s: str, kw: dict) -> FrameSource:
    kw.pop("pixel_format", None)
    return CaptureSource(s, backend=kw.pop("backend", "gstreamer"), **kw)


def _open_phantom(s: str, kw: dict) -> FrameSource:
    low = s.lower()
    n = low.split(":", 1)[1] if ":" in low else ""
    kw.pop("pixel_format", None)  # the phantom makes frames of any width/height
    if n:
        if not n.isdigit() or int(n) <= 0:
            raise SourceError(f"invalid phantom spec {s!r}: use 'phantom' or 'phantom:N' "
                              "with N a positive frame count")
        kw.setdefault("n_frames", int(n))
    return PhantomSource(**kw)


def _open_device(s: str | int, kw: dict) -> FrameSource:
    fourcc = kw.pop("pixel_format", None)
    if isinstance(s, str) and s.isdigit():
        s = int(s)
    return CaptureSource(s, fourcc=fourcc, **kw)


def _file(s: str) -> Path:
    return Path(s).expanduser()


SOURCES: tuple[SourceKind, ...] = (
    SourceKind("v4l2", _prefixed("v4l2"), _open_av_live("v4l2"),
               "'v4l2:/dev/video0' for a V4L2 capture card through PyAV/FFmpeg (kernel timestamps)", 5),
    SourceKind("lavfi", _prefixed("lavfi"), _open_av_live("lavfi"),
               "'lavfi:GRAPH' for an FFmpeg filter graph as a live source (e.g. 'lavfi:testsrc2=size=800x600:rate=60')",
               6),
    SourceKind("gstreamer", lambda s: "!" in s, _open_gstreamer,
               "a GStreamer pipeline string containing '!' (e.g. 'v4l2src ! videoconvert ! appsink')", 4),
    SourceKind("phantom", lambda s: s.lower() == "phantom" or s.lower().startswith("phantom:"), _open_phantom,
               "'phantom' or 'phantom:N' for N synthetic phantom frames", 7),
    SourceKind("device", lambda s: s.isdigit() or s.startswith("/dev/video"), _open_device,
               "a capture device index (e.g. 0) or a V4L2 device path (e.g. /dev/video0)", 3),
    SourceKind("dicom", lambda s: _file(s).is_file() and is_dicom_file(_file(s)),
               lambda s, kw: DicomSource(_file(s), **_file_kwargs(s, kw)),
               "a DICOM ultrasound file (multi-frame cine or one frame), or a folder of them", 1),
    SourceKind("video", lambda s: _file(s).is_file(), lambda s, kw: VideoFileSource(_file(s), **_file_kwargs(s, kw)),
               "a video file readable by FFmpeg (e.g. clip.mp4, clip.avi, clip.mkv, clip.ts)", 0),
    SourceKind("images", lambda s: _file(s).is_dir(), lambda s, kw: ImageFolderSource(_file(s), **_file_kwargs(s, kw)),
               f"a folder of images ({'/'.join(e[1:] for e in IMAGE_EXTENSIONS)})", 2),
)

ACCEPTED_SPECS = "\n".join(f"  - {k.form}" for k in sorted(SOURCES, key=lambda k: k.listed))


def source_kind(spec: str) -> SourceKind | None:
    """The registered kind that opens ``spec`` (a stripped ``--source`` string), or None."""
    return next((k for k in SOURCES if k.matches(spec)), None)


def open_source(spec: str | int | os.PathLike, *, realtime: bool = False, speed: float = 1.0,
                **kw) -> FrameSource:
    """Open a frame source from a command-line string (see ``ACCEPTED_SPECS``).

    Keyword arguments go to the chosen source's constructor (``width``/``height``/``pixel_format`` to capture
    sources only). ``realtime`` replays a file or folder live at its timestamps times ``speed``.
    """
    kw = {k: v for k, v in kw.items() if v is not None}
    source = _open(spec, kw)
    if realtime:
        if source.is_live:
            source.close()
            raise SourceError(f"--realtime replays files and folders; {spec} is already a live source")
        return RealtimeReplay(source, speed)
    return source


def _open(spec, kw: dict) -> FrameSource:
    if isinstance(spec, bool):
        raise SourceError(f"invalid source {spec!r}; accepted forms:\n{ACCEPTED_SPECS}")
    if isinstance(spec, int):  # a device index, as "0" is
        return _open_device(spec, kw)
    if isinstance(spec, os.PathLike):
        spec = os.fspath(spec)
    if not isinstance(spec, str) or not spec.strip():
        raise SourceError(f"invalid source {spec!r}; accepted forms:\n{ACCEPTED_SPECS}")
    kind = source_kind(spec.strip())
    if kind is None:
        raise SourceError(f"cannot open source {spec!r}: no such file or folder, and not a device, "
                          f"pipeline or phantom spec. Accepted forms:\n{ACCEPTED_SPECS}")
    return kind.open(spec.strip(), kw)
