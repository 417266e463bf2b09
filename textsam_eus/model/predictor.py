"""``TextSamPredictor``: the torch model behind the shared :class:`~textsam_eus.model.refine.Segmenter`.

Encode once per frame (``set_image``), query the small decoder many times (``predict``), as SAM's
``SamPredictor`` does. The text token is computed once (``precompute_prompt``) and reused for every pass.
"""

from __future__ import annotations

import numpy as np
import torch

from .refine import Segmenter, SegmentResult
from .textsam import TextSam


class TextSamPredictor:
    def __init__(self, model: TextSam, *, iterations: int | None = None, refine_prompts: str = "box+centroid",
                 device: torch.device | str | None = None, dtype: torch.dtype = torch.float32) -> None:
        self.model = model.eval()
        self.device = torch.device(device) if device is not None else next(model.parameters()).device
        self.dtype = dtype
        self.model.to(self.device, dtype)
        if not model.prompt_cached:
            model.precompute_prompt()
        cfg = model.cfg
        sync = torch.cuda.synchronize if self.device.type == "cuda" else None
        self.segmenter = Segmenter(
            self.encode, self.decode, image_size=cfg.image_size, pixel_mean=cfg.pixel_mean,
            pixel_std=cfg.pixel_std, device=self.device, dtype=dtype,
            iterations=cfg.refine_iterations if iterations is None else iterations,
            refine_prompts=refine_prompts, threshold=cfg.mask_threshold, sync=sync, resize=cfg.resize)
        self._embeddings: torch.Tensor | None = None
        self._frame: np.ndarray | None = None

    # backend functions used by the Segmenter
    def encode(self, x: torch.Tensor) -> torch.Tensor:
        return self.model.encode_image(x)

    def decode(self, emb: torch.Tensor, coords: torch.Tensor | None, labels: torch.Tensor | None):
        if coords is not None:
            coords, labels = coords.to(self.dtype), labels.to(self.dtype)
        sparse = self.model.sparse_prompts(self.model.prompt_token().to(self.dtype), coords, labels)
        return self.model.decode(emb, sparse)

    def segment(self, frame: np.ndarray, **kwargs) -> SegmentResult:
        """Encode ``frame`` once, decode text-only, refine (see ``Segmenter.segment`` for the prompt options)."""
        return self.segmenter.segment(frame, **kwargs)

    # SamPredictor-style API: embeddings cached between queries
    def set_image(self, frame: np.ndarray, color_order: str = "rgb") -> None:
        self._frame, self._color_order, self._embeddings = frame, color_order, None

    def _cached_encode(self, x: torch.Tensor) -> torch.Tensor:
        if self._embeddings is None:
            self._embeddings = self.model.encode_image(x)
        return self._embeddings

    @torch.inference_mode()
    def predict(self, *, iterations: int | None = None, points=None, point_labels=None, box=None) -> SegmentResult:
        """Segment the image given to ``set_image``; the encoder runs only for the first query."""
        if self._frame is None:
            raise RuntimeError("call set_image(frame) before predict()")
        return self.segmenter.segment(self._frame, color_order=self._color_order, iterations=iterations,
                                      points=points, point_labels=point_labels, box=box, encode=self._cached_encode)


class SamBaselinePredictor:
    """Zero-shot SAM/MedSAM (no LoRA, no text token) behind the same Segmenter: the paper's baselines."""

    def __init__(self, sam: torch.nn.Module, cfg, device: torch.device | str = "cpu") -> None:
        from .textsam import decode_single_mask, embed_points

        self.sam = sam.eval().to(device)
        self.device = torch.device(device)

        def decode(emb, coords, labels):
            if coords is None:
                raise ValueError("zero-shot SAM needs a point or box prompt")
            return decode_single_mask(self.sam, emb, embed_points(self.sam.prompt_encoder, coords, labels))

        self.segmenter = Segmenter(self.sam.image_encoder, decode, image_size=cfg.image_size,
                                   pixel_mean=cfg.pixel_mean, pixel_std=cfg.pixel_std, device=self.device,
                                   iterations=0, threshold=cfg.mask_threshold, resize=cfg.resize)

    def segment(self, frame: np.ndarray, **kwargs) -> SegmentResult:
        return self.segmenter.segment(frame, **kwargs)
