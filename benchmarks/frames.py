"""The frames a benchmark segments: the EUS clip cropped to its imaging ROI, or a synthetic phantom clip."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from textsam_eus.common.screen import EUS_DB_CROP

from .machine import REPO

CLIP_DIR = REPO.parent / "shared" / "data" / "eus_clips"
DEFAULT_CLIP = CLIP_DIR / "cancer_v1.mp4"
SYNTH_SIZE = EUS_DB_CROP[2:]  # (width, height) of the eus800x600 ROI: synthetic frames get the same shape


def load_frames(clip: str, n: int, seed: int) -> tuple[list[np.ndarray], dict[str, Any]]:
    """Up to ``n`` RGB frames (ROI-cropped for 800x600 screens) and a description of where they came from."""
    if clip == "synthetic":
        return _synthetic_frames(n, seed)
    from textsam_eus.stream.roi import ROI
    from textsam_eus.stream.sources import VideoFileSource

    src = VideoFileSource(clip)
    roi = ROI.preset("eus800x600") if ROI.preset("eus800x600").fits(*src.size) else None
    frames = []
    with src:
        for f in src:
            frames.append(np.ascontiguousarray(roi.crop(f.image) if roi else f.image))
            if len(frames) >= n:
                break
    if not frames:
        raise RuntimeError(f"{clip}: no frame could be decoded")
    return frames, {"kind": "video", "desc": f"{Path(clip).name} ({src.size[0]}x{src.size[1]}, {src.codec}"
                    f"{', ROI eus800x600 ' + str(roi) if roi else ''})", "path": str(clip),
                    "roi": str(roi) if roi else None, "frames_available": src.n_frames or len(frames),
                    "size": list(src.size)}


def _synthetic_frames(n: int, seed: int) -> tuple[list[np.ndarray], dict[str, Any]]:
    from textsam_eus.common.phantom import PhantomClip, PhantomConfig

    w, h = SYNTH_SIZE
    pc = PhantomClip(n, seed, config=PhantomConfig(height=h, width=w))
    frames = [np.ascontiguousarray(pc.frame(i)[0]) for i in range(n)]
    return frames, {"kind": "synthetic", "desc": f"synthetic phantom clip {w}x{h} (seed {seed})", "roi": None,
                    "frames_available": n}
