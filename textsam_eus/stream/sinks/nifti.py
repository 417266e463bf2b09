"""``--masks nifti``: the run's masks as one NIfTI-1 volume, ``masks.nii.gz``, frames along the third axis.

Streaming, in flat memory: each mask is compressed as it comes into a gzip stream on disk
(``masks.nii.frames.gz.part``, flushed every frame). At close the final file is one gzip member holding the
NIfTI header (a :class:`nibabel.Nifti1Header` with the final frame count) followed by the frames' gzip member,
copied as they are: a multi-member gzip file, which gzip, nibabel, ITK and every zlib reader decompress as one
stream. Nothing is decompressed or held in memory, so an hour of masks closes as fast as a minute.

Layout: ``data[x, y, k]`` = the mask of frame ``k`` at column ``x``, row ``y`` (uint8 0/1), so in NumPy
``img.dataobj[:, :, k].T`` is the frame's mask as the PNGs have it. Voxel size: the DICOM source's pixel spacing in
mm when it has one, else 1; 1 along the frame axis. The affine is ``diag(-dx, -dy, 1)``: the identity direction in
ITK's LPS terms, so viewers show row 0 at the top as in the video. A frame-size change starts a new file
(``masks_seg001.nii.gz``, ...), as the mask video does.

This module must stay free of torch and of the model / engine packages.
"""

from __future__ import annotations

import gzip
import os
from pathlib import Path
from typing import Any

import numpy as np

from .encoders import SinkError
from ..manifest import claim
from ..record import FrameRecord
from .base import Sink

__all__ = ["NiftiMaskSink", "nifti_header"]

VOX_OFFSET = 352  # 348-byte header + the 4-byte extension flag (no extensions)


def nifti_header(width: int, height: int, frames: int, spacing: tuple[float, float] = (1.0, 1.0),
                 fps: float | None = None) -> bytes:
    """The 352 bytes that precede the voxels: a NIfTI-1 header for a uint8 ``width x height x frames`` volume."""
    import nibabel as nib

    dx, dy = float(spacing[0]), float(spacing[1])
    hdr = nib.Nifti1Header()
    hdr.set_data_dtype(np.uint8)
    hdr.set_data_shape((width, height, max(1, frames)))
    affine = np.diag([-dx, -dy, 1.0, 1.0])
    hdr.set_qform(affine, code="scanner")
    hdr.set_sform(affine, code="scanner")
    hdr.set_xyzt_units("mm", "sec")
    hdr["vox_offset"] = VOX_OFFSET
    hdr["scl_slope"], hdr["scl_inter"] = 1.0, 0.0
    hdr["cal_min"], hdr["cal_max"] = 0.0, 1.0
    text = "TextSAM-EUS tumour masks 0/1; axis 3 = frame" + (f"; {fps:.3f} fps" if fps else "")
    hdr["descrip"] = text.encode()[:79]
    hdr["intent_name"] = b"mask"
    return hdr.binaryblock + b"\0\0\0\0"


class _Volume:
    """One NIfTI file being written: frames of one size, compressed as they come."""

    def __init__(self, out: Path, rel: str, size: tuple[int, int], spacing, fps, level: int) -> None:
        self.out, self.rel, self.size, self.spacing, self.fps = out, rel, size, spacing, fps
        self.final = out / rel
        self.frames_path = out / (rel[: -len(".gz")] + ".frames.gz.part")
        self.frames = 0
        claim(self.final)
        claim(self.frames_path)
        try:
            self._gz = gzip.open(self.frames_path, "wb", compresslevel=level)
        except OSError as exc:
            raise SinkError(f"cannot create {self.frames_path}: {exc.strerror or exc}; check --out") from None

    def write(self, mask: np.ndarray) -> None:
        # uint8 0/1, x fastest: the C-order bytes of the (rows, cols) mask are NIfTI's column-major (x, y) slice
        self._gz.write(np.ascontiguousarray(mask > 0, dtype=np.uint8).tobytes())
        self._gz.flush()  # a sync point per frame: after a crash the frames so far decompress
        self.frames += 1

    def close(self) -> None:
        if self._gz.closed:
            return
        self._gz.close()
        if self.frames == 0:
            self.frames_path.unlink(missing_ok=True)
            return
        part = self.final.with_name(self.final.name + ".part")
        try:
            with open(part, "wb") as f:
                with gzip.GzipFile(fileobj=f, mode="wb", mtime=0) as head:
                    head.write(nifti_header(*self.size, self.frames, self.spacing, self.fps))
                with open(self.frames_path, "rb") as body:  # the frames' gzip member, as it is
                    while chunk := body.read(1 << 20):
                        f.write(chunk)
            os.replace(part, self.final)
        except BaseException:
            part.unlink(missing_ok=True)
            raise
        self.frames_path.unlink(missing_ok=True)


class NiftiMaskSink(Sink):
    """``masks.nii.gz`` (uint8 0/1, ``data[x, y, frame]``); a size change starts ``masks_seg001.nii.gz``."""

    def __init__(self, out: Path, fps: float | None = None, pixel_spacing: tuple[float, float] | None = None,
                 name: str = "masks", compresslevel: int = 1) -> None:
        import nibabel  # noqa: F401 - fail at the start, not at close, when it is missing

        self.out, self.name, self.fps, self.level = Path(out), name, fps, int(compresslevel)
        # DICOM gives (row spacing, column spacing); NIfTI wants (x = column, y = row)
        self.spacing = (pixel_spacing[1], pixel_spacing[0]) if pixel_spacing else (1.0, 1.0)
        self.volumes: list[_Volume] = []
        self._current: _Volume | None = None

    def write(self, record: FrameRecord) -> None:
        mask = record.mask
        size = (mask.shape[1], mask.shape[0])
        if self._current is None or size != self._current.size:
            if self._current is not None:
                self._current.close()
            n = len(self.volumes)
            rel = f"{self.name}.nii.gz" if n == 0 else f"{self.name}_seg{n:03d}.nii.gz"
            self._current = _Volume(self.out, rel, size, self.spacing, self.fps, self.level)
            self.volumes.append(self._current)
        self._current.write(mask)
        record.info.setdefault("outputs", {}).setdefault("mask", f"{self._current.rel}#{self._current.frames - 1}")

    def close(self) -> None:
        errors = []
        for v in self.volumes:
            try:
                v.close()
            except BaseException as exc:  # noqa: BLE001 - the others still close
                errors.append(exc)
        if errors:
            raise errors[0]

    def describe(self) -> dict[str, Any]:
        return {"nifti": [v.rel for v in self.volumes if v.frames], "nifti_frames": sum(v.frames for v in self.volumes),
                "nifti_voxel_mm": list(self.spacing)}
