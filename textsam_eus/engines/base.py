"""One small interface for every backend: set the prompt once, ``segment(frame) -> SegmentResult``.

A backend implements ``encode(x)`` and ``decode(embeddings, tokens, coords, labels)`` on torch tensors (or, for a
backend with ``host_arrays = True`` on the CPU, on NumPy arrays: see :mod:`.cpu_prepost`); the pre-/post-processing
and the refinement logic are the shared :class:`~textsam_eus.model.refine.Segmenter`. A client of a model server
(``triton``) implements ``remote_infer`` instead: the server runs the encoder and the decoder passes.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from ..core.config import MAX_REFINE_ITERATIONS
from ..core.errors import OptionError, UserError
from ..model.refine import Segmenter, SegmentResult
from .cpu_prepost import select_prepost


class NonFiniteOutputError(UserError, RuntimeError):
    """The model gave NaN/Inf mask logits or IoU predictions: its weights are damaged (never a frame's fault: the
    pre-processing gives finite inputs)."""


def _finite(x) -> bool:
    return bool(np.isfinite(x).all()) if isinstance(x, np.ndarray) else bool(torch.isfinite(x).all())


class Engine:
    name = "base"
    host_arrays = False  # True: encode/decode take NumPy arrays when the NumPy pre-/post-processing runs
    # what to do when the model's outputs are not finite (the weights are damaged)
    non_finite_fix = "re-export the bundle ('textsam-eus export --checkpoint CKPT --out DIR')"
    remote_infer = None  # a model server's client: (x, resized, first, iterations, timings) -> Refined

    def __init__(self, *, image_size: int, pixel_mean, pixel_std, prompt_tokens, device: torch.device | str = "cpu",
                 iterations: int = 2, refine_prompts: str = "box+centroid", threshold: float = 0.0,
                 sync=None, presence: Any = None, resize: str = "area", prepost: str = "auto") -> None:
        self.device = torch.device(device)
        # tumour presence: threshold (None = off), show/hide frames, from the checkpoint config or bundle.json
        self.presence = {"threshold": getattr(presence, "presence_threshold", None),
                         "show_frames": getattr(presence, "presence_show_frames", 3),
                         "hide_frames": getattr(presence, "presence_hide_frames", 5)}
        self.image_size = image_size
        pp = select_prepost(prepost, host_arrays=self.host_arrays, device=self.device, image_size=image_size,
                            pixel_mean=pixel_mean, pixel_std=pixel_std, dtype=torch.float32, resize=resize)
        self.prepost = pp.name  # "numpy" or "torch": which pre-/post-processing runs
        self.set_prompt(prompt_tokens)
        self.segmenter = Segmenter(self.encode, self._decode, image_size=image_size, pixel_mean=pixel_mean,
                                   pixel_std=pixel_std, device=self.device, dtype=torch.float32,
                                   iterations=iterations, refine_prompts=refine_prompts, threshold=threshold,
                                   sync=sync, prepost=pp, infer=self.remote_infer)

    # ------------------------------------------------------------------ the interface
    def set_prompt(self, tokens) -> None:
        """The constant text prompt token(s), (T, C) or (1, T, C); set once, used by every decoder pass."""
        t = torch.as_tensor(np.asarray(tokens, dtype=np.float32))
        if t.ndim == 2:
            t = t.unsqueeze(0)
        if t.ndim != 3 or t.shape[0] != 1:
            raise ValueError(f"prompt tokens must be (T, C) or (1, T, C), got {tuple(t.shape)}")
        self.prompt_tokens = t.to(self.device)
        self.prompt_tokens_np = t.numpy()  # (1, T, C) float32 on the host, for host-array backends

    def segment(self, frame: np.ndarray, **kwargs) -> SegmentResult:
        """Segment one frame (grayscale, RGB, BGR with color_order='bgr', or RGBA uint8)."""
        return self.segmenter.segment(frame, **kwargs)

    @property
    def iterations(self) -> int:
        return self.segmenter.iterations

    @iterations.setter
    def iterations(self, value: int) -> None:
        if not 0 <= value <= MAX_REFINE_ITERATIONS:
            raise OptionError(f"iterations={value} is invalid: must be in [0, {MAX_REFINE_ITERATIONS}]")
        self.segmenter.iterations = value

    @property
    def resize(self) -> str:
        """How frames are resized into the model input: "area" or "bilinear" (the weights' own, or overridden)."""
        return self.segmenter.resize

    @resize.setter
    def resize(self, value: str) -> None:
        from ..model.transforms import RESIZE_METHODS

        if value not in RESIZE_METHODS:
            raise ValueError(f"resize={value!r} is invalid: choose one of {RESIZE_METHODS}")
        self.segmenter.resize = value

    def info(self) -> dict[str, Any]:
        return {"engine": self.name, "device": str(self.device), "image_size": self.image_size,
                "presence_threshold": self.presence["threshold"], "resize": self.resize,
                "prepost": self.prepost}

    # ------------------------------------------------------------------ backend hooks
    def encode(self, x: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def decode(self, emb, tokens, coords, labels) -> tuple[torch.Tensor, torch.Tensor]:
        raise NotImplementedError

    def _decode(self, emb, coords, labels):
        """``decode`` with the prompt token; NaN/Inf outputs are a one-line NonFiniteOutputError, never a frame
        with an empty mask and an empty presence score."""
        tokens = self.prompt_tokens_np if self.prepost == "numpy" else self.prompt_tokens
        low, iou = self.decode(emb, tokens, coords, labels)
        if not (_finite(iou) and _finite(low)):
            what = "mask logits" if _finite(iou) else "IoU predictions, i.e. presence scores,"
            raise NonFiniteOutputError(f"the {self.name} engine's model gives NaN/Inf {what} in the "
                                       f"{'text-only' if coords is None else 'refinement'} pass: its weights are "
                                       f"damaged or not finite; {self.non_finite_fix}")
        return low, iou

    def close(self) -> None:
        pass

    def __enter__(self) -> "Engine":
        return self

    def __exit__(self, *exc) -> None:
        self.close()
