"""The model as a Triton server runs it: a batch of pre-processed frames in, each frame's final mask logits out.

One call of :meth:`ServedModel.infer` is one batch that Triton's dynamic batcher formed from the requests of
several clients (rooms). The encoder runs once on the whole batch (an engine with ``encodes_batches``, e.g. ONNX
Runtime with the bundle's ``encoder_batch.onnx``; other engines encode the frames one by one), then each frame's
text-only pass and refinement passes run as the local engines run them
(:meth:`~textsam_eus.model.refine.Segmenter.decode_and_refine`). Tensor names and shapes:
:mod:`textsam_eus.engines.triton_protocol`. No Triton import here: the inference function is plain NumPy.
"""

from __future__ import annotations

import threading
import time
from collections import Counter
from typing import Any

import numpy as np

from ..core.config import MAX_REFINE_ITERATIONS
from ..engines.base import Engine
from ..engines.triton_protocol import FIRST_POINTS, REFUSED


class ServedModel:
    """``engine`` (a local engine: onnxruntime, tensorrt, torch) behind the Triton model's inference function."""

    def __init__(self, engine: Engine, info: dict[str, Any]) -> None:
        self.engine = engine
        self.info = info  # what the info model answers (model_id, pre-/post-processing values, ...)
        self.seg = engine.segmenter
        self.pp = engine.segmenter.prepost
        self.size = engine.image_size
        self.lowres = int(info["lowres_size"])
        self.batched = bool(getattr(engine, "encodes_batches", False))
        self.batch_sizes: Counter = Counter()  # batch size -> batches run (also in Triton's metrics)
        self._lock = threading.Lock()  # one batch at a time through the engine (one model instance)

    # ------------------------------------------------------------------ helpers
    def _to_engine(self, x: np.ndarray):
        """Host NumPy -> what the engine's encoder takes (NumPy for the CPU path, torch on its device else)."""
        if self.pp.name == "numpy":
            return np.ascontiguousarray(x, dtype=np.float32)
        import torch

        return torch.from_numpy(np.ascontiguousarray(x, dtype=np.float32)).to(self.engine.device)

    def _first(self, rows: np.ndarray):
        """(8, 3) rows (x, y, label; NaN label = unused) -> the first pass's prompts, or None (text only)."""
        used = rows[np.isfinite(rows[:, 2])]
        if not len(used):
            return None
        coords = np.ascontiguousarray(used[None, :, :2], dtype=np.float32)
        labels = np.ascontiguousarray(used[None, :, 2], dtype=np.float32)
        return self.pp.prompts(coords, labels)

    def _encode(self, x: np.ndarray):
        if self.batched:
            return self.engine.encode(self._to_engine(x))
        return [self.engine.encode(self._to_engine(x[i:i + 1])) for i in range(len(x))]

    # ------------------------------------------------------------------ the inference function
    def infer(self, image: np.ndarray, resized_hw: np.ndarray, first_points: np.ndarray,
              iterations: np.ndarray) -> dict[str, np.ndarray]:
        """image (B, 3, S, S) float32, resized_hw (B, 2) int32, first_points (B, 8, 3) float32, iterations (B, 1)
        int32 -> low_res_masks (B, 1, h, h), iou / presence (B, 1) float32, passes / batch_size (B, 1) int32,
        server_ms (B, 4) float32 (see :mod:`~textsam_eus.engines.triton_protocol`)."""
        with self._lock:
            return self._infer(image, resized_hw, first_points, iterations)

    def _infer(self, image, resized_hw, first_points, iterations) -> dict[str, np.ndarray]:
        t0 = time.perf_counter()
        n = int(image.shape[0])
        emb = self._encode(image)
        t_enc = (time.perf_counter() - t0) * 1e3
        lows, ious, pres, passes = [], [], [], []
        dec0 = np.zeros(n, np.float32)
        dref = np.zeros(n, np.float32)
        for i in range(n):
            rh, rw = (int(v) for v in np.asarray(resized_hw[i]).reshape(-1)[:2])
            it = int(np.asarray(iterations[i]).reshape(-1)[0])
            if not (1 <= rh <= self.size and 1 <= rw <= self.size and np.asarray(first_points[i]).shape ==
                    (FIRST_POINTS, 3) and it <= MAX_REFINE_ITERATIONS):  # a bounded request: no client can hang it
                lows.append(None)
                ious.append(np.nan)
                pres.append(np.nan)
                passes.append(REFUSED)
                continue
            timings: dict[str, float] = {}
            e = emb[i:i + 1] if self.batched else emb[i]
            out = self.seg.decode_and_refine(e, (rh, rw), self._first(np.asarray(first_points[i], np.float32)),
                                             self.seg.iterations if it < 0 else it, timings)
            low = self.pp.to_numpy(out.lowres).astype(np.float32, copy=False)
            lows.append(low.reshape(1, *low.shape[-2:]))
            ious.append(out.iou)
            pres.append(out.presence)
            passes.append(out.passes)
            dec0[i] = timings.get("decode_0", 0.0)
            dref[i] = sum(v for k, v in timings.items() if k != "decode_0")
        refused = np.full((1, self.lowres, self.lowres), np.nan, np.float32)
        low_res = np.stack([lo if lo is not None else refused for lo in lows])
        total = (time.perf_counter() - t0) * 1e3
        self.batch_sizes[n] += 1
        server_ms = np.stack([np.full(n, t_enc, np.float32), dec0, dref, np.full(n, total, np.float32)], axis=1)
        return {"low_res_masks": low_res,
                "iou": np.asarray(ious, np.float32).reshape(n, 1),
                "presence": np.asarray(pres, np.float32).reshape(n, 1),
                "passes": np.asarray(passes, np.int32).reshape(n, 1),
                "batch_size": np.full((n, 1), n, np.int32),
                "server_ms": server_ms.astype(np.float32)}
