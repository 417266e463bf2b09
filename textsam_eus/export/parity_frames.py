"""The synthetic frames the export's parity checks run on when the caller gives none: ONNX vs torch
(:func:`~textsam_eus.export.onnx_export.check_parity`) and int8 vs fp32 (:func:`~textsam_eus.export.quantize.add_int8`).
Both import it; neither imports the other for it."""

from __future__ import annotations

import numpy as np

__all__ = ["parity_frames"]


def parity_frames(image_size: int, n: int = 3, seed: int = 0) -> list[np.ndarray]:
    """``n`` uint8 gray frames of varied sizes (the first ``image_size`` square, the others ``0.75 image_size`` by
    ``image_size + 16 i``: non-square): 8 x 8 blocks of seeded noise with a dark blob in the middle third."""
    rng = np.random.default_rng(seed)
    frames = []
    for i in range(n):
        h, w = (image_size, image_size) if i == 0 else (int(image_size * 0.75), image_size + 16 * i)
        base = rng.integers(0, 255, (h // 8 + 1, w // 8 + 1), dtype=np.uint8)
        img = np.kron(base, np.ones((8, 8), np.uint8))[:h, :w]
        img[h // 3: 2 * h // 3, w // 3: 2 * w // 3] //= 4  # a dark blob
        frames.append(np.ascontiguousarray(img))
    return frames
