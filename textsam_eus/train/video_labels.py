"""Video-level labels and lesion-free phantom frames for training the presence decision.

A recording labelled *healthy* gives every frame as a negative (an empty mask). A recording labelled *tumour*
gives every frame as a weak positive: a tumour is on screen but its outline is unknown, so the pair's mask is
``None``; training then teaches only the presence score on it (the IoU head is pushed above a target, the mask
head gets no loss) and calibration counts it as a positive. Each frame is cut to the B-mode imaging sector of the
screen with everything outside it black (:class:`~textsam_eus.common.screen.LayoutTracker`), which is what
``stream --roi auto`` shows the model. Lesion-free phantom frames come from the phantom with ``p_lesion=0``.
Manifests without a mask column (``ultrasound_normal/manifest.csv``) need nothing here: every row is a negative.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from ..common.phantom import PhantomConfig, make_phantom_dataset
from ..common.screen import LayoutTracker
from ..core.imports import require_pyav
from .readers import DatasetError

__all__ = ["video_frames", "video_negatives", "video_positives", "phantom_negatives", "RECORDED_VIDEOS",
           "HELD_OUT_VIDEOS"]

#: the recordings ``train`` records in a checkpoint (its ``--*-video`` flags, by file name) and what each did for it
RECORDED_VIDEOS = {"negative_video": "trained on", "positive_video": "trained on",
                   "val_negative_video": "validation (epoch, threshold)",
                   "val_positive_video": "validation (epoch, threshold)",
                   "calibration_negative_video": "calibration (threshold)",
                   "test_negative_video": "held out (test)"}
#: of those, the ones that neither trained nor tuned it
HELD_OUT_VIDEOS = ("test_negative_video",)


def video_frames(path: str | Path, every: int = 1, max_frames: int | None = None, kind: str = "negative"
                 ) -> list[np.ndarray]:
    """Every ``every``-th frame of a recording (RGB uint8), cut to its imaging sector."""
    av = require_pyav()
    path = Path(path)
    if not path.is_file():
        raise DatasetError(f"{kind} video {path} does not exist")
    if every < 1:
        raise DatasetError(f"every={every} is invalid: use 1 for every frame, 2 for every other, ...")
    tracker = LayoutTracker()
    out: list[np.ndarray] = []
    try:
        with av.open(str(path)) as container:
            for i, vf in enumerate(container.decode(video=0)):
                image = np.ascontiguousarray(vf.to_ndarray(format="rgb24"))
                layout = tracker.update(image)  # every frame, so the tracker sees the whole recording
                if i % every or layout is None:
                    continue
                out.append(layout.crop(image))
                if max_frames and len(out) >= max_frames:
                    break
    except av.FFmpegError as exc:
        raise DatasetError(f"{kind} video {path} cannot be read ({type(exc).__name__}: {exc})") from None
    if not out:
        raise DatasetError(f"{kind} video {path}: no frame with an imaging sector was found")
    return out


def video_negatives(path: str | Path, every: int = 1, max_frames: int | None = None
                    ) -> list[tuple[np.ndarray, np.ndarray]]:
    """Frames of a lesion-free recording, each with an empty mask."""
    return [(f, np.zeros(f.shape[:2], np.uint8)) for f in video_frames(path, every, max_frames, "negative")]


def video_positives(path: str | Path, every: int = 1, max_frames: int | None = None
                    ) -> list[tuple[np.ndarray, None]]:
    """Frames of a recording that shows a tumour throughout, each with mask ``None`` (outline unknown)."""
    return [(f, None) for f in video_frames(path, every, max_frames, "positive")]


def phantom_negatives(n: int, seed: int, size: int) -> list[tuple[np.ndarray, np.ndarray]]:
    """``n`` lesion-free phantom frames (vessels and cysts, which are never tumour, included)."""
    return make_phantom_dataset(n, seed=seed, config=PhantomConfig(height=size, width=size, p_lesion=0.0))
