"""``textsam-eus serve``: the model on NVIDIA Triton Inference Server (PyTriton), for ``stream --engine triton``.

Runs in the server environment (PyTriton needs numpy < 2; docs/serving.md)::

    python3 -m venv --system-site-packages .venv-serve && .venv-serve/bin/pip install -e '.[cpu,serve]'
    .venv-serve/bin/textsam-eus serve --checkpoint demo          # gRPC 8001, HTTP 8000, metrics 8002 on 127.0.0.1

(Not the live view of ``stream --serve``, which serves one run's overlay to a browser.)
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from ..core.hashing import file_sha256
from ..core.errors import OptionError
from ..runs.settings import default


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--checkpoint", default=None,
                   help="checkpoint to serve, or 'demo' (the default without --bundle); exported to ONNX once, with "
                        "the batched encoder, into the cache")
    p.add_argument("--bundle", default=None,
                   help="deployment bundle to serve (made with 'textsam-eus export ... --serving', which adds the "
                        "batched encoder)")
    p.add_argument("--engine", choices=["onnxruntime", "tensorrt", "torch"], default="onnxruntime",
                   help="the server's engine (onnxruntime runs the whole batch through the encoder; tensorrt and "
                        "torch encode a batch's frames one by one)")
    p.add_argument("--device", default=None, help="cpu or cuda (onnxruntime: cpu unless given)")
    p.add_argument("--threads", type=int, default=None, help="CPU threads for onnxruntime")
    p.add_argument("--iterations", type=int, default=None, help="refinement passes (default: the model's)")
    p.add_argument("--refine-prompts", default=default("refine_prompts"),
                   help="the prompts each refinement pass takes from the previous mask (default: %(default)s)")
    p.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1: this machine only)")
    p.add_argument("--grpc-port", type=int, default=8001, help="gRPC port: clients use --server grpc://HOST:PORT")
    p.add_argument("--http-port", type=int, default=8000, help="HTTP port (health: /v2/health/ready)")
    p.add_argument("--metrics-port", type=int, default=8002, help="Prometheus metrics port (/metrics)")
    p.add_argument("--max-batch-size", type=int, default=8, help="most frames (from all clients) per encoder run")
    p.add_argument("--max-queue-delay-us", type=int, default=2000,
                   help="how long Triton may hold a request to fill a batch, in microseconds")
    p.add_argument("--instances", type=int, default=1,
                   help="model instances (Triton's instance group), each with its own engine: batches of different "
                        "rooms run side by side (on a CPU: give each --threads cores/instances)")
    p.add_argument("--log-file", default=None, help="write Triton's own log there (default: this terminal)")


def _engine(args, folder: Path | None):
    """The server's engine, opened as every run's is (:meth:`~textsam_eus.runs.settings.RunSettings.open_engine`):
    onnxruntime runs the whole batch through the bundle's batched encoder."""
    from ..runs.settings import RunSettings

    settings = RunSettings(engine=args.engine, checkpoint=args.checkpoint or "demo",
                           bundle=str(folder) if folder is not None else None, device=args.device,
                           threads=args.threads, iterations=args.iterations, refine_prompts=args.refine_prompts)
    return settings.open_engine(batch_encoder=args.engine == "onnxruntime", export_to_cache=False)


def _info(engine, bundle, checkpoint_sha256: str | None) -> dict:
    from .. import __version__
    from ..model.bundle import model_id

    return {"model_id": model_id(bundle), "checkpoint_sha256": checkpoint_sha256, "bundle": bundle.folder,
            "preset": bundle.preset, "image_size": bundle.image_size, "lowres_size": bundle.lowres_size,
            "pixel_mean": bundle.pixel_mean, "pixel_std": bundle.pixel_std, "mask_threshold": bundle.mask_threshold,
            "resize": engine.resize, "refine_iterations": engine.iterations,
            "refine_prompts": engine.segmenter.refine_prompts, "presence_threshold": bundle.presence_threshold,
            "presence_show_frames": bundle.presence_show_frames, "presence_hide_frames": bundle.presence_hide_frames,
            "encoder_batched": bool(getattr(engine, "encodes_batches", False)), "engine": engine.info(),
            "textsam_eus": __version__}


def run(args: argparse.Namespace) -> int:
    from ..core.imports import require_pytriton
    from ..model.bundle import read_bundle
    from ..serving.served_model import ServedModel
    from ..serving.triton_server import ServerConfig, check_ports_free, serve

    if args.bundle and args.checkpoint:
        raise OptionError("pass --checkpoint or --bundle, not both (a bundle is the export of one checkpoint)")
    cfg = ServerConfig(host=args.host, grpc_port=args.grpc_port, http_port=args.http_port,
                       metrics_port=args.metrics_port, max_batch_size=args.max_batch_size,
                       max_queue_delay_us=args.max_queue_delay_us, instances=args.instances,
                       log_file=args.log_file).validate()
    require_pytriton()  # the server environment, before any export
    check_ports_free(cfg)  # before the model loads
    if args.engine == "torch" and args.bundle:
        raise OptionError("the torch engine serves a checkpoint: pass --checkpoint (bundles are for onnxruntime "
                          "and tensorrt)")
    if args.bundle:
        folder = Path(args.bundle)
        bundle = read_bundle(folder)
        digest = bundle.source.get("checkpoint_sha256")
    else:
        from ..model.checkpoint import resolve_checkpoint

        checkpoint = args.checkpoint or "demo"
        digest = file_sha256(resolve_checkpoint(checkpoint))
        if args.engine == "tensorrt":
            raise OptionError("the tensorrt engine serves a bundle with plans: pass --bundle DIR (textsam-eus "
                              "export --tensorrt)")
        from ..runs.engine import cached_onnx_export, cached_serving_export

        folder = cached_serving_export(checkpoint) if args.engine == "onnxruntime" else None
        bundle = read_bundle(folder if folder is not None else cached_onnx_export(checkpoint))
    engines = [_engine(args, folder) for _ in range(cfg.instances)]
    engine = engines[0]
    info = _info(engine, bundle, digest)
    models = [ServedModel(e, info) for e in engines]

    def ready(info: dict) -> None:
        urls = cfg.urls()
        print(f"serving {info['model_name']} version {info['model_version']} (model id {info['model_id']}, "
              f"{info['preset']}, {engine.name} on {engine.device}, encoder batched: {info['encoder_batched']}, "
              f"max batch {cfg.max_batch_size}, queue delay {cfg.max_queue_delay_us} us, {cfg.instances} "
              f"instance{'s' if cfg.instances > 1 else ''})\n"
              f"  clients: textsam-eus stream --engine triton --server {urls['grpc']} ...\n"
              f"  health: {urls['http']}/v2/health/ready   metrics: {urls['metrics']}\n"
              "  Ctrl+C or SIGTERM stops it", file=sys.stderr, flush=True)

    return serve(models, cfg, on_ready=ready)
