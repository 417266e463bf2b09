"""Run a :class:`~textsam_eus.serving.served_model.ServedModel` on NVIDIA Triton Inference Server through PyTriton.

PyTriton starts its bundled ``tritonserver`` (a child process that dies with this one: PR_SET_PDEATHSIG) whose
Python-backend stub forwards each batch to the inference function in this process. This module:

* sets ``LD_LIBRARY_PATH`` to include the running interpreter's ``LIBDIR`` before the server starts, else the stub
  loads the system's older libpython and dies (``RLock._recursion_count``, PyTriton issue #51);
* binds ``textsam_eus`` (dynamic batching: ``max_batch_size``, ``max_queue_delay_us``; the version is derived
  from the bundle's model id) and ``textsam_eus_info`` (the identity and pre-/post-processing values as JSON);
* listens on ``host`` only (127.0.0.1 unless given) for gRPC, HTTP and Prometheus metrics (``/metrics``);
* stops on SIGINT or SIGTERM: Triton unloads the models and exits, its stubs with it, the workspace is removed.
"""

from __future__ import annotations

import errno
import json
import os
import signal
import socket
from collections import Counter
import sys
import sysconfig
from dataclasses import dataclass
from typing import Callable

import numpy as np

from ..engines.triton_protocol import INFO_MODEL, MODEL_NAME, model_version
from ..model.errors import OptionError
from ..model.imports import require_pytriton
from .served_model import ServedModel


MAX_INSTANCES = 16


@dataclass
class ServerConfig:
    """The server's addresses and batching; :meth:`validate` names the bad field."""

    host: str = "127.0.0.1"
    grpc_port: int = 8001
    http_port: int = 8000
    metrics_port: int = 8002
    max_batch_size: int = 8
    max_queue_delay_us: int = 2000  # how long Triton holds a request to fill a batch (microseconds)
    instances: int = 1  # model instances (Triton's instance group): batches run side by side, one engine each
    log_file: str | None = None  # Triton's own log (default: this process's output)
    exit_timeout_s: int = 5  # how long Triton waits for requests in flight at a stop

    def validate(self) -> "ServerConfig":
        ports = {"--grpc-port": self.grpc_port, "--http-port": self.http_port, "--metrics-port": self.metrics_port}
        for flag, port in ports.items():
            if not (isinstance(port, int) and 1 <= port <= 65535):
                raise OptionError(f"{flag} {port!r} is invalid: use a port number 1..65535")
        if len(set(ports.values())) < 3:
            raise OptionError(f"--grpc-port, --http-port and --metrics-port must differ (got {ports})")
        if not (isinstance(self.max_batch_size, int) and 1 <= self.max_batch_size <= 64):
            raise OptionError(f"--max-batch-size {self.max_batch_size!r} is invalid: use 1..64 (frames per "
                              "encoder run)")
        if not (isinstance(self.max_queue_delay_us, int) and 0 <= self.max_queue_delay_us <= 1_000_000):
            raise OptionError(f"--max-queue-delay-us {self.max_queue_delay_us!r} is invalid: use 0..1000000 "
                              "microseconds")
        if not (isinstance(self.instances, int) and 1 <= self.instances <= MAX_INSTANCES):
            raise OptionError(f"--instances {self.instances!r} is invalid: use 1..{MAX_INSTANCES} (model instances, "
                              "each with its own engine)")
        if not self.host:
            raise OptionError("--host is empty: use an address to listen on, e.g. 127.0.0.1")
        return self

    def urls(self) -> dict[str, str]:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return {"grpc": f"grpc://{host}:{self.grpc_port}", "http": f"http://{host}:{self.http_port}",
                "metrics": f"http://{host}:{self.metrics_port}/metrics"}


def check_ports_free(cfg: ServerConfig) -> None:
    """A port in use (or an address this machine does not have) is a one-line error before Triton starts."""
    for flag, port in (("--grpc-port", cfg.grpc_port), ("--http-port", cfg.http_port),
                       ("--metrics-port", cfg.metrics_port)):
        family = socket.AF_INET6 if ":" in cfg.host else socket.AF_INET
        with socket.socket(family, socket.SOCK_STREAM) as s:
            s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            try:
                s.bind((cfg.host, port))
            except OSError as exc:
                if exc.errno == errno.EADDRINUSE:
                    raise OptionError(f"{flag} {port}: the port is in use on {cfg.host}; choose another "
                                      f"({flag} N) or stop what listens there") from None
                raise OptionError(f"--host {cfg.host}: cannot listen there ({exc.strerror}); use an address of "
                                  "this machine, e.g. 127.0.0.1") from None


def python_library_path() -> str:
    """``LD_LIBRARY_PATH`` with this interpreter's LIBDIR first (PyTriton issue #51); also set in os.environ, which
    the tritonserver child and its stubs inherit."""
    libdir = sysconfig.get_config_var("LIBDIR") or ""
    parts = [p for p in os.environ.get("LD_LIBRARY_PATH", "").split(":") if p]
    if libdir and libdir not in parts:
        parts.insert(0, libdir)
    os.environ["LD_LIBRARY_PATH"] = ":".join(parts)
    return os.environ["LD_LIBRARY_PATH"]


STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM)


def _stop_on_signal(signum, _frame) -> None:
    """The first SIGINT/SIGTERM stops the server (as Ctrl+C does in PyTriton); later ones are ignored, so they
    cannot interrupt the stop and leave a tritonserver behind."""
    for sig in STOP_SIGNALS:
        signal.signal(sig, signal.SIG_IGN)
    print(f"{signal.Signals(signum).name}: stopping the server", file=sys.stderr, flush=True)
    raise KeyboardInterrupt(signal.Signals(signum).name)


def serve(models: ServedModel | list[ServedModel], cfg: ServerConfig,
          on_ready: Callable[[dict], None] | None = None) -> int:
    """Serve ``models`` (one per model instance, ``cfg.instances`` of them; each runs one batch at a time with its
    own engine, Triton hands batches to free instances) until SIGINT/SIGTERM; returns 0 after a clean stop."""
    require_pytriton()
    from pytriton.decorators import batch
    from pytriton.model_config import DynamicBatcher, ModelConfig, Tensor
    from pytriton.triton import Triton, TritonConfig

    cfg.validate()
    models = [models] if isinstance(models, ServedModel) else list(models)
    if len(models) != cfg.instances:
        raise OptionError(f"{len(models)} served models for --instances {cfg.instances}: pass one per instance")
    model = models[0]
    check_ports_free(cfg)
    python_library_path()
    s, h = model.size, model.lowres
    inputs = [Tensor(name="image", dtype=np.float32, shape=(3, s, s)),
              Tensor(name="resized_hw", dtype=np.int32, shape=(2,)),
              Tensor(name="first_points", dtype=np.float32, shape=(8, 3)),
              Tensor(name="iterations", dtype=np.int32, shape=(1,))]
    outputs = [Tensor(name="low_res_masks", dtype=np.float32, shape=(1, h, h)),
               Tensor(name="iou", dtype=np.float32, shape=(1,)),
               Tensor(name="presence", dtype=np.float32, shape=(1,)),
               Tensor(name="passes", dtype=np.int32, shape=(1,)),
               Tensor(name="batch_size", dtype=np.int32, shape=(1,)),
               Tensor(name="server_ms", dtype=np.float32, shape=(4,))]
    info = {**model.info, "max_batch_size": cfg.max_batch_size, "max_queue_delay_us": cfg.max_queue_delay_us,
            "instances": cfg.instances,
            "model_name": MODEL_NAME, "model_version": model_version(model.info["model_id"])}
    payload = np.array([json.dumps(info).encode()], dtype=np.object_)

    def info_fn(requests):
        return [{"info": payload} for _ in requests]

    tc = TritonConfig(http_address=cfg.host, http_port=cfg.http_port, grpc_address=cfg.host,
                      grpc_port=cfg.grpc_port, metrics_address=cfg.host, metrics_port=cfg.metrics_port,
                      allow_metrics=True, allow_gpu_metrics=False, exit_timeout_secs=cfg.exit_timeout_s,
                      log_verbose=0, log_file=cfg.log_file)
    old = {sig: signal.signal(sig, _stop_on_signal) for sig in STOP_SIGNALS}
    try:
        with Triton(config=tc) as triton:
            triton.bind(model_name=MODEL_NAME, infer_func=[batch(m.infer) for m in models], inputs=inputs, outputs=outputs,
                        model_version=info["model_version"], strict=True,
                        config=ModelConfig(batching=True, max_batch_size=cfg.max_batch_size,
                                           batcher=DynamicBatcher(max_queue_delay_microseconds=cfg.max_queue_delay_us)))
            triton.bind(model_name=INFO_MODEL, infer_func=info_fn,
                        inputs=[Tensor(name="query", dtype=np.int32, shape=(1,))],
                        outputs=[Tensor(name="info", dtype=np.bytes_, shape=(1,))],
                        config=ModelConfig(batching=False))
            triton.run()
            if on_ready is not None:
                on_ready(info)
            triton.serve()  # until SIGINT (or SIGTERM, raised as KeyboardInterrupt): then Triton stops
    except KeyboardInterrupt:
        pass
    finally:
        for sig, handler in old.items():
            signal.signal(sig, handler)
    sizes = sum((m.batch_sizes for m in models), Counter())
    print(f"stopped; batches served by size: {dict(sorted(sizes.items()))}", file=sys.stderr, flush=True)
    return 0
