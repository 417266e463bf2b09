"""Frame transforms shared by training, every inference engine and the streaming runner.

The model's input frame: the image is resized so its long side equals ``image_size`` (aspect kept), normalised
by the pixel mean/std and zero-padded bottom/right to ``image_size`` x ``image_size`` (as SAM does). Geometric
prompts live in that frame, in pixels. Masks come back at the caller's frame resolution.

Shapes: frame (H, W[, 1|3|4]) uint8 -> model input (1, 3, S, S) float; low-res logits (1, 1, h, w) ->
logits (H, W).
"""

from __future__ import annotations

import cv2
import numpy as np
import torch
import torch.nn.functional as F

from ..core.config import RESIZE_METHODS  # noqa: F401 (TextSamConfig.resize)
from ..core.pixels import COLOR_ORDERS, MIN_FRAME_SIDE, FrameError, to_rgb_uint8  # noqa: F401 (COLOR_ORDERS, FrameError: re-exported)


def resized_shape(height: int, width: int, long_side: int) -> tuple[int, int]:
    """(h, w) after resizing so that the long side equals ``long_side`` (SAM's rounding)."""
    scale = long_side / max(height, width)
    return int(height * scale + 0.5), int(width * scale + 0.5)


def to_rgb(frame: np.ndarray, color_order: str = "rgb") -> np.ndarray:
    """Accept grayscale (H, W) / (H, W, 1), 3-channel RGB or BGR, or RGBA/BGRA uint8; return (H, W, 3) RGB.

    Other pixel types are refused rather than guessed at: convert them first with :func:`.pixels.to_uint8`, the
    rule every reader of this package uses.
    """
    if not isinstance(frame, np.ndarray):
        raise FrameError(f"expected a numpy uint8 image, got {type(frame).__name__}")
    if color_order not in COLOR_ORDERS:
        raise FrameError(f"color_order={color_order!r} is invalid: must be one of {COLOR_ORDERS}")
    if frame.dtype != np.uint8:
        raise FrameError(f"expected a uint8 frame (0..255), got dtype {frame.dtype}; convert it with "
                         "textsam_eus.core.pixels.to_uint8 (16-bit: 8-bit content kept, else / 257; float: [0, 1] "
                         "x 255, else 0..255)")
    if not (frame.ndim == 2 or (frame.ndim == 3 and frame.shape[2] in (1, 3, 4))):
        raise FrameError(f"expected a frame of shape (H, W), (H, W, 1), (H, W, 3) or (H, W, 4); got {frame.shape}")
    if frame.shape[0] < MIN_FRAME_SIDE or frame.shape[1] < MIN_FRAME_SIDE:
        raise FrameError(f"frame of {frame.shape[1]}x{frame.shape[0]} pixels is too small (at least "
                         f"{MIN_FRAME_SIDE}x{MIN_FRAME_SIDE})")
    return to_rgb_uint8(frame, color_order)


def resize_image(rgb: np.ndarray, size_hw: tuple[int, int], method: str = "area") -> np.ndarray:
    """Resize an (H, W, 3) uint8 image to ``size_hw`` = (h, w), uint8.

    ``"area"``: OpenCV's INTER_AREA (what this package trains with); ``"bilinear"``: PIL's ``Image.BILINEAR``
    (antialiased when shrinking), as the authors' code resizes, for weights trained with it.
    """
    h, w = size_hw
    if (h, w) == tuple(rgb.shape[:2]):
        return rgb
    if method == "area":
        return cv2.resize(rgb, (w, h), interpolation=cv2.INTER_AREA)
    if method == "bilinear":
        from PIL import Image

        return np.array(Image.fromarray(np.ascontiguousarray(rgb)).resize((w, h), Image.BILINEAR))
    raise FrameError(f"resize={method!r} is invalid: must be one of {RESIZE_METHODS}")


def preprocess(frame_rgb: np.ndarray | torch.Tensor, image_size: int, pixel_mean, pixel_std,
               device: torch.device | str = "cpu", dtype: torch.dtype = torch.float32, resize: str = "area"
               ) -> tuple[torch.Tensor, tuple[int, int]]:
    """(H, W, 3) uint8 RGB -> normalised, padded (1, 3, S, S) tensor and the resized (h, w) inside it.

    ``resize="area"`` (the default): a numpy frame is resized on the host with OpenCV's area interpolation (what
    training uses; far faster than torch on a CPU); a torch tensor (e.g. already on the GPU) with antialiased
    bilinear interpolation. ``resize="bilinear"``: PIL's bilinear resize (:func:`resize_image`) for a numpy
    frame; a tensor is resized with torch's antialiased bilinear (PIL's filter) and rounded to whole grey levels
    as PIL's uint8 result is.
    """
    if resize not in RESIZE_METHODS:
        raise FrameError(f"resize={resize!r} is invalid: must be one of {RESIZE_METHODS}")
    h, w = resized_shape(frame_rgb.shape[0], frame_rgb.shape[1], image_size)
    if isinstance(frame_rgb, np.ndarray):
        frame_rgb = torch.from_numpy(np.ascontiguousarray(resize_image(frame_rgb, (h, w), resize)))
    x = frame_rgb.to(device=device, non_blocking=True).permute(2, 0, 1).unsqueeze(0).float()
    if (h, w) != tuple(x.shape[-2:]):
        x = F.interpolate(x, size=(h, w), mode="bilinear", align_corners=False, antialias=True)
        if resize == "bilinear":
            x = x.round().clamp(0, 255)
    mean = torch.tensor(pixel_mean, device=x.device).view(1, 3, 1, 1)
    std = torch.tensor(pixel_std, device=x.device).view(1, 3, 1, 1)
    x = (x - mean) / std
    x = F.pad(x, (0, image_size - w, 0, image_size - h))
    return x.to(dtype), (h, w)


def preprocess_mask(mask: np.ndarray | torch.Tensor, image_size: int) -> torch.Tensor:
    """(H, W) binary mask -> (1, 1, S, S) float in {0, 1}, resized and padded like the image (nearest)."""
    m = torch.from_numpy(np.ascontiguousarray(mask)) if isinstance(mask, np.ndarray) else mask
    m = (m > 0).float()[None, None]
    h, w = resized_shape(m.shape[-2], m.shape[-1], image_size)
    if (h, w) != tuple(m.shape[-2:]):
        m = F.interpolate(m, size=(h, w), mode="nearest-exact")
    return F.pad(m, (0, image_size - w, 0, image_size - h))


def lowres_to_input(lowres: torch.Tensor, image_size: int, resized: tuple[int, int]) -> torch.Tensor:
    """Low-res logits (1, 1, h, w) -> logits (h', w') over the resized frame inside the model input."""
    up = F.interpolate(lowres.float(), size=(image_size, image_size), mode="bilinear", align_corners=False)
    return up[0, 0, : resized[0], : resized[1]]


def input_to_frame(logits_in: torch.Tensor, frame_hw: tuple[int, int]) -> torch.Tensor:
    """Logits over the resized frame (h', w') -> logits at the frame's own resolution (H, W)."""
    if tuple(logits_in.shape[-2:]) == tuple(frame_hw):
        return logits_in
    return F.interpolate(logits_in[None, None], size=frame_hw, mode="bilinear", align_corners=False)[0, 0]


def box_and_centroid(mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor] | None:
    """Tight box (x0, y0, x1, y1) and centroid (x, y) of a binary (h, w) mask, in its pixels; None when empty."""
    ys, xs = torch.nonzero(mask, as_tuple=True)
    if ys.numel() == 0:
        return None
    box = torch.stack([xs.min(), ys.min(), xs.max(), ys.max()]).float()
    centroid = torch.stack([xs.float().mean(), ys.float().mean()])
    return box, centroid


def frame_to_input_coords(points: np.ndarray, frame_hw: tuple[int, int], resized: tuple[int, int]) -> np.ndarray:
    """Points (..., 2) as (x, y) in frame pixels -> the model's input frame."""
    pts = np.asarray(points, dtype=np.float32).copy()
    pts[..., 0] *= resized[1] / frame_hw[1]
    pts[..., 1] *= resized[0] / frame_hw[0]
    return pts


def input_to_frame_coords(points: np.ndarray, frame_hw: tuple[int, int], resized: tuple[int, int]) -> np.ndarray:
    pts = np.asarray(points, dtype=np.float32).copy()
    pts[..., 0] *= frame_hw[1] / resized[1]
    pts[..., 1] *= frame_hw[0] / resized[0]
    return pts
