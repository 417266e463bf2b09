"""TensorRT plans from the exported ONNX graphs (imported lazily: TensorRT exists only on NVIDIA machines).

* Precision comes from the graph: with ``fp16`` the ``*_fp16.onnx`` graphs (fp16 compute, LayerNorm and softmax
  in fp32) are built as strongly typed networks, which TensorRT 11 requires and TensorRT 10 supports with
  ``NetworkDefinitionCreationFlag.STRONGLY_TYPED``; the precision is then the same on both.
* Static shapes, except the number of refinement prompts (profile 1..8, optimised for 3).
* A timing cache file is reused between builds.
* Each plan gets a tag (``<plan>.json``: GPU name, compute capability, TensorRT version, fp16); loading a plan on
  another GPU or TensorRT version raises :class:`PlanMismatchError` before TensorRT is asked to deserialize it.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from ..core.imports import TensorRTUnavailable, require_tensorrt  # noqa: F401 (TensorRTUnavailable: re-exported)
from ..model.bundle import PlanMismatchError, check_plan_tag, read_bundle, write_bundle

POINT_PROFILE = ((1, 1, 2), (1, 3, 2), (1, 8, 2))


def current_tag(fp16: bool | None = None) -> dict[str, Any]:
    """The GPU and TensorRT version a plan built now would be tied to."""
    import torch

    trt = require_tensorrt()
    if not torch.cuda.is_available():
        raise TensorRTUnavailable("TensorRT plans need a CUDA GPU; none is visible")
    major, minor = torch.cuda.get_device_capability()
    tag = {"gpu": torch.cuda.get_device_name(), "compute_capability": f"{major}.{minor}", "tensorrt": trt.__version__}
    if fp16 is not None:
        tag["fp16"] = fp16
    return tag


#: Raise PlanMismatchError when a plan's tag differs from this machine's GPU or TensorRT version.
check_tag = check_plan_tag


def read_tag(plan: str | Path) -> dict[str, Any]:
    tag_file = Path(str(plan) + ".json")
    if not tag_file.is_file():
        raise PlanMismatchError(f"{plan} has no tag file {tag_file.name}; rebuild the plan with textsam-eus export")
    return json.loads(tag_file.read_text())


def build_plan(onnx_path: str | Path, plan_path: str | Path, *, fp16: bool, timing_cache: str | Path | None = None,
               workspace_gib: float = 4.0) -> dict[str, Any]:
    """Build one serialized engine from an ONNX file; returns its tag."""
    from .errors import ExportError

    trt = require_tensorrt()
    logger = trt.Logger(trt.Logger.WARNING)
    builder = trt.Builder(logger)
    flags = 0
    strongly = getattr(trt.NetworkDefinitionCreationFlag, "STRONGLY_TYPED", None)
    if strongly is not None:
        flags |= 1 << int(strongly)
    network = builder.create_network(flags)
    parser = trt.OnnxParser(network, logger)
    if not parser.parse(Path(onnx_path).read_bytes()):
        errors = "; ".join(str(parser.get_error(i)) for i in range(parser.num_errors))
        raise ExportError(f"TensorRT could not parse {onnx_path}: {errors}; re-export the bundle with this "
                          "textsam-eus, or use --engine onnxruntime")
    config = builder.create_builder_config()
    config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, int(workspace_gib * (1 << 30)))
    cache = None
    if timing_cache is not None:
        data = Path(timing_cache).read_bytes() if Path(timing_cache).is_file() else b""
        cache = config.create_timing_cache(data)
        config.set_timing_cache(cache, ignore_mismatch=False)
    dynamic = [network.get_input(i) for i in range(network.num_inputs) if -1 in tuple(network.get_input(i).shape)]
    if dynamic:
        profile = builder.create_optimization_profile()
        for inp in dynamic:
            lo, opt, hi = POINT_PROFILE
            if len(inp.shape) == 2:  # point_labels (1, N)
                lo, opt, hi = lo[:2], opt[:2], hi[:2]
            profile.set_shape(inp.name, lo, opt, hi)
        config.add_optimization_profile(profile)
    plan = builder.build_serialized_network(network, config)
    if plan is None:
        raise ExportError(f"TensorRT failed to build {onnx_path} (see the TensorRT log above); free GPU memory and "
                          "retry, or use --engine onnxruntime")
    Path(plan_path).write_bytes(bytes(plan))
    if cache is not None:
        Path(timing_cache).write_bytes(bytes(config.get_timing_cache().serialize()))
    tag = current_tag(fp16)
    Path(str(plan_path) + ".json").write_text(json.dumps(tag, indent=2))
    return tag


def build_bundle_plans(bundle_dir: str | Path, *, fp16: bool = True, timing_cache: str | Path | None = None) -> dict:
    """Build plans for the encoder and both decoders of a bundle and record them in its bundle.json."""
    bundle = read_bundle(bundle_dir)
    folder = Path(bundle_dir)
    timing_cache = timing_cache or folder / "timing.cache"
    suffix = "_fp16" if fp16 else ""
    section: dict[str, Any] = {}
    for role in ("encoder", "decoder_text", "decoder_refine"):
        src = bundle.path(role + suffix) if fp16 else bundle.path(role)
        plan = f"{role}{suffix}.plan"
        section[f"plan_{role}"] = plan
        section["tag"] = build_plan(src, folder / plan, fp16=fp16, timing_cache=timing_cache)
    section["fp16"] = fp16
    bundle.tensorrt = section
    bundle.versions["tensorrt"] = section["tag"]["tensorrt"]
    write_bundle(folder, bundle)
    return section
