"""Pre-/post-processing in OpenCV/NumPy (float32) for backends that take host arrays (ONNX Runtime on the CPU).

The same rules as :mod:`textsam_eus.model.transforms` (which the torch path runs), so the masks stay the same:

* frame -> input: resize so the long side is ``image_size`` with ``cv2.INTER_AREA`` on the uint8 frame (the very
  call ``transforms.preprocess`` makes for a NumPy frame), ``(x - mean) / std`` in float32, zero padding
  bottom/right to ``S x S``: bit-identical to the torch path.
* low-res logits -> input -> frame: bilinear with half-pixel centres and edge clamping (``cv2.INTER_LINEAR`` on
  float32 = torch ``F.interpolate(mode="bilinear", align_corners=False)`` without antialiasing); the two compute
  the weights in slightly different float precision, so a logit within ~1e-6 of the threshold can fall on the
  other side (see ``tests/test_cpu_prepost.py`` for the measured agreement).
* the tight box and the centroid of each refinement pass's mask (the centroid averaged exactly, in float64, then
  rounded to float32).

No torch op runs per frame on this path (``refine_prompts='box+5points'`` draws its 5 points with torch's seeded
generator so that every engine picks the same pixels; the default ``box+centroid`` does not), so torch's intra-op
threads never compete with ONNX Runtime's. :func:`select_prepost` is the one place that decides which path runs.
"""

from __future__ import annotations

import cv2
import numpy as np

from ..core.errors import OptionError
from ..model import transforms as T
from ..model.refine import REFINE_PROMPTS, TorchPrePost

PREPOSTS = ("auto", "numpy", "torch")


def mask_box_centroid(mask: np.ndarray) -> tuple[np.ndarray, np.ndarray] | None:
    """Tight box (x0, y0, x1, y1) and centroid (x, y) float32 of a (h, w) bool mask, in its pixels; None if empty."""
    cols = np.count_nonzero(mask, axis=0)  # pixels per column
    n = int(cols.sum())
    if n == 0:
        return None
    rows = np.count_nonzero(mask, axis=1)
    xs, ys = np.flatnonzero(cols), np.flatnonzero(rows)
    box = np.array([xs[0], ys[0], xs[-1], ys[-1]], dtype=np.float32)
    cx = float(np.dot(cols.astype(np.float64), np.arange(mask.shape[1], dtype=np.float64))) / n
    cy = float(np.dot(rows.astype(np.float64), np.arange(mask.shape[0], dtype=np.float64))) / n
    return box, np.array([cx, cy], dtype=np.float32)


def _five_points(mask: np.ndarray, seed: int) -> np.ndarray:
    """The 5 random mask pixels (x, y) of 'box+5points', drawn as ``refine.geometric_prompts`` draws them."""
    import torch  # the seeded generator only: the same pixels as the torch path (5 integers, no intra-op threads)

    ys, xs = np.nonzero(mask)
    idx = torch.randint(0, len(ys), (5,), generator=torch.Generator().manual_seed(seed)).numpy()
    return np.stack([xs[idx], ys[idx]], axis=1).astype(np.float32)


def numpy_geometric_prompts(box: np.ndarray, centroid: np.ndarray, mode: str = "box+centroid",
                            mask: np.ndarray | None = None, seed: int = 0
                            ) -> tuple[np.ndarray, np.ndarray] | None:
    """``refine.geometric_prompts`` on NumPy arrays: (coords (1, N, 2), labels (1, N)) float32, or None ('none')."""
    if mode not in REFINE_PROMPTS:
        raise OptionError(f"refine_prompts={mode!r} is invalid: choose one of {REFINE_PROMPTS}")
    if mode == "none":
        return None
    pts, labs = [], []
    if mode in ("point", "box+centroid"):
        pts.append(np.asarray(centroid, np.float32).reshape(1, 2))
        labs += [1]
    if mode == "box+5points":
        pts.append(_five_points(mask, seed))
        labs += [1] * 5
    if mode in ("box", "box+centroid", "box+5points"):
        pts.append(np.asarray(box, np.float32).reshape(2, 2))
        labs += [2, 3]
    return np.concatenate(pts)[None].astype(np.float32), np.array([labs], dtype=np.float32)


class NumpyPrePost:
    """:class:`~textsam_eus.model.refine.TorchPrePost`'s methods on host NumPy arrays (float32), no torch."""

    name = "numpy"

    def __init__(self, image_size: int, pixel_mean, pixel_std) -> None:
        self.image_size = image_size
        self.mean = np.asarray(pixel_mean, np.float32).reshape(1, 1, 3)
        self.std = np.asarray(pixel_std, np.float32).reshape(1, 1, 3)
        self.resize = "area"  # or "bilinear" (PIL's, TextSamConfig.resize): transforms.resize_image either way

    def preprocess(self, rgb: np.ndarray) -> tuple[np.ndarray, tuple[int, int]]:
        s = self.image_size
        h, w = T.resized_shape(rgb.shape[0], rgb.shape[1], s)
        rgb = T.resize_image(rgb, (h, w), self.resize)  # the frame itself when it already has that size
        x = np.zeros((1, 3, s, s), np.float32)
        x[0, :, :h, :w] = ((rgb.astype(np.float32) - self.mean) / self.std).transpose(2, 0, 1)
        return x, (h, w)

    def lowres_to_input(self, lowres, resized: tuple[int, int]) -> np.ndarray:
        low = np.asarray(lowres, dtype=np.float32).reshape(lowres.shape[-2:])
        s = self.image_size
        up = cv2.resize(low, (s, s), interpolation=cv2.INTER_LINEAR)
        return up[: resized[0], : resized[1]]

    def refine_prompt(self, logits: np.ndarray, threshold: float, mode: str, seed: int):
        mask_in = logits > threshold
        bc = mask_box_centroid(mask_in)
        if bc is None:
            return None
        return numpy_geometric_prompts(bc[0], bc[1], mode, mask_in, seed=seed)

    def frame_mask(self, logits: np.ndarray, frame_hw: tuple[int, int], threshold: float) -> np.ndarray:
        if tuple(logits.shape) != tuple(frame_hw):
            logits = cv2.resize(np.ascontiguousarray(logits), (frame_hw[1], frame_hw[0]),
                                interpolation=cv2.INTER_LINEAR)
        return logits > threshold

    @staticmethod
    def box_and_centroid(mask: np.ndarray) -> tuple[np.ndarray, np.ndarray] | None:
        return mask_box_centroid(mask)

    @staticmethod
    def prompts(coords: np.ndarray, labels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        return coords, labels

    @staticmethod
    def to_numpy(x) -> np.ndarray:
        return np.asarray(x)


def select_prepost(choice: str, *, host_arrays: bool, device, image_size: int, pixel_mean, pixel_std, dtype=None,
                   resize: str = "area"):
    """The pre-/post-processing a backend runs; the one place that decides.

    ``auto``: NumPy/OpenCV when the backend takes host arrays (``host_arrays``: ONNX Runtime) and runs on the CPU,
    else torch on the backend's device (the torch engine, CUDA). ``numpy`` / ``torch`` force one (``numpy`` only
    for a host-array backend on the CPU).
    """
    import torch

    if choice not in PREPOSTS:
        raise OptionError(f"prepost={choice!r} is invalid: choose one of {PREPOSTS}")
    on_cpu = torch.device(device).type == "cpu"
    if choice == "numpy" and not (host_arrays and on_cpu):
        raise OptionError("prepost='numpy' needs a backend that takes host arrays on the CPU (onnxruntime "
                         "--device cpu); use 'auto' or 'torch'")
    if choice == "numpy" or (choice == "auto" and host_arrays and on_cpu):
        pp = NumpyPrePost(image_size, pixel_mean, pixel_std)
    else:
        pp = TorchPrePost(image_size, pixel_mean, pixel_std, device, dtype or torch.float32)
    pp.resize = resize
    return pp
