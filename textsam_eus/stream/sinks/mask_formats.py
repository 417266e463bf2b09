"""``--masks png,video,nifti,dicom-seg,coco`` (comma-separated; ``none`` for no masks): parsing, and the sinks of the
research formats (NIfTI, DICOM SEG, COCO RLE), each one class in its own module.

This module must stay free of torch and of the model / engine packages.
"""

from __future__ import annotations

from pathlib import Path
from typing import Callable

from ..sources.dicom import dicom_info_of
from .encoders import SinkError
from .base import Sink

__all__ = ["MASK_FORMATS", "parse_mask_formats", "open_mask_format_sinks", "model_identity"]

MASK_FORMATS = ("png", "video", "nifti", "dicom-seg", "coco")
_ALIASES = {"dicom": "dicom-seg", "seg": "dicom-seg", "nii": "nifti", "mkv": "video"}


def parse_mask_formats(spec: str | None) -> tuple[str, ...]:
    """``"png,nifti"`` -> ``("png", "nifti")``; ``"none"`` or ``""`` -> ``()``. Raises :class:`SinkError`."""
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


def model_identity(engine) -> dict:
    """What the writers name as the algorithm when the caller gives no identity: the engine's name and preset."""
    info = engine.info() if hasattr(engine, "info") else {}
    preset = info.get("preset")
    return {"name": "TextSAM-EUS" + (f" {preset}" if preset else ""), "checkpoint": None, "sha256": None}


def open_mask_format_sinks(formats: tuple[str, ...], out: Path, *, fps: float | None, source, model: dict,
                           deidentify: bool, run_state: Callable[[], tuple[bool, str]]) -> list[Sink]:
    """The sinks for the NIfTI / DICOM SEG / COCO formats in ``formats`` (png and video are the pipeline's own)."""
    sinks: list[Sink] = []
    dicom = dicom_info_of(source)
    try:
        if "nifti" in formats:
            from .nifti import NiftiMaskSink

            sinks.append(NiftiMaskSink(out, fps=fps, pixel_spacing=dicom.pixel_spacing if dicom else None))
        if "dicom-seg" in formats:
            from .dicom_seg import DicomSegSink

            sinks.append(DicomSegSink(out, source=dicom, model=model, deidentify=deidentify))
        if "coco" in formats:
            from .coco import CocoMaskSink

            sinks.append(CocoMaskSink(out, source=getattr(source, "name", ""), run_state=run_state, model=model))
    except ImportError as exc:
        for s in sinks:
            s.close()
        raise SinkError(f"--masks {','.join(formats)} needs {exc.name}: pip install {exc.name}") from None
    return sinks
