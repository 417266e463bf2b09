"""``--source`` strings -> frame sources: :func:`open_source` (see ``ACCEPTED_SPECS``).

This module must stay free of torch and of the engine packages.
"""

from __future__ import annotations

import os
from pathlib import Path

from ..base import ACCEPTED_SPECS, FrameSource, SourceError
from .av_live import AvLiveSource
from .capture import CaptureSource
from .dicom import DicomSource, is_dicom_file
from .files import ImageFolderSource, VideoFileSource
from .phantom import PhantomSource
from .replay import RealtimeReplay

__all__ = ["open_source"]


_CAPTURE_ONLY = ("width", "height", "pixel_format")


def _file_kwargs(spec: str, kw: dict) -> dict:
    bad = [k for k in _CAPTURE_ONLY if kw.get(k) is not None]
    if bad:
        flags = "/".join("--" + k.replace("_", "-") for k in bad)
        raise SourceError(f"{flags} apply to capture devices only; {spec} is read at its own size (to pace a "
                          "recording like a capture card, use --realtime [--speed X])")
    return {k: v for k, v in kw.items() if k not in _CAPTURE_ONLY}


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
    if isinstance(spec, int):
        return CaptureSource(spec, **kw)
    if isinstance(spec, os.PathLike):
        spec = os.fspath(spec)
    if not isinstance(spec, str) or not spec.strip():
        raise SourceError(f"invalid source {spec!r}; accepted forms:\n{ACCEPTED_SPECS}")
    s = spec.strip()
    low = s.lower()
    for kind in ("v4l2", "lavfi"):
        if low.startswith(kind + ":"):
            return AvLiveSource(kind, s[len(kind) + 1:], **kw)
    if "!" in s:
        kw.pop("pixel_format", None)
        return CaptureSource(s, backend=kw.pop("backend", "gstreamer"), **kw)
    if low == "phantom" or low.startswith("phantom:"):
        n = low.split(":", 1)[1] if ":" in low else ""
        kw.pop("pixel_format", None)  # the phantom makes frames of any width/height
        if n:
            if not n.isdigit() or int(n) <= 0:
                raise SourceError(f"invalid phantom spec {spec!r}: use 'phantom' or 'phantom:N' "
                                  "with N a positive frame count")
            kw.setdefault("n_frames", int(n))
        return PhantomSource(**kw)
    if s.isdigit() or s.startswith("/dev/video"):
        fourcc = kw.pop("pixel_format", None)
        return CaptureSource(int(s) if s.isdigit() else s, fourcc=fourcc, **kw)
    p = Path(s).expanduser()
    if p.is_file():
        if is_dicom_file(p):
            return DicomSource(p, **_file_kwargs(s, kw))
        return VideoFileSource(p, **_file_kwargs(s, kw))
    if p.is_dir():
        return ImageFolderSource(p, **_file_kwargs(s, kw))
    raise SourceError(f"cannot open source {spec!r}: no such file or folder, and not a device, "
                      f"pipeline or phantom spec. Accepted forms:\n{ACCEPTED_SPECS}")
