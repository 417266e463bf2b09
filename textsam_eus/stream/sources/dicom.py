"""DICOM input: a multi-frame (or single-frame) ultrasound file read frame by frame with pydicom.

* Frames come from :func:`pydicom.pixels.iter_pixels` on the file path: one frame is decoded at a time (native or
  encapsulated Pixel Data: JPEG baseline through whichever of pylibjpeg / Pillow is installed), so a long clip
  never sits in memory whole.
* RGB, YBR_FULL / YBR_FULL_422 (converted to RGB by pydicom), MONOCHROME2 and MONOCHROME1 (inverted), 8 or 16 bit.
* The frame rate is the file's: Frame Time, else Frame Time Vector, else Cine Rate, else Recommended Display Frame
  Rate (``fps=`` overrides it). Timestamps follow the Frame Time Vector where there is one.
* Pixel spacing (mm, row then column) from Pixel Spacing / Imager Pixel Spacing, else from the first ultrasound
  region (Physical Delta X/Y in cm); ``None`` when the file has none.
* The header (without Pixel Data) is kept in :attr:`DicomSource.dicom` for the DICOM writers. Patient and study
  identifiers are never put in a message, a log line or a record.

This module must stay free of torch and of the model / engine packages.
"""

from __future__ import annotations

import os
import time
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator

import numpy as np

from ..base import FrameSource, SourceError, _to_rgb_u8, wrapped_sources
from ..record import FrameRecord

__all__ = ["DicomSource", "DicomInfo", "is_dicom_file", "dicom_info_of"]

SUPPORTED_PHOTOMETRIC = ("MONOCHROME1", "MONOCHROME2", "RGB", "YBR_FULL", "YBR_FULL_422")


def is_dicom_file(path: str | os.PathLike) -> bool:
    """True for a DICOM Part 10 file (``DICM`` after the 128-byte preamble)."""
    try:
        with open(path, "rb") as f:
            f.seek(128)
            return f.read(4) == b"DICM"
    except OSError:
        return False


@dataclass
class DicomInfo:
    """What the DICOM writers need from the input: the header (no Pixel Data), frames, spacing."""

    path: Path
    header: Any  # pydicom Dataset without Pixel Data
    n_frames: int
    multi_frame: bool
    pixel_spacing: tuple[float, float] | None  # mm (row spacing, column spacing)
    burned_in_annotation: bool  # the file says its pixels carry burned-in text (possibly identifiers)


def dicom_info_of(source) -> DicomInfo | None:
    """The :class:`DicomInfo` of ``source`` or of the source it wraps (``--realtime`` replay), else ``None``."""
    return next((s.dicom for s in wrapped_sources(source) if isinstance(getattr(s, "dicom", None), DicomInfo)),
                None)


def _float(ds, keyword: str) -> float | None:
    try:
        v = float(ds.get(keyword)) if ds.get(keyword) not in (None, "") else None
    except (TypeError, ValueError):
        return None
    return v if v is not None and v > 0 and np.isfinite(v) else None


def _frame_rate(ds) -> tuple[float | None, list[float] | None]:
    """(fps, per-frame times in seconds or None) from the header."""
    frame_time = _float(ds, "FrameTime")  # ms
    vector = ds.get("FrameTimeVector")
    times = None
    if vector is not None:
        try:
            steps = [float(v) for v in (vector if isinstance(vector, (list, tuple)) or hasattr(vector, "__iter__")
                                        else [vector])]
        except (TypeError, ValueError):
            steps = []
        if len(steps) > 1 and all(np.isfinite(s) and s >= 0 for s in steps):
            times = list(np.cumsum([0.0] + steps[1:]) / 1000.0)
            mean = float(np.mean(steps[1:]))
            if frame_time is None and mean > 0:
                frame_time = mean
    if frame_time is not None:
        return 1000.0 / frame_time, times
    for kw in ("CineRate", "RecommendedDisplayFrameRate"):
        rate = _float(ds, kw)
        if rate is not None:
            return rate, times
    return None, times


def _pixel_spacing(ds) -> tuple[float, float] | None:
    for kw in ("PixelSpacing", "ImagerPixelSpacing"):
        v = ds.get(kw)
        if v is not None and len(v) == 2:
            try:
                row, col = float(v[0]), float(v[1])
            except (TypeError, ValueError):
                continue
            if row > 0 and col > 0:
                return row, col
    regions = ds.get("SequenceOfUltrasoundRegions")
    if regions:
        r = regions[0]
        if r.get("PhysicalUnitsXDirection") == 3 and r.get("PhysicalUnitsYDirection") == 3:  # 3 = cm
            dx, dy = _float(r, "PhysicalDeltaX"), _float(r, "PhysicalDeltaY")
            if dx and dy:
                return dy * 10.0, dx * 10.0
    return None


class DicomSource(FrameSource):
    """Frames of a DICOM image file (multi-frame ultrasound cine or a single frame), decoded one at a time.

    Raises:
        SourceError: at construction, for a file pydicom cannot read, one without pixel data, an unsupported
            photometric interpretation, or compressed pixel data no installed decoder handles (the message names
            the package to install).
    """

    def __init__(self, path: str | os.PathLike, *, fps: float | None = None) -> None:
        super().__init__()
        with warnings.catch_warnings(record=True) as caught:  # pydicom's, as one line each (before any thread)
            warnings.simplefilter("always")
            try:
                self._open(path, fps)
            finally:
                for w in caught:
                    text = (str(w.message).strip().splitlines() or [w.category.__name__])[0]
                    if f"pydicom: {text}" not in self.warnings:
                        self.warnings.append(f"pydicom: {text}")

    def _open(self, path: str | os.PathLike, fps: float | None) -> None:
        import pydicom
        from pydicom.errors import InvalidDicomError

        self.path = Path(path)
        self.name = str(self.path)
        self.is_live = False
        if not self.path.is_file():
            raise SourceError(f"DICOM file not found: {self.path}")
        try:
            ds = pydicom.dcmread(str(self.path), stop_before_pixels=True)
        except (InvalidDicomError, OSError, ValueError, EOFError) as e:
            raise SourceError(f"{self.path}: not a DICOM file pydicom can read ({type(e).__name__}); "
                              "check the file, or export it again from the scanner") from None
        rows, cols = int(ds.get("Rows") or 0), int(ds.get("Columns") or 0)
        if not rows or not cols:
            raise SourceError(f"{self.path}: a DICOM file without an image (no Rows/Columns: "
                              f"{ds.get('SOPClassUID', 'unknown SOP class')}); pass an ultrasound image file")
        photometric = str(ds.get("PhotometricInterpretation", ""))
        if photometric not in SUPPORTED_PHOTOMETRIC:
            raise SourceError(f"{self.path}: photometric interpretation {photometric or 'missing'!r} is not "
                              f"supported (supported: {', '.join(SUPPORTED_PHOTOMETRIC)}); convert the file to RGB "
                              "or MONOCHROME2")
        self.photometric = photometric
        self.bits_stored = int(ds.get("BitsStored") or ds.get("BitsAllocated") or 8)
        self.transfer_syntax = str(getattr(getattr(ds, "file_meta", None), "TransferSyntaxUID", "") or "")
        try:
            self.declared_frames = int(ds.get("NumberOfFrames")) if ds.get("NumberOfFrames") not in (None, "") else 1
        except (TypeError, ValueError):
            self.declared_frames = 1
        self.n_frames = max(1, self.declared_frames)
        self.size = (cols, rows)
        rate, self._times = _frame_rate(ds)
        if fps is not None:
            if not (fps > 0 and np.isfinite(fps)):
                raise SourceError(f"fps must be > 0, got {fps}")
            rate, self._times = float(fps), None
        if rate is None:
            rate = 15.0
            self.warnings.append("the DICOM file gives no frame rate (Frame Time, Cine Rate, Recommended Display "
                                 "Frame Rate): 15 fps assumed; pass --fps to set it")
        self.fps = float(rate)
        self.dicom = DicomInfo(path=self.path, header=ds, n_frames=self.n_frames, multi_frame="NumberOfFrames" in ds,
                               pixel_spacing=_pixel_spacing(ds),
                               burned_in_annotation=str(ds.get("BurnedInAnnotation", "")).upper() == "YES")
        self._pixels = None
        self._first = self._open_pixels()  # decode the first frame now: a missing codec fails before any work

    def _open_pixels(self) -> np.ndarray:
        from pydicom.pixels import iter_pixels

        self._pixels = iter_pixels(str(self.path))
        try:
            return next(self._pixels)
        except StopIteration:
            raise SourceError(f"{self.path}: the DICOM file has no pixel data; pass an image file") from None
        except (RuntimeError, NotImplementedError, ValueError, AttributeError, KeyError) as e:
            self._release()
            if "PixelData" in str(e) or "Pixel Data" in str(e):
                raise SourceError(f"{self.path}: the DICOM file has no pixel data; pass an image file") from None
            from pydicom.uid import UID

            if not UID(self.transfer_syntax).is_compressed:  # no codec is missing: the data is not there
                said = (f"NumberOfFrames is {self.declared_frames}" if self.declared_frames < 1 else
                        f"it declares {self.declared_frames} frame(s) of {self.size[0]}x{self.size[1]}")
                raise SourceError(f"{self.path}: the DICOM file has no frames to read ({said}, and its pixel data "
                                  "does not hold one whole frame); export the clip again from the scanner") from None
            raise SourceError(f"{self.path}: cannot decode its pixel data (transfer syntax {self.transfer_syntax}): "
                              f"{str(e).splitlines()[0][:200]}; for JPEG install pylibjpeg and pylibjpeg-libjpeg "
                              "(or Pillow)") from None

    def _rgb(self, arr: np.ndarray) -> np.ndarray:
        arr = np.asarray(arr)
        if arr.dtype != np.uint8 and np.issubdtype(arr.dtype, np.integer):  # 12/16-bit: scale BitsStored to 8 bit
            top = (1 << self.bits_stored) - 1
            arr = (np.clip(arr.astype(np.float32), 0, top) * (255.0 / top) + 0.5).astype(np.uint8)
        if self.photometric == "MONOCHROME1":
            arr = 255 - arr
        return _to_rgb_u8(arr, bgr=False)

    def _pts(self, index: int) -> float:
        if self._times is not None and index < len(self._times):
            return float(self._times[index])
        return index / self.fps

    def _ended_early(self, index: int, why: str) -> None:
        """Fewer frames than the file declares: recorded, so the run is not called complete."""
        self.ended_early = (f"only {index} of the {self.declared_frames} frames of {self.path.name} could be read "
                            f"({why}); the file is truncated or its NumberOfFrames is wrong")
        self.warnings.append(self.ended_early)

    def _frames(self) -> Iterator[FrameRecord]:
        index = 0
        pending, self._first = self._first, None
        while True:
            if pending is None:
                try:
                    pending = next(self._pixels)
                except StopIteration:
                    if index < self.declared_frames:
                        self._ended_early(index, "the pixel data ends there")
                    return
                except Exception as e:  # noqa: BLE001 - a damaged frame ends the file; what was read is kept
                    self.stats["decode_errors"] += 1
                    self._ended_early(index, f"frame {index + 1} cannot be decoded: {type(e).__name__}")
                    return
            img = self._rgb(pending)
            pending = None
            self.stats["decoded"] += 1
            yield FrameRecord(index=index, image=img, timestamp=time.monotonic(), pts=self._pts(index),
                              source=self.name)
            index += 1

    def _release(self) -> None:
        gen, self._pixels = self._pixels, None
        if gen is not None:
            try:
                gen.close()
            except Exception:  # noqa: BLE001
                pass
