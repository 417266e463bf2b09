"""Pixels: the one rule that turns an image array of any type into uint8 RGB, and the image files we read.

Training (:mod:`textsam_eus.train.readers`), the image-folder and capture sources of the stream and the phantom all
convert with :func:`to_uint8` / :func:`to_rgb_uint8`, so a file looks the same wherever it is read. The rule:

* ``uint8``: unchanged. ``bool``: ``False``/``True`` -> ``0``/``255``.
* Integer types (``uint16`` TIFF/PNG, ``int16``, ...): when every value lies in ``0..255`` the image is 8-bit
  content stored in a wider type (screen grabs exported as 16-bit TIFF) and the values are kept as they are.
  Otherwise the type's full range maps to ``0..255``: ``uint16`` is divided by 257 (``65535 -> 255``), rounded;
  negative values become 0. There is no per-image contrast stretch, so the frames of one video keep their
  relative brightness.
* Floating point: NaN and +-inf become 0, with a warning. When every value is at most 1.0 the image is taken as
  ``[0, 1]`` and multiplied by 255; otherwise it is taken as ``0..255``. Either way the values are rounded and
  clipped to ``0..255`` (negative values become 0).

Channels (:func:`to_rgb_uint8`): gray ``(H, W)`` / ``(H, W, 1)``, gray + alpha ``(H, W, 2)``, three channels, or
four (colour + alpha, alpha dropped); ``color_order`` says whether colour comes as OpenCV's BGR or as RGB.

Needs only NumPy: ``stream`` and ``common``, which stay free of torch, import this module.
"""

from __future__ import annotations

import warnings

import numpy as np

from .errors import UserError

__all__ = ["IMAGE_EXTENSIONS", "COLOR_ORDERS", "MIN_FRAME_SIDE", "FrameError", "to_uint8", "to_rgb_uint8"]

#: The smallest frame side the model takes (smaller stills of a folder are listed and skipped).
MIN_FRAME_SIDE = 8
#: The image files the dataset readers and the image-folder source accept (lower case).
IMAGE_EXTENSIONS: tuple[str, ...] = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff")
COLOR_ORDERS = ("rgb", "bgr")


class FrameError(UserError, ValueError):
    """A frame is not an image the model can take."""


def to_uint8(arr: np.ndarray) -> np.ndarray:
    """``arr`` with its pixel values converted to ``uint8`` by the module's rule (shape unchanged)."""
    a = np.asarray(arr)
    if a.dtype == np.uint8:
        return a
    if a.dtype == np.bool_:
        return a.astype(np.uint8) * 255
    if np.issubdtype(a.dtype, np.integer):
        if a.size == 0:
            return a.astype(np.uint8)
        if int(a.min()) >= 0 and int(a.max()) <= 255:  # 8-bit content in a wider type
            return a.astype(np.uint8)
        if a.dtype == np.uint16:
            return ((a.astype(np.uint32) + 128) // 257).astype(np.uint8)  # = round(a / 257)
        scaled = np.clip(a.astype(np.float64), 0, None) * (255.0 / float(np.iinfo(a.dtype).max))
        return np.clip(np.rint(scaled), 0, 255).astype(np.uint8)
    if np.issubdtype(a.dtype, np.floating):
        f = a.astype(np.float64 if a.dtype == np.float64 else np.float32)
        finite = np.isfinite(f)
        if not finite.all():
            warnings.warn(f"{int(f.size - np.count_nonzero(finite))} pixel values are NaN or infinite; they are "
                          "set to 0 (black)", RuntimeWarning, stacklevel=2)
            f = np.where(finite, f, 0)
        if f.size and float(f.max()) <= 1.0:
            f = f * 255.0
        return np.clip(np.rint(f), 0, 255).astype(np.uint8)
    raise FrameError(f"unsupported pixel type {a.dtype}: use an integer, float or bool image")


def to_rgb_uint8(img: np.ndarray, color_order: str = "bgr") -> np.ndarray:
    """Any image (see the module docstring) as C-contiguous ``(H, W, 3)`` uint8 RGB.

    ``color_order``: ``"bgr"`` for what OpenCV reads and decodes, ``"rgb"`` for PyAV, Pillow and our own frames.
    """
    if color_order not in COLOR_ORDERS:
        raise FrameError(f"color_order={color_order!r} is invalid: must be one of {COLOR_ORDERS}")
    if not isinstance(img, np.ndarray):
        raise FrameError(f"expected a numpy image, got {type(img).__name__}")
    if img.ndim == 3 and img.shape[2] in (1, 2):  # gray, gray + alpha
        img = img[:, :, 0]
    if img.ndim == 2:
        return np.ascontiguousarray(np.repeat(to_uint8(img)[:, :, None], 3, axis=2))
    if img.ndim == 3 and img.shape[2] in (3, 4):
        rgb = img[:, :, :3]
        if color_order == "bgr":
            rgb = rgb[:, :, ::-1]
        return np.ascontiguousarray(to_uint8(rgb))
    raise FrameError(f"unsupported image shape {img.shape}: expected gray (H, W), (H, W, 1), gray + alpha "
                     "(H, W, 2), colour (H, W, 3) or colour + alpha (H, W, 4)")
