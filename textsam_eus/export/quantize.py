"""int8 graphs for the CPU: ONNX Runtime dynamic quantization, kept only when the masks stay the same.

``add_int8(folder)`` quantizes the image encoder of a bundle (``encoder_int8.onnx``: int8 weights, per-tensor,
activations quantized at run time, ``MatMul``/``Gemm`` only; the convolutions and the decoders stay fp32 because
quantizing them made the encoder slower and the masks worse here), then runs the whole segmentation (text-only
pass + refinement, as the engines do) with the fp32 and the int8 graphs on a fixed set of frames. ``bundle.json``
records the method and the parity (mean / min mask IoU, how many frames, which frames). When the mean IoU is below
:data:`INT8_MIN_MEAN_IOU` it refuses with :class:`ExportError` and writes nothing into the bundle.
"""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path
from typing import Callable

import numpy as np
import torch

from ..model.bundle import Bundle, read_bundle, write_bundle
from ..model.refine import Segmenter
from .onnx_export import ExportError, parity_frames

INT8_MIN_MEAN_IOU = 0.98
INT8_ROLES = ("encoder",)
INT8_METHOD = ("onnxruntime.quantization.quantize_dynamic: QInt8 weights (per tensor), activations quantized at "
               "run time, MatMul/Gemm only")


def quantize_graph(src: str | Path, dst: str | Path) -> None:
    """Dynamic int8 quantization of one graph (weights int8; MatMul/Gemm)."""
    from onnxruntime.quantization import QuantType, quantize_dynamic

    quantize_dynamic(str(src), str(dst), weight_type=QuantType.QInt8, op_types_to_quantize=["MatMul", "Gemm"])


def _sessions(paths: dict[str, Path], threads: int | None = None) -> dict:
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.log_severity_level = 3
    opts.add_session_config_entry("session.intra_op.allow_spinning", "0")
    if threads:
        opts.intra_op_num_threads = threads
    return {role: ort.InferenceSession(str(p), opts, providers=["CPUExecutionProvider"]) for role, p in paths.items()}


def _segmenter(bundle: Bundle, paths: dict[str, Path]) -> Segmenter:
    """The engines' Segmenter on ONNX Runtime CPU sessions of ``paths`` (role -> graph)."""
    sess = _sessions(paths)
    tok = np.asarray(bundle.prompt_tokens, np.float32)[None]

    def encode(x):
        return torch.from_numpy(sess["encoder"].run(None, {"image": x.numpy()})[0])

    def decode(emb, coords, labels):
        feeds = {"image_embeddings": emb.numpy(), "text_tokens": tok}
        if coords is None:
            outs = sess["decoder_text"].run(None, feeds)
        else:
            feeds.update(point_coords=coords.float().numpy(), point_labels=labels.float().numpy())
            outs = sess["decoder_refine"].run(None, feeds)
        return tuple(torch.from_numpy(o) for o in outs)

    return Segmenter(encode, decode, image_size=bundle.image_size, pixel_mean=bundle.pixel_mean,
                     pixel_std=bundle.pixel_std, iterations=bundle.refine_iterations, threshold=bundle.mask_threshold)


def _iou(a: np.ndarray, b: np.ndarray) -> float:
    union = np.logical_or(a, b).sum()
    return 1.0 if union == 0 else float(np.logical_and(a, b).sum() / union)


def int8_parity(bundle: Bundle, int8_paths: dict[str, Path], frames: list[np.ndarray]) -> dict[str, float]:
    """Mask IoU of the int8 graphs against the fp32 ones on ``frames``: mean, min and the frame count."""
    fp32 = {r: bundle.path(r) for r in ("encoder", "decoder_text", "decoder_refine")}
    a, b = _segmenter(bundle, fp32), _segmenter(bundle, {**fp32, **int8_paths})
    ious = [_iou(a.segment(f).mask, b.segment(f).mask) for f in frames]
    return {"mean_mask_iou": float(np.mean(ious)), "min_mask_iou": float(np.min(ious)), "frames": len(ious)}


def add_int8(folder: str | Path, frames: list[np.ndarray] | None = None, frames_source: str | None = None,
             min_mean_iou: float = INT8_MIN_MEAN_IOU,
             parity: Callable[[Bundle, dict, list], dict] | None = None) -> Bundle:
    """Quantize the bundle in ``folder`` to int8 (see the module doc); returns the updated bundle.

    The int8 graphs are written and checked in a temporary folder first: a refused or failed quantization leaves
    the bundle exactly as it was. ``frames`` default to synthetic frames (``frames_source`` says what they are).
    """
    folder = Path(folder)
    bundle = read_bundle(folder)
    if frames is None:
        frames, frames_source = parity_frames(bundle.image_size, n=6), "synthetic frames (export.parity_frames)"
    tmp = Path(tempfile.mkdtemp(prefix=".int8-", dir=folder))
    try:
        paths = {}
        for role in INT8_ROLES:
            paths[role] = tmp / f"{role}_int8.onnx"
            quantize_graph(bundle.path(role), paths[role])
        result = (parity or int8_parity)(bundle, paths, frames)
        if not result["mean_mask_iou"] >= min_mean_iou:  # written so that NaN is refused
            raise ExportError(
                f"int8 refused for {folder}: mean mask IoU int8 vs fp32 {result['mean_mask_iou']:.4f} (min "
                f"{result['min_mask_iou']:.4f}) on {result['frames']} {frames_source or 'frames'} is below "
                f"{min_mean_iou}; the bundle was left unchanged: use the fp32 graphs (no --int8)")
        for role, p in paths.items():
            shutil.move(str(p), folder / p.name)
            bundle.files[f"{role}_int8"] = p.name
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    bundle.int8 = {"method": INT8_METHOD, "roles": list(INT8_ROLES), "min_mean_mask_iou": min_mean_iou,
                   "parity": {**result, "frames_source": frames_source or "caller's frames"}}
    write_bundle(folder, bundle)
    return bundle
