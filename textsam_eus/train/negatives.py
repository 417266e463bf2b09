"""Lesion-free training and validation images: frames of healthy-pancreas screen recordings and phantom frames.

A video labelled healthy gives every frame as a negative (an empty mask). Each frame is cut to the B-mode imaging
sector of the screen with everything outside it black (:class:`~textsam_eus.common.screen.LayoutTracker`), which is
what ``stream --roi auto`` shows the model. Lesion-free phantom frames come from the phantom with ``p_lesion=0``.
Manifests without a mask column (``ultrasound_normal/manifest.csv``) need nothing here: every row is a negative.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from ..common.phantom import PhantomConfig, make_phantom_dataset
from ..common.screen import LayoutTracker
from .data import DatasetError

__all__ = ["video_negatives", "phantom_negatives"]


def video_negatives(path: str | Path, every: int = 1, max_frames: int | None = None) -> list[tuple[np.ndarray, np.ndarray]]:
    """Every ``every``-th frame of a lesion-free recording, cut to its imaging sector, with an empty mask."""
    import av

    path = Path(path)
    if not path.is_file():
        raise DatasetError(f"negative video {path} does not exist")
    if every < 1:
        raise DatasetError(f"every={every} is invalid: use 1 for every frame, 2 for every other, ...")
    tracker = LayoutTracker()
    out: list[tuple[np.ndarray, np.ndarray]] = []
    try:
        with av.open(str(path)) as container:
            for i, vf in enumerate(container.decode(video=0)):
                image = np.ascontiguousarray(vf.to_ndarray(format="rgb24"))
                layout = tracker.update(image)  # every frame, so the tracker sees the whole recording
                if i % every or layout is None:
                    continue
                crop = layout.crop(image)
                out.append((crop, np.zeros(crop.shape[:2], np.uint8)))
                if max_frames and len(out) >= max_frames:
                    break
    except av.FFmpegError as exc:
        raise DatasetError(f"negative video {path} cannot be read ({type(exc).__name__}: {exc})") from None
    if not out:
        raise DatasetError(f"negative video {path}: no frame with an imaging sector was found")
    return out


def phantom_negatives(n: int, seed: int, size: int) -> list[tuple[np.ndarray, np.ndarray]]:
    """``n`` lesion-free phantom frames (vessels and cysts, which are never tumour, included)."""
    return make_phantom_dataset(n, seed=seed, config=PhantomConfig(height=size, width=size, p_lesion=0.0))
