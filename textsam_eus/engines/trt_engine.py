"""The TensorRT backend: plans from ``textsam-eus export --tensorrt``, torch CUDA tensors as I/O buffers.

TensorRT is imported here, lazily; without it (or without a GPU) the engine raises a clear error naming the fix.
A plan built for another GPU or TensorRT version is refused before deserialization.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch

from ..core.imports import TensorRTUnavailable, require_tensorrt
from ..model.bundle import Bundle, BundleError, check_plan_tag, read_bundle
from .base import Engine
from .graph_io import check_graph_io

class _TrtModule:
    """One deserialized plan with named I/O on torch CUDA tensors."""

    def __init__(self, trt, runtime, plan: Path) -> None:
        self.engine = runtime.deserialize_cuda_engine(plan.read_bytes())
        if self.engine is None:
            raise BundleError(f"TensorRT could not deserialize {plan}; rebuild it with textsam-eus export")
        self.context = self.engine.create_execution_context()
        self.trt = trt
        names = [self.engine.get_tensor_name(i) for i in range(self.engine.num_io_tensors)]
        self.inputs = [n for n in names if self.engine.get_tensor_mode(n) == trt.TensorIOMode.INPUT]
        self.outputs = [n for n in names if self.engine.get_tensor_mode(n) == trt.TensorIOMode.OUTPUT]

    def check_io(self, bundle: Bundle, role: str, plan: Path) -> None:
        """The plan's tensors (names, static sizes; -1 = dynamic) against bundle.json (:mod:`.graph_io`)."""
        shape = lambda n: tuple(self.engine.get_tensor_shape(n))  # noqa: E731
        check_graph_io(bundle, role, plan, [(n, shape(n), None) for n in self.inputs],
                       [(n, shape(n), None) for n in self.outputs])

    def __call__(self, **feeds: torch.Tensor) -> list[torch.Tensor]:
        stream = torch.cuda.current_stream()
        keep = []
        for name in self.inputs:
            t = feeds[name].contiguous().float()
            keep.append(t)
            self.context.set_input_shape(name, tuple(t.shape))
            self.context.set_tensor_address(name, t.data_ptr())
        outs = []
        for name in self.outputs:
            shape = tuple(self.context.get_tensor_shape(name))
            buf = torch.empty(shape, dtype=torch.float32, device="cuda")
            self.context.set_tensor_address(name, buf.data_ptr())
            outs.append(buf)
        if not self.context.execute_async_v3(stream.cuda_stream):
            raise RuntimeError("TensorRT execution failed")
        return outs


class TrtEngine(Engine):
    name = "tensorrt"

    def __init__(self, bundle: str | Path | Bundle, *, iterations: int | None = None,
                 refine_prompts: str = "box+centroid") -> None:
        trt = require_tensorrt()
        if not torch.cuda.is_available():
            raise TensorRTUnavailable("the tensorrt engine needs a CUDA GPU; none is visible")
        self.bundle = bundle if isinstance(bundle, Bundle) else read_bundle(bundle)
        section = self.bundle.tensorrt
        if not section:
            raise BundleError(f"bundle {self.bundle.folder} has no TensorRT plans; build them with "
                              "'textsam-eus export --checkpoint CKPT --out DIR --tensorrt'")
        major, minor = torch.cuda.get_device_capability()
        current = {"gpu": torch.cuda.get_device_name(), "compute_capability": f"{major}.{minor}",
                   "tensorrt": trt.__version__}
        folder = Path(self.bundle.folder)
        runtime = trt.Runtime(trt.Logger(trt.Logger.WARNING))
        self.modules = {}
        for role in ("encoder", "decoder_text", "decoder_refine"):
            plan = folder / section[f"plan_{role}"]
            tag_file = Path(str(plan) + ".json")
            tag = json.loads(tag_file.read_text()) if tag_file.is_file() else section.get("tag", {})
            check_plan_tag(plan, tag, current)
            self.modules[role] = _TrtModule(trt, runtime, plan)
            self.modules[role].check_io(self.bundle, role, plan)  # the plan fits bundle.json
        self.fp16 = bool(section.get("fp16"))
        b = self.bundle
        super().__init__(image_size=b.image_size, pixel_mean=b.pixel_mean, pixel_std=b.pixel_std,
                         prompt_tokens=b.prompt_tokens, device="cuda",
                         iterations=b.refine_iterations if iterations is None else iterations,
                         refine_prompts=refine_prompts, threshold=b.mask_threshold, presence=b,
                         sync=torch.cuda.synchronize, resize=b.resize)

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        return self.modules["encoder"](image=x)[0]

    def decode(self, emb, tokens, coords, labels):
        if coords is None:
            low, iou = self.modules["decoder_text"](image_embeddings=emb, text_tokens=tokens)
        else:
            low, iou = self.modules["decoder_refine"](image_embeddings=emb, text_tokens=tokens,
                                                      point_coords=coords, point_labels=labels)
        return low, iou

    def info(self) -> dict[str, Any]:
        return {**super().info(), "precision": "fp16" if self.fp16 else "fp32", "preset": self.bundle.preset}
