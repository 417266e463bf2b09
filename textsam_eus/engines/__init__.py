"""Inference engines behind one interface: ``create_engine(name, ...)`` -> ``Engine.segment(frame)``."""

from __future__ import annotations

import importlib
from pathlib import Path
from typing import Any

from ..core.errors import OptionError, UnavailableError
from ..core.imports import (TENSORRT_HINT, TRITONCLIENT_HINT, is_tensorrt_available, is_tritonclient_available,
                             require_onnxruntime)
from .base import Engine

ENGINES = {  # name -> (module, class)
    "torch": ("textsam_eus.engines.torch_engine", "TorchEngine"),
    "onnxruntime": ("textsam_eus.engines.ort_engine", "OrtEngine"),
    "tensorrt": ("textsam_eus.engines.trt_engine", "TrtEngine"),
    "triton": ("textsam_eus.engines.triton_engine", "TritonEngine"),  # the client of `textsam-eus serve`
}


def available_engines() -> dict[str, tuple[bool, str]]:
    """name -> (available, reason) on this machine."""
    import torch

    out = {"torch": (True, "ok")}
    try:
        ort = require_onnxruntime()
        out["onnxruntime"] = (True, "providers: " + ", ".join(ort.get_available_providers()))
    except UnavailableError as exc:
        out["onnxruntime"] = (False, str(exc))
    if not is_tensorrt_available():
        out["tensorrt"] = (False, TENSORRT_HINT)
    else:
        out["tensorrt"] = (torch.cuda.is_available(), "ok" if torch.cuda.is_available() else "no CUDA GPU visible")
    out["triton"] = (True, "client of a model server") if is_tritonclient_available() else (False, TRITONCLIENT_HINT)
    return out


def fastest_engine(bundle: str | Path | None = None) -> str:
    """TensorRT when it and plans exist, torch on a CUDA GPU, else ONNX Runtime (fastest on CPUs here)."""
    import torch

    avail = available_engines()
    if avail["tensorrt"][0] and bundle is not None:
        from ..model.bundle import read_bundle

        if read_bundle(bundle, verify=False).tensorrt:
            return "tensorrt"
    if torch.cuda.is_available():
        return "torch"
    return "onnxruntime" if avail["onnxruntime"][0] else "torch"


def create_engine(name: str, **kwargs: Any) -> Engine:
    """Make an engine by name; the error lists the backends available here when ``name`` is unknown or missing.

    torch: ``create_engine("torch", model=CKPT_OR_MODEL, device=..., precision=..., cuda_graphs=...)``
    onnxruntime / tensorrt: ``create_engine(name, bundle=DIR, ...)``
    triton: ``create_engine("triton", server="grpc://HOST:PORT", expect_model_id=... or expect_checkpoint_sha256=...)``
    """
    avail = available_engines()
    listing = ", ".join(f"{k} ({'available' if ok else 'unavailable: ' + why})" for k, (ok, why) in avail.items())
    if name not in ENGINES:
        raise OptionError(f"unknown engine {name!r}; engines: {listing}")
    ok, why = avail[name]
    if not ok:
        raise UnavailableError(f"engine {name!r} is not available here: {why}. Engines: {listing}")
    module, cls = ENGINES[name]
    return getattr(importlib.import_module(module), cls)(**kwargs)


__all__ = ["Engine", "ENGINES", "available_engines", "create_engine", "fastest_engine"]
