"""Engine selection shared by the stream, demo and benchmark entry points (the CLI layer: it may export)."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from ..core.errors import OptionError
from ..core.hashing import file_sha256
from ..core.imports import require_onnxruntime


def cache_dir() -> Path:
    base = os.environ.get("TEXTSAM_EUS_CACHE") or os.path.join(
        os.environ.get("XDG_CACHE_HOME", os.path.join(os.path.expanduser("~"), ".cache")), "textsam-eus")
    return Path(base)


def bundle_for(checkpoint: str, fp16: bool = False, quiet: bool = False) -> Path:
    """An ONNX bundle for ``checkpoint`` (exported once, then reused from the cache)."""
    from ..model.checkpoint import resolve_checkpoint
    from ..model.bundle import BundleError, read_bundle

    path = resolve_checkpoint(checkpoint)
    full = file_sha256(path)
    digest = full[:16]
    folder = cache_dir() / "bundles" / f"{path.stem}-{digest}{'-fp16' if fp16 else ''}"
    try:
        read_bundle(folder)
        return folder
    except BundleError:
        pass
    from ..export.onnx_export import export_bundle
    from ..model.checkpoint import load_checkpoint

    model, _ = load_checkpoint(path)  # a damaged or foreign file fails here, before anything says "exporting"
    if not quiet:
        print(f"exporting {path.name} to ONNX (once) in {folder}", flush=True)
    export_bundle(model, folder, fp16=fp16, source={"checkpoint": str(path), "checkpoint_sha256": full})
    return folder


def make_engine(engine: str = "auto", checkpoint: Any = "demo", bundle: str | None = None, device: str | None = None,
                precision: str = "fp32", cuda_graphs: bool = False, iterations: int | None = None,
                refine_prompts: str = "box+centroid", quiet: bool = False, threads: int | None = None,
                resize: str | None = None, attention: str = "auto", server: str | None = None,
                server_timeout: float = 10.0):
    """The engine ``stream``, ``demo`` and the benchmarks run. ``checkpoint``: 'demo', a path, or (torch engine)
    a TextSam model already in memory; onnxruntime/tensorrt run ``bundle`` (onnxruntime: the checkpoint's cached
    export when no bundle is given). ``resize`` ("area"/"bilinear") overrides how the weights' frames are resized
    into the input; ``attention`` is the torch engine's encoder attention (auto, sdpa, reference). ``triton``: the
    client of the model server at ``server`` (grpc://HOST:PORT), checked at connect against ``bundle`` (its model
    id) or else ``checkpoint`` (its SHA-256)."""
    if engine == "triton" or server:
        engine_obj = triton_engine(server, checkpoint, bundle, iterations, refine_prompts, server_timeout, engine)
    else:
        engine_obj = _make_engine(engine, checkpoint, bundle, device, precision, cuda_graphs, iterations,
                                  refine_prompts, quiet, threads, attention)
    if resize is not None:
        engine_obj.resize = resize
    return engine_obj


def _make_engine(engine, checkpoint, bundle, device, precision, cuda_graphs, iterations, refine_prompts, quiet,
                 threads, attention):
    from ..engines import create_engine, fastest_engine

    if engine == "auto":
        engine = fastest_engine(bundle)
    common = {"iterations": iterations, "refine_prompts": refine_prompts}
    if engine == "torch":
        if bundle and not checkpoint:
            raise OptionError("the torch engine runs a checkpoint: pass --checkpoint (bundles are for onnxruntime "
                              "and tensorrt)")
        return create_engine("torch", model=checkpoint, device=device, precision=precision,
                             cuda_graphs=cuda_graphs, attention=attention, **common)
    if engine == "onnxruntime":
        require_onnxruntime()  # before exporting a bundle for it
        folder = bundle or bundle_for(checkpoint, fp16=precision == "fp16", quiet=quiet)
        return create_engine("onnxruntime", bundle=folder, device=device or "cpu", precision=precision,
                             threads=threads, **common)
    if engine == "tensorrt":
        if not bundle:
            raise OptionError("the tensorrt engine needs --bundle DIR with plans (textsam-eus export --tensorrt)")
        return create_engine("tensorrt", bundle=bundle, **common)
    return create_engine(engine)  # unknown: the error lists the engines


def triton_engine(server, checkpoint, bundle, iterations, refine_prompts, timeout_s, engine="triton"):
    """``--engine triton --server grpc://HOST:PORT``: the expected model is ``bundle``'s, else ``checkpoint``'s."""
    from ..engines import create_engine

    if engine != "triton":
        raise OptionError(f"--server is for --engine triton (got --engine {engine}); add --engine triton, or drop "
                          "--server to run the model here")
    if not server:
        raise OptionError("--engine triton needs --server grpc://HOST:PORT (a running 'textsam-eus serve')")
    if bundle:
        from ..model.bundle import model_id, read_bundle

        return create_engine("triton", server=server, expect_model_id=model_id(read_bundle(bundle)),
                             expect_what=f"bundle {bundle}", timeout_s=timeout_s, iterations=iterations,
                             refine_prompts=None if refine_prompts == "box+centroid" else refine_prompts)
    from ..model.checkpoint import resolve_checkpoint

    path = resolve_checkpoint(checkpoint or "demo")
    digest = file_sha256(path)
    return create_engine("triton", server=server, expect_checkpoint_sha256=digest,
                         expect_what=f"checkpoint {checkpoint or 'demo'} ({path.name})", timeout_s=timeout_s,
                         iterations=iterations,
                         refine_prompts=None if refine_prompts == "box+centroid" else refine_prompts)
