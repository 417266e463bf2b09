"""The write stage's fan-out, opened in one place: one registry of sink factories keyed by the names users type.

``--masks png,video,nifti,dicom-seg,coco`` names entries of :data:`SINKS` (``none``: no masks); the overlay
(``overlay.mp4``, or ``overlays/*.png`` for image folders), the live view, the report's thumbnails and the window
are entries too, opened when the run's :class:`SinkRequest` asks for them. :func:`open_sinks` opens them in the
registry's order (the order they write and describe themselves in ``summary.json``), then the caller's extra sinks,
then ``outputs.csv`` (last: it maps every frame to what the others wrote), and the report sink, which the write
stage feeds after the others (it records their time). A new output is one class in this folder and one entry here.

This module must stay free of torch and of the model / engine packages.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

from ..sources.dicom import DicomInfo, dicom_info_of
from .base import Sink
from .encoders import SinkError
from .index import OutputIndexSink
from .png import MaskPngSink, OverlayPngSink
from .report import LatencyReport, ReportSink
from .video import MaskVideoSink, OverlayVideoSink

__all__ = ["SinkRequest", "SinkFactory", "SINKS", "MASK_FORMATS", "OpenSinks", "open_sinks", "parse_mask_formats"]


@dataclass
class SinkRequest:
    """What a run asks its write stage for: the output folder, the source (its rate, per-file stills, DICOM
    geometry) and the options that pick the sinks."""

    out: Path
    source: Any
    masks: tuple[str, ...] = ("png",)  # parsed --masks (parse_mask_formats)
    overlay: bool = True  # overlay.mp4, or overlays/<stem>.png for image folders
    html_report: bool = False  # the thumbnails of report.html
    show: bool = False  # the on-screen window
    live_view: Sink | None = None  # an already started browser live view (started before the output folder)
    model: dict | None = None  # the identity the DICOM / COCO writers name
    deidentify: bool = False
    run_state: Callable[[], tuple[bool, str]] | None = None  # (complete, stop reason), for the COCO file's info
    @property
    def dicom(self) -> DicomInfo | None:
        """The source's DICOM geometry (a DICOM file, or one a replay wraps), else None."""
        return dicom_info_of(self.source)

    @property
    def fps(self) -> float:
        return self.source.fps or 15.0

    @property
    def per_file(self) -> bool:
        return bool(getattr(self.source, "per_file_outputs", False))


@dataclass(frozen=True)
class SinkFactory:
    """One entry of the registry: ``wanted(request)`` says whether the run asks for it, ``open(request)`` opens
    it. ``mask_format``: a name ``--masks`` takes (its factory may import a module that is an extra)."""

    wanted: Callable[[SinkRequest], bool]
    open: Callable[[SinkRequest], Sink]
    mask_format: bool = False


def _mask(name: str, opener: Callable[[SinkRequest], Sink]) -> SinkFactory:
    return SinkFactory(lambda r: name in r.masks, opener, mask_format=True)


def _nifti(r: SinkRequest) -> Sink:
    from .nifti import NiftiMaskSink

    return NiftiMaskSink(r.out, fps=r.fps, pixel_spacing=r.dicom.pixel_spacing if r.dicom else None)


def _dicom_seg(r: SinkRequest) -> Sink:
    from .dicom_seg import DicomSegSink

    return DicomSegSink(r.out, source=r.dicom, model=r.model, deidentify=r.deidentify)


def _coco(r: SinkRequest) -> Sink:
    from .coco import CocoMaskSink

    return CocoMaskSink(r.out, source=getattr(r.source, "name", ""), run_state=r.run_state, model=r.model)


def _thumbnails(r: SinkRequest) -> Sink:
    from .report_html import ThumbnailSink

    return ThumbnailSink()


def _window(r: SinkRequest) -> Sink:
    from ..view.window import WindowSink

    return WindowSink()


SINKS: dict[str, SinkFactory] = {  # in the order they write and describe themselves
    "live-view": SinkFactory(lambda r: r.live_view is not None, lambda r: r.live_view),  # --view / --serve
    "overlay": SinkFactory(lambda r: r.overlay, lambda r: OverlayPngSink(r.out) if r.per_file  # overlays/*.png
                           else OverlayVideoSink(r.out, r.fps)),  # overlay.mp4
    "png": _mask("png", lambda r: MaskPngSink(r.out)),  # masks/*.png, 0/255
    "video": _mask("video", lambda r: MaskVideoSink(r.out, r.fps)),  # masks.mkv, lossless FFV1
    "nifti": _mask("nifti", _nifti),  # masks.nii.gz, one volume per frame size
    "dicom-seg": _mask("dicom-seg", _dicom_seg),  # a DICOM SEG per frame
    "coco": _mask("coco", _coco),  # masks_coco.json, COCO RLE
    "thumbnails": SinkFactory(lambda r: r.html_report, _thumbnails),  # the sample frames of report.html
    "window": SinkFactory(lambda r: r.show, _window),  # the on-screen window (--show)
}

MASK_FORMATS = tuple(name for name, f in SINKS.items() if f.mask_format)
_ALIASES = {"dicom": "dicom-seg", "seg": "dicom-seg", "nii": "nifti", "mkv": "video"}


def parse_mask_formats(spec: str | None) -> tuple[str, ...]:
    """``"png,nifti"`` -> ``("png", "nifti")``; ``"none"`` or ``""`` -> ``()``. Raises :class:`SinkError` naming the
    formats there are."""
    items = [s.strip().lower() for s in str(spec or "none").split(",") if s.strip()]
    out: list[str] = []
    for item in items:
        item = _ALIASES.get(item, item)
        if item == "none":
            if len(items) > 1:
                raise SinkError(f"--masks {spec!r}: 'none' cannot be combined with other formats; leave it out")
            return ()
        if item not in MASK_FORMATS:
            raise SinkError(f"--masks {spec!r}: unknown format {item!r}; choose from {', '.join(MASK_FORMATS)} "
                            "(comma-separated) or none")
        if item not in out:
            out.append(item)
    return tuple(out)


@dataclass
class OpenSinks:
    """The write stage's opened fan-out: ``sinks`` in writing order (``index`` last), by registry name in
    ``named``, and the report sink (fed after the others, with their time)."""

    sinks: list[Sink]
    index: OutputIndexSink
    report: ReportSink | None
    named: dict[str, Sink]

    def get(self, name: str) -> Sink | None:
        return self.named.get(name)


def open_sinks(request: SinkRequest, extra: list[Sink] | None = None,
               report: LatencyReport | None = None) -> OpenSinks:
    """Every sink ``request`` asks for, in the registry's order, then ``extra``, then ``outputs.csv``. When one
    fails to open, those already opened are closed (the live view's server thread too) and the error raised; a
    research format whose package is missing is a :class:`SinkError` naming the ``pip install``."""
    sinks: list[Sink] = []
    named: dict[str, Sink] = {}
    try:
        for name, factory in SINKS.items():
            if not factory.wanted(request):
                continue
            try:
                sink = factory.open(request)
            except ImportError as exc:
                if not factory.mask_format:
                    raise
                formats = ",".join(n for n in request.masks if n in MASK_FORMATS)
                raise SinkError(f"--masks {formats} needs {exc.name}: pip install {exc.name}") from None
            sinks.append(sink)
            named[name] = sink
        index = OutputIndexSink(request.out)
    except BaseException:
        for sink in sinks:
            sink.close()
        raise
    sinks += list(extra or [])
    sinks.append(index)
    return OpenSinks(sinks, index, ReportSink(report) if report is not None else None, named)
