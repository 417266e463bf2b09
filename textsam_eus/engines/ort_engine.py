"""The ONNX Runtime backend: CPU, or the CUDA execution provider with I/O binding (onnxruntime-gpu).

On the CPU the frame's pre-/post-processing runs in OpenCV/NumPy (:mod:`.cpu_prepost`; ``prepost='torch'`` forces
the torch one) and the sessions take and return NumPy arrays: no torch op per frame.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..core.errors import OptionError, UnavailableError
from ..model.bundle import BATCH_ENCODER_ROLE, REEXPORT, Bundle, BundleError, read_bundle
from ..model.cpu_features import cpu_features, int8_portability_problem
from ..core.imports import (ONNXRUNTIME_GPU_HINT, installed_onnxruntime_flavours, is_onnxruntime_gpu_available,
                             require_onnxruntime)
from .base import Engine
from .graph_io import check_external_data, check_ort_session

# what ONNX Runtime raises for a file it cannot parse or load as a graph (not provider or device failures)
_LOAD_ERRORS = ("InvalidProtobuf", "InvalidArgument", "InvalidGraph", "NoModel", "NoSuchFile", "Fail",
                "NotImplemented")


def _check_versions(bundle: Bundle, ort_version: str) -> None:
    import onnx

    opset = bundle.versions.get("opset", 17)
    if not str(opset).isdigit():
        raise BundleError(f"bundle {bundle.folder}: versions.opset is {opset!r}, expected an ONNX opset number; "
                          f"{REEXPORT}")
    opset = int(opset)
    max_opset = onnx.defs.onnx_opset_version()
    if opset > max_opset:
        raise BundleError(f"bundle {bundle.folder} uses ONNX opset {opset}, but the installed onnx {onnx.__version__}"
                          f" / onnxruntime {ort_version} know opsets up to {max_opset}; upgrade onnxruntime or "
                          "re-export the bundle here")


def _session(ort, path: Path, opts, providers) -> Any:
    """An InferenceSession for ``path``; a broken or foreign file is a BundleError naming it, not a traceback."""
    from onnxruntime.capi import onnxruntime_pybind11_state as state

    load_errors = tuple(getattr(state, n) for n in _LOAD_ERRORS if hasattr(state, n))
    try:
        return ort.InferenceSession(str(path), opts, providers=providers)
    except load_errors as exc:
        why = " ".join(str(exc).split())[:200]
        raise BundleError(f"ONNX Runtime cannot load {path} ({type(exc).__name__}: {why}); the graph file is "
                          f"broken or not an ONNX graph: {REEXPORT}") from exc


def _check_int8_here(bundle: Bundle) -> None:
    """Refuse int8 graphs whose recorded parity need not hold on this CPU (see :mod:`..model.cpu_features`)."""
    int8 = bundle.int8 if isinstance(bundle.int8, dict) else {}
    why = int8_portability_problem(int8.get("settings"), int8.get("measured_on"), cpu_features())
    if why:
        raise BundleError(f"bundle {bundle.folder} cannot run int8 here: {why}; re-quantize it on this machine "
                          f"('textsam-eus export --bundle {bundle.folder} --int8') or use --precision fp32")


class OrtEngine(Engine):
    name = "onnxruntime"
    host_arrays = True

    def __init__(self, bundle: str | Path | Bundle, *, device: str = "cpu", precision: str = "fp32",
                 threads: int | None = None, iterations: int | None = None, refine_prompts: str = "box+centroid",
                 prepost: str = "auto", batch_encoder: bool = False) -> None:
        """``batch_encoder``: the encoder is the bundle's ``encoder_batch.onnx`` (dynamic batch axis: ``encode``
        takes (B, 3, S, S)), for a model server that batches frames; fp32 only."""
        ort = require_onnxruntime()
        self.bundle = bundle if isinstance(bundle, Bundle) else read_bundle(bundle)
        _check_versions(self.bundle, ort.__version__)
        if precision == "int8" and device != "cpu":
            raise OptionError("precision int8 is for the CPU execution provider (--device cpu); on CUDA use fp16")
        available = ort.get_available_providers()
        if device.startswith("cuda"):
            if not is_onnxruntime_gpu_available():
                raise UnavailableError(f"the CUDA execution provider of ONNX Runtime is not available (providers "
                                       f"here: {available}; installed: {', '.join(installed_onnxruntime_flavours())})"
                                       f"; {ONNXRUNTIME_GPU_HINT}")
            providers = [("CUDAExecutionProvider", {"device_id": torch.device(device).index or 0}),
                         "CPUExecutionProvider"]
        elif device == "cpu":
            providers = ["CPUExecutionProvider"]
        else:
            raise OptionError(f"device={device!r} is invalid for onnxruntime: use 'cpu' or 'cuda'")
        if precision not in ("fp32", "fp16", "int8"):
            raise OptionError(f"precision={precision!r} is invalid for onnxruntime: use fp32, fp16 or int8 (CPU)")
        suffix = {"fp32": "", "fp16": "_fp16", "int8": "_int8"}[precision]
        if precision == "fp16" and "encoder_fp16" not in self.bundle.files:
            raise BundleError(f"bundle {self.bundle.folder} has no fp16 graphs; export it with --fp16")
        if precision == "int8" and "encoder_int8" not in self.bundle.files:
            raise BundleError(f"bundle {self.bundle.folder} has no int8 graphs; add them with "
                              f"'textsam-eus export --bundle {self.bundle.folder} --int8'")
        if precision == "int8":
            _check_int8_here(self.bundle)
        if batch_encoder and precision != "fp32":
            raise OptionError(f"the batched encoder of a model server is fp32; precision {precision!r} is for "
                              "one stream's engine")
        if batch_encoder and BATCH_ENCODER_ROLE not in self.bundle.files:
            raise BundleError(f"bundle {self.bundle.folder} has no batched encoder ({BATCH_ENCODER_ROLE}); add it "
                              f"with 'textsam-eus export --bundle {self.bundle.folder} --checkpoint CKPT --serving'")
        opts = ort.SessionOptions()
        opts.log_severity_level = 3
        opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        # ONNX Runtime's worker threads spin after each run by default; between the decoder passes that steals the
        # cores from the torch pre/post-processing and made whole frames 6x slower on 2 CPU cores here.
        opts.add_session_config_entry("session.intra_op.allow_spinning", "0")
        opts.add_session_config_entry("session.inter_op.allow_spinning", "0")
        if threads:
            opts.intra_op_num_threads = threads
        # int8 bundles quantize some roles only (bundle.int8["roles"]); the others run their fp32 graph
        files = {role: role + suffix if precision != "int8" or role + suffix in self.bundle.files else role
                 for role in ("encoder", "decoder_text", "decoder_refine")}
        if batch_encoder:
            files["encoder"] = BATCH_ENCODER_ROLE
        self.sessions = {}
        for role, f in files.items():
            path = self.bundle.path(f)
            check_external_data(self.bundle, path)  # weights only from files bundle.json hashes
            self.sessions[role] = _session(ort, path, opts, providers)
            check_ort_session(self.bundle, f if f == BATCH_ENCODER_ROLE else role, path,
                              self.sessions[role])  # the graph fits bundle.json
        self.encodes_batches = batch_encoder  # encode() takes (B, 3, S, S), B >= 1
        self.providers = self.sessions["encoder"].get_providers()
        self.precision = precision
        self.use_cuda = device.startswith("cuda")
        b = self.bundle
        super().__init__(image_size=b.image_size, pixel_mean=b.pixel_mean, pixel_std=b.pixel_std,
                         prompt_tokens=b.prompt_tokens, device=device if self.use_cuda else "cpu",
                         iterations=b.refine_iterations if iterations is None else iterations,
                         refine_prompts=refine_prompts, threshold=b.mask_threshold, presence=b,
                         sync=torch.cuda.synchronize if self.use_cuda else None, resize=b.resize,
                         prepost=prepost)

    # ------------------------------------------------------------------ CPU: numpy in, numpy out
    def _run(self, role: str, feeds: dict) -> list:
        """NumPy in -> NumPy out (the NumPy pre-/post-processing); torch tensors in -> torch tensors out."""
        sess = self.sessions[role]
        if not self.use_cuda:
            host = [isinstance(v, np.ndarray) for v in feeds.values()]
            outs = sess.run(None, {k: v if isinstance(v, np.ndarray) else v.detach().cpu().numpy()
                                   for k, v in feeds.items()})
            return outs if all(host) else [torch.from_numpy(o) for o in outs]
        # CUDA: bind torch device buffers directly (no host round trip)
        binding = sess.io_binding()
        for name, t in feeds.items():
            t = t.contiguous().float()
            feeds[name] = t
            binding.bind_input(name, "cuda", t.device.index or 0, np.float32, list(t.shape), t.data_ptr())
        outputs = []
        for out in sess.get_outputs():
            shape = self._output_shape(role, out.name, feeds)
            buf = torch.empty(shape, dtype=torch.float32, device=self.device)
            binding.bind_output(out.name, "cuda", buf.device.index or 0, np.float32, list(shape), buf.data_ptr())
            outputs.append(buf)
        sess.run_with_iobinding(binding)
        return outputs

    def _output_shape(self, role, name, feeds):
        if role == "encoder":
            return (feeds["image"].shape[0], *self.bundle.embedding_shape[1:])
        return (1, 1, self.bundle.lowres_size, self.bundle.lowres_size) if name == "low_res_masks" else (1, 1)

    # ------------------------------------------------------------------ Engine hooks
    def encode(self, x: torch.Tensor) -> torch.Tensor:
        return self._run("encoder", {"image": x})[0]

    def decode(self, emb, tokens, coords, labels):
        feeds = {"image_embeddings": emb, "text_tokens": tokens}
        if coords is None:
            low, iou = self._run("decoder_text", feeds)
        else:
            if isinstance(coords, np.ndarray):
                feeds.update(point_coords=coords.astype(np.float32, copy=False),
                             point_labels=labels.astype(np.float32, copy=False))
            else:
                feeds.update(point_coords=coords.float(), point_labels=labels.float())
            low, iou = self._run("decoder_refine", feeds)
        return low, iou

    def info(self) -> dict[str, Any]:
        info = {**super().info(), "precision": self.precision, "providers": self.providers,
                "preset": self.bundle.preset}
        if self.encodes_batches:
            info["encoder"] = BATCH_ENCODER_ROLE
        if self.precision == "int8":
            info["int8_parity"] = self.bundle.int8.get("parity")
        return info
