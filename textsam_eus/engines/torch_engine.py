"""The torch backend: CPU or CUDA, fp32/fp16/bf16, optional CUDA-graph capture of encoder and decoders.

The model is made deployable first (prompt precomputed, LoRA merged, text tower dropped). With ``cuda_graphs`` the
encoder, the text-only decoder and the 3-prompt refinement decoder (centroid + box) are captured once on static
buffers and replayed per frame; other prompt counts run eagerly. ``attention`` picks the image encoder's attention:
``sdpa`` (fused ``scaled_dot_product_attention``, :mod:`textsam_eus.model.attention`), ``reference``
(segment-anything's matmul + softmax, bit-exact with the released code) or ``auto``
(:func:`~textsam_eus.model.attention.auto_attention`: sdpa on CUDA and on the CPU at 1024 px, else reference).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from ..core.errors import OptionError, UnavailableError
from ..model.textsam import TextSam, to_dtype
from .base import Engine

PRECISIONS = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}


def _load(model_or_checkpoint: TextSam | str | Path) -> TextSam:
    if isinstance(model_or_checkpoint, TextSam):
        return model_or_checkpoint
    from ..model.checkpoint import load_checkpoint

    return load_checkpoint(model_or_checkpoint)[0]


class _Graph:
    """A captured CUDA graph over static input/output buffers."""

    def __init__(self, fn, *example: torch.Tensor) -> None:
        self.inputs = [x.clone() for x in example]
        stream = torch.cuda.Stream()
        stream.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(stream), torch.inference_mode():
            for _ in range(2):  # warm up outside the graph (allocations, autotuning)
                fn(*self.inputs)
        torch.cuda.current_stream().wait_stream(stream)
        self.graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(self.graph), torch.inference_mode():
            self.outputs = fn(*self.inputs)

    def __call__(self, *xs: torch.Tensor):
        for buf, x in zip(self.inputs, xs):
            buf.copy_(x)
        self.graph.replay()
        return self.outputs


class TorchEngine(Engine):
    name = "torch"
    non_finite_fix = ("check the checkpoint (NaN/Inf weights, or a diverged training run): restore it or train "
                      "again")

    def __init__(self, model: TextSam | str | Path = "demo", *, device: str | torch.device | None = None,
                 precision: str = "fp32", cuda_graphs: bool = False, iterations: int | None = None,
                 refine_prompts: str = "box+centroid", attention: str = "auto") -> None:
        from ..model.attention import ATTENTION_IMPLS, auto_attention, set_encoder_attention

        if attention not in ("auto", *ATTENTION_IMPLS):
            raise ValueError(f"attention={attention!r} is invalid: choose one of {('auto', *ATTENTION_IMPLS)}")
        if precision not in PRECISIONS:
            raise OptionError(f"precision={precision!r} is invalid: choose one of {sorted(PRECISIONS)}")
        device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
        if device.type == "cuda" and not torch.cuda.is_available():
            raise UnavailableError("device 'cuda' asked for, but torch sees no CUDA GPU; use --device cpu")
        if precision == "fp16" and device.type == "cpu":
            raise OptionError("precision fp16 needs a CUDA device; on the CPU use fp32 or bf16")
        if cuda_graphs and device.type != "cuda":
            raise OptionError("cuda_graphs needs a CUDA device")
        base = _load(model)
        self.model = to_dtype(base.deployable().to(device), PRECISIONS[precision])
        cfg0 = self.model.cfg
        self.attention = auto_attention(device.type, cfg0.image_size) if attention == "auto" else attention
        set_encoder_attention(self.model.sam.image_encoder, self.attention)
        self.dtype = PRECISIONS[precision]
        self.precision = precision
        cfg = self.model.cfg
        super().__init__(image_size=cfg.image_size, pixel_mean=cfg.pixel_mean, pixel_std=cfg.pixel_std,
                         prompt_tokens=self.model.cached_prompt.float().cpu().numpy(), device=device,
                         iterations=cfg.refine_iterations if iterations is None else iterations,
                         refine_prompts=refine_prompts, threshold=cfg.mask_threshold, presence=cfg, resize=cfg.resize,
                         sync=torch.cuda.synchronize if device.type == "cuda" else None)
        self.graphs: dict[str, _Graph] = {}
        if cuda_graphs:
            self._capture()

    # ------------------------------------------------------------------ eager
    def _encode_eager(self, x: torch.Tensor) -> torch.Tensor:
        return self.model.encode_image(x.to(self.dtype))

    def _decode_eager(self, emb, tokens, coords=None, labels=None):
        sparse = tokens.to(self.dtype)  # (1, T, C): the text token(s) first
        if coords is not None:
            points = self.model.embed_points(coords.to(self.dtype), labels.to(self.dtype))
            sparse = torch.cat([sparse, points.to(self.dtype)], dim=1)
        low, iou = self.model.decode(emb, sparse)
        return low.float(), iou.float()

    # ------------------------------------------------------------------ graphs
    def _capture(self) -> None:
        cfg = self.model.cfg
        s = cfg.image_size
        x = torch.zeros(1, 3, s, s, device=self.device)
        self.graphs["encode"] = _Graph(self._encode_eager, x)
        emb = self.graphs["encode"].outputs
        tok = self.prompt_tokens
        self.graphs["text"] = _Graph(lambda e, t: self._decode_eager(e, t), emb, tok)
        coords = torch.full((1, 3, 2), s / 2, device=self.device)
        labels = torch.tensor([[1.0, 2.0, 3.0]], device=self.device)
        self.graphs["refine3"] = _Graph(lambda e, t, c_, l_: self._decode_eager(e, t, c_, l_), emb, tok, coords,
                                        labels)

    # ------------------------------------------------------------------ Engine hooks
    @torch.inference_mode()
    def encode(self, x: torch.Tensor) -> torch.Tensor:
        if "encode" in self.graphs:
            return self.graphs["encode"](x)
        return self._encode_eager(x)

    @torch.inference_mode()
    def decode(self, emb, tokens, coords, labels):
        if coords is None and "text" in self.graphs:
            return self.graphs["text"](emb, tokens)
        if coords is not None and coords.shape[1] == 3 and "refine3" in self.graphs:
            return self.graphs["refine3"](emb, tokens, coords.float(), labels.float())
        return self._decode_eager(emb, tokens, coords, labels)

    def info(self) -> dict[str, Any]:
        return {**super().info(), "precision": self.precision, "cuda_graphs": bool(self.graphs),
                "attention": self.attention, "preset": self.model.cfg.preset}
