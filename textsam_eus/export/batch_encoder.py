"""The batched image encoder of a model server: ``encoder_batch.onnx`` (``textsam-eus export --serving``).

The bundle's ``encoder.onnx`` has static shapes (batch 1: the fastest graph for one stream, and what TensorRT
builds from). A Triton server batches frames from several rooms and runs them through the encoder as one batch,
so it needs the same encoder with a dynamic batch axis::

    encoder_batch.onnx    image (B, 3, S, S) normalised  ->  image_embeddings (B, C, g, g)

It is checked with ONNX Runtime against ``encoder.onnx`` frame by frame; the decoders are the bundle's own. The
model's identity (:func:`~textsam_eus.model.bundle.model_id`) does not change: it is the same model.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from ..core.imports import require_onnxruntime
from ..model.bundle import BATCH_ENCODER_ROLE as BATCH_ROLE, Bundle, BundleError, read_bundle, write_bundle
from ..model.textsam import TextSam
from .errors import ExportError
from .onnx_export import LOGIT_TOL, EncoderGraph, _export, deployable

BATCH_ROLE = "encoder_batch"
BATCH_FILE = "encoder_batch.onnx"


def _check_same_model(dep: TextSam, bundle: Bundle) -> None:
    token = dep.cached_prompt.reshape(1, -1).numpy()
    tokens = np.asarray(bundle.prompt_tokens, np.float32)
    if dep.cfg.image_size != bundle.image_size or tokens.shape != token.shape or \
            not np.allclose(tokens, token, atol=1e-6):
        raise ExportError(f"the checkpoint is not the model of bundle {bundle.folder} (other input size or prompt "
                          "token); pass the checkpoint the bundle was exported from, or export a new bundle with "
                          "'textsam-eus export --checkpoint CKPT --out DIR --serving'")


def add_batch_encoder(model: TextSam, folder: str | Path, verify: bool = True, batch: int = 3) -> Bundle:
    """Write ``encoder_batch.onnx`` into the bundle ``folder`` (exported from ``model``, the bundle's model) and
    record it in bundle.json. ``verify``: ONNX Runtime runs a batch of ``batch`` frames through it and the
    batch-1 ``encoder.onnx`` one by one; embeddings differing by more than 1e-3 raise :class:`ExportError`."""
    folder = Path(folder)
    bundle = read_bundle(folder)
    dep = deployable(model)
    _check_same_model(dep, bundle)
    s = bundle.image_size
    _export(EncoderGraph(dep.sam), (torch.randn(2, 3, s, s),), folder / BATCH_FILE, ["image"], ["image_embeddings"],
            dynamic={"image": {0: "batch"}, "image_embeddings": {0: "batch"}})
    if verify:
        diff = batch_parity(folder, bundle, batch)
        bundle.source["batch_encoder_parity"] = {"batch": batch, "max_abs_diff": diff}
    bundle.files[BATCH_ROLE] = BATCH_FILE
    write_bundle(folder, bundle)
    return bundle


def batch_parity(folder: Path, bundle: Bundle, batch: int) -> float:
    """max |embeddings of the batch - embeddings frame by frame| with ONNX Runtime on the CPU."""
    ort = require_onnxruntime(instead="or export with --no-verify (no parity check)")
    opts = ort.SessionOptions()
    opts.log_severity_level = 3
    one = ort.InferenceSession(str(bundle.path("encoder")), opts, providers=["CPUExecutionProvider"])
    many = ort.InferenceSession(str(folder / BATCH_FILE), opts, providers=["CPUExecutionProvider"])
    x = np.random.default_rng(0).standard_normal((batch, 3, bundle.image_size, bundle.image_size)).astype(np.float32)
    got = many.run(None, {"image": x})[0]
    want = np.concatenate([one.run(None, {"image": x[i:i + 1]})[0] for i in range(batch)])
    if got.shape != want.shape or not np.isfinite(got).all():
        raise ExportError(f"{folder / BATCH_FILE} gives {got.shape} (or non-finite values) for a batch of {batch}, "
                          f"expected {want.shape}; the export is not usable")
    diff = float(np.abs(got - want).max())
    if not diff <= LOGIT_TOL:
        raise ExportError(f"{folder / BATCH_FILE} disagrees with encoder.onnx (max |diff| {diff:.2e}, limit "
                          f"{LOGIT_TOL}); the export is not usable")
    return diff


def require_batch_encoder(bundle: Bundle) -> Path:
    """The bundle's batched encoder, or a BundleError naming the command that adds it."""
    if BATCH_ROLE not in bundle.files:
        raise BundleError(f"bundle {bundle.folder} has no batched encoder for serving; add it with 'textsam-eus "
                          f"export --bundle {bundle.folder} --checkpoint CKPT --serving' (CKPT: the checkpoint it "
                          "was exported from), or serve the checkpoint itself with 'textsam-eus serve --checkpoint "
                          "CKPT'")
    return bundle.path(BATCH_ROLE)
