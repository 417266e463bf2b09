"""int8 graphs for the CPU: ONNX Runtime dynamic quantization, kept only when the masks stay the same.

``add_int8(folder)`` quantizes the image encoder of a bundle (``encoder_int8.onnx``: :data:`INT8_SETTINGS`:
7-bit int8 weights per tensor, activations quantized at run time, ``MatMul``/``Gemm`` only; the convolutions and
the decoders stay fp32 because quantizing them made the encoder slower and the masks worse here), then runs the
whole segmentation (text-only pass + refinement, as the engines do) with the fp32 and the int8 graphs on a fixed
set of frames. ``bundle.json`` records the settings, the CPU the parity was measured on and the parity (mean / min
mask IoU over the frames where either model finds something, how many frames that was, the largest presence-score
difference). It refuses with :class:`ExportError`, writing nothing into the bundle, when the mean IoU is below
:data:`INT8_MIN_MEAN_IOU` or when the fp32 model finds something in fewer than :data:`INT8_MIN_MASK_FRAMES` frames
(an IoU of empty against empty proves nothing).

Why 7-bit weights (``reduce_range``): full-range int8 weights saturate ONNX Runtime's U8S8 kernels on x86-64 CPUs
without VNNI (:mod:`textsam_eus.model.cpu_features`), so their masks depend on the CPU: on a 2-core AMD EPYC
(AVX2, no VNNI) the tests' tiny model kept a mean mask IoU of 0.95 only; 7-bit weights gave 0.994 there with the
same speed, and give the same integers on every x86-64 CPU (measured with /tmp probes, see the int8 notes in
benchmarks/README.md).
"""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch

from ..model.bundle import Bundle, read_bundle, write_bundle
from ..model.cpu_features import cpu_features
from ..model.refine import Segmenter
from .errors import ExportError
from .parity_frames import parity_frames

INT8_MIN_MEAN_IOU = 0.98
INT8_MIN_MASK_FRAMES = 3  # parity frames in which the fp32 model must find something
INT8_ROLES = ("encoder",)
# onnxruntime.quantization.quantize_dynamic's arguments, recorded in bundle.json as they are
INT8_SETTINGS = {"weight_type": "QInt8", "reduce_range": True, "per_channel": False,
                 "op_types_to_quantize": ["MatMul", "Gemm"]}
INT8_METHOD = ("onnxruntime.quantization.quantize_dynamic: QInt8 weights in 7 bits (reduce_range, per tensor), "
               "activations quantized at run time, MatMul/Gemm only")


def quantize_graph(src: str | Path, dst: str | Path, settings: dict | None = None) -> None:
    """Dynamic int8 quantization of one graph with ``settings`` (default :data:`INT8_SETTINGS`)."""
    import logging

    from onnxruntime.quantization import QuantType, quantize_dynamic

    s = dict(INT8_SETTINGS if settings is None else settings)
    root = logging.getLogger()
    level = root.level
    root.setLevel(logging.ERROR)  # the quantizer logs "consider pre-processing" advice to the root logger
    try:
        quantize_dynamic(str(src), str(dst), weight_type=getattr(QuantType, s["weight_type"]),
                         reduce_range=s["reduce_range"], per_channel=s["per_channel"],
                         op_types_to_quantize=list(s["op_types_to_quantize"]))
    finally:
        root.setLevel(level)


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


def int8_parity(bundle: Bundle, int8_paths: dict[str, Path], frames: list[np.ndarray]) -> dict[str, Any]:
    """The int8 graphs against the fp32 ones on ``frames``.

    Mask IoU over the frames where either finds something (a frame where only one does counts 0; frames empty in
    both are left out: they would count 1 and prove nothing): mean, min and how many frames that was
    (``frames_compared``); ``frames``: all, ``frames_with_mask``: those where the fp32 model finds something;
    ``max_presence_diff``: the largest difference of the text-only pass's presence score (NaN-safe: None when
    there is no frame to compare)."""
    fp32 = {r: bundle.path(r) for r in ("encoder", "decoder_text", "decoder_refine")}
    a, b = _segmenter(bundle, fp32), _segmenter(bundle, {**fp32, **int8_paths})
    ious, with_mask, presence = [], 0, []
    for f in frames:
        ra, rb = a.segment(f), b.segment(f)
        with_mask += bool(ra.mask.any())
        if ra.presence is not None and rb.presence is not None:
            presence.append(abs(float(ra.presence) - float(rb.presence)))
        union = np.logical_or(ra.mask, rb.mask).sum()
        if union:
            ious.append(float(np.logical_and(ra.mask, rb.mask).sum() / union))
    return {"mean_mask_iou": float(np.mean(ious)) if ious else None,
            "min_mask_iou": float(np.min(ious)) if ious else None,
            "frames": len(frames), "frames_compared": len(ious), "frames_with_mask": with_mask,
            "max_presence_diff": float(max(presence)) if presence else None}


def _refusal(folder: Path, result: dict[str, Any], frames_source: str | None, min_mean_iou: float) -> str | None:
    """Why the parity ``result`` is not good enough (one line), or None."""
    what = frames_source or f"{result.get('frames')} frames"
    kept = "the bundle was left unchanged: use the fp32 graphs (no --int8)"
    with_mask = result.get("frames_with_mask")
    if not isinstance(with_mask, int) or with_mask < INT8_MIN_MASK_FRAMES:
        return (f"int8 refused for {folder}: the fp32 model finds a mask in {with_mask} of {what}, fewer than "
                f"{INT8_MIN_MASK_FRAMES}, so the int8 masks cannot be compared (empty against empty proves "
                f"nothing); {kept}, or check the model finds lesions on these frames")
    mean = result.get("mean_mask_iou")
    if not (isinstance(mean, float) and mean >= min_mean_iou):  # written so that None and NaN are refused
        low = result.get("min_mask_iou")
        return (f"int8 refused for {folder}: mean mask IoU int8 vs fp32 {mean if mean is None else f'{mean:.4f}'}"
                f" (min {low if low is None else f'{low:.4f}'}) over the {result.get('frames_compared')} frames "
                f"with a mask of {what} is below {min_mean_iou}; {kept}")
    return None


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
        frames, frames_source = parity_frames(bundle.image_size, n=6), "6 synthetic frames (export.parity_frames)"
    tmp = Path(tempfile.mkdtemp(prefix=".int8-", dir=folder))
    try:
        paths = {}
        for role in INT8_ROLES:
            paths[role] = tmp / f"{role}_int8.onnx"
            quantize_graph(bundle.path(role), paths[role])
        result = (parity or int8_parity)(bundle, paths, frames)
        why = _refusal(folder, result, frames_source, min_mean_iou)
        if why:
            raise ExportError(why)
        for role, p in paths.items():
            shutil.move(str(p), folder / p.name)
            bundle.files[f"{role}_int8"] = p.name
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    import onnxruntime

    bundle.int8 = {"method": INT8_METHOD, "settings": dict(INT8_SETTINGS), "roles": list(INT8_ROLES),
                   "min_mean_mask_iou": min_mean_iou,
                   "parity": {**result, "frames_source": frames_source or "caller's frames"},
                   "measured_on": {**cpu_features(), "onnxruntime": onnxruntime.__version__}}
    write_bundle(folder, bundle)
    return bundle
