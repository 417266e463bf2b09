"""Opening a run's engine (:meth:`~textsam_eus.runs.settings.RunSettings.open_engine`), for ``stream``, ``demo``,
``annotate``'s workers, ``serve`` and the benchmarks.

Side effect: onnxruntime without a bundle runs the checkpoint's ONNX export, **exported into the cache**
(:func:`cache_dir`, ``$TEXTSAM_EUS_CACHE`` or ``~/.cache/textsam-eus``) on first use and reused after
(:func:`cached_onnx_export`).
"""

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


def _cache_folder(path: Path, fp16: bool, full_sha256: str) -> Path:
    """Where the cache keeps the export of the checkpoint file ``path`` (named by its stem and SHA-256)."""
    return cache_dir() / "bundles" / f"{path.stem}-{full_sha256[:16]}{'-fp16' if fp16 else ''}"


def cached_onnx_export(checkpoint: str, fp16: bool = False, quiet: bool = False) -> Path:
    """The ONNX bundle of ``checkpoint`` in the cache: **exported there** on the first call (a few seconds; says so
    unless ``quiet``), then reused while the checkpoint's SHA-256 is the same."""
    from ..model.checkpoint import resolve_checkpoint
    from ..model.bundle import BundleError, read_bundle

    path = resolve_checkpoint(checkpoint)
    full = file_sha256(path)
    folder = _cache_folder(path, fp16, full)
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


def cached_serving_export(checkpoint: str, quiet: bool = False) -> Path:
    """:func:`cached_onnx_export` with the batched encoder the model server runs (**added to the cached bundle**
    once)."""
    from ..model.bundle import BATCH_ENCODER_ROLE, read_bundle

    folder = cached_onnx_export(checkpoint, quiet=quiet)
    if BATCH_ENCODER_ROLE not in read_bundle(folder).files:
        from ..export.batch_encoder import add_batch_encoder
        from ..model.checkpoint import load_checkpoint

        if not quiet:
            print(f"adding the batched encoder to {folder} (once)", flush=True)
        model, _ = load_checkpoint(checkpoint)
        add_batch_encoder(model, folder)
    return folder


def make_engine(engine: str = "auto", checkpoint: Any = "demo", bundle: str | None = None, device: str | None = None,
                precision: str = "fp32", cuda_graphs: bool = False, iterations: int | None = None,
                refine_prompts: str = "box+centroid", quiet: bool = False, threads: int | None = None,
                resize: str | None = None, attention: str = "auto", server: str | None = None,
                server_timeout: float = 10.0, batch_encoder: bool = False, export_to_cache: bool = True,
                server_reconnect: float = 10.0):
    """The engine of :meth:`RunSettings.open_engine <textsam_eus.runs.settings.RunSettings.open_engine>` (call
    that). ``checkpoint``: 'demo', a path, or (torch engine) a TextSam model already in memory; onnxruntime/tensorrt
    run ``bundle`` (onnxruntime: the checkpoint's export **made in the cache** when no bundle is given, unless
    ``export_to_cache`` is False). ``resize`` ("area"/"bilinear") overrides how the weights' frames are resized
    into the input; ``attention`` is the torch engine's encoder attention (auto, sdpa, reference). ``triton``: the
    client of the model server at ``server`` (grpc://HOST:PORT), checked at connect against ``bundle`` (its model
    id) or else ``checkpoint`` (its SHA-256)."""
    if engine == "triton" or server:
        engine_obj = triton_engine(server, checkpoint, bundle, iterations, refine_prompts, server_timeout, engine,
                                   reconnect_s=server_reconnect)
    else:
        engine_obj = _make_engine(engine, checkpoint, bundle, device, precision, cuda_graphs, iterations,
                                  refine_prompts, quiet, threads, attention, batch_encoder, export_to_cache)
    if resize is not None:
        engine_obj.resize = resize
    return engine_obj


def _make_engine(engine, checkpoint, bundle, device, precision, cuda_graphs, iterations, refine_prompts, quiet,
                 threads, attention, batch_encoder=False, export_to_cache=True):
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
        folder = bundle or _cached(checkpoint, precision == "fp16", quiet, export_to_cache)
        return create_engine("onnxruntime", bundle=folder, device=device or "cpu", precision=precision,
                             threads=threads, **({"batch_encoder": True} if batch_encoder else {}), **common)
    if engine == "tensorrt":
        if not bundle:
            raise OptionError("the tensorrt engine needs --bundle DIR with plans (textsam-eus export --tensorrt)")
        return create_engine("tensorrt", bundle=bundle, **common)
    return create_engine(engine)  # unknown: the error lists the engines


def _cached(checkpoint, fp16: bool, quiet: bool, export_to_cache: bool) -> Path:
    """The cached export onnxruntime runs without a bundle (made now unless ``export_to_cache`` is False)."""
    if not export_to_cache:
        from ..model.bundle import BundleError, read_bundle
        from ..model.checkpoint import resolve_checkpoint

        path = resolve_checkpoint(checkpoint)
        folder = _cache_folder(path, fp16, file_sha256(path))
        try:
            read_bundle(folder)
            return folder
        except BundleError:
            raise OptionError(f"no ONNX export of {checkpoint} in the cache ({folder}): pass --bundle DIR (made "
                              "with textsam-eus export), or allow the export into the cache") from None
    return cached_onnx_export(checkpoint, fp16=fp16, quiet=quiet)


def triton_engine(server, checkpoint, bundle, iterations, refine_prompts, timeout_s, engine="triton",
                  reconnect_s: float = 10.0):
    """``--engine triton --server grpc://HOST:PORT``: the expected model is ``bundle``'s, else ``checkpoint``'s."""
    from ..engines import create_engine

    if engine != "triton":
        raise OptionError(f"--server is for --engine triton (got --engine {engine}); add --engine triton, or drop "
                          "--server to run the model here")
    if not server:
        raise OptionError("--engine triton needs --server grpc://HOST:PORT (a running 'textsam-eus serve')")
    common = {"server": server, "timeout_s": timeout_s, "reconnect_s": reconnect_s, "iterations": iterations,
              # the server decides the refinement prompts; a client asks only for another than the default
              "refine_prompts": None if refine_prompts == "box+centroid" else refine_prompts}
    if bundle:
        from ..model.bundle import model_id, read_bundle

        return create_engine("triton", expect_model_id=model_id(read_bundle(bundle)), expect_what=f"bundle {bundle}",
                             **common)
    from ..model.checkpoint import resolve_checkpoint

    path = resolve_checkpoint(checkpoint or "demo")
    return create_engine("triton", expect_checkpoint_sha256=file_sha256(path),
                         expect_what=f"checkpoint {checkpoint or 'demo'} ({path.name})", **common)
