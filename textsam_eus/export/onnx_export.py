"""ONNX export of the deployable model: LoRA merged, no text tower, static shapes.

Graphs (S = image size, C = prompt width, g = S / patch, h = 4g, T = text tokens, N = geometric prompts)::

    encoder.onnx          image (1, 3, S, S) normalised              -> image_embeddings (1, C, g, g)
    decoder_text.onnx     image_embeddings, text_tokens (1, T, C)    -> low_res_masks (1, 1, h, h), iou (1, 1)
    decoder_refine.onnx   + point_coords (1, N, 2), point_labels (1, N) (N dynamic; centroid 1, box corners 2/3)

Resizing to the input, cropping the padding and resizing to the frame stay outside the graphs (a data-dependent
crop in the graph breaks export and TensorRT). After export the graphs are checked with ONNX Runtime against the
torch model; a disagreement raises :class:`ExportError`.
"""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import torch
from torch import nn

from ..core.imports import is_onnxruntime_available, require_onnxruntime
from ..core.mask_metrics import mask_iou
from ..model import transforms as T
from ..model.bundle import Bundle, write_bundle
from ..model.lora import has_lora
from ..model.textsam import TextSam, decode_single_mask, embed_points
from .errors import ExportError
from .parity_frames import parity_frames

OPSET = 17
MAX_POINTS = 8
LOGIT_TOL = 1e-3
IOU_MIN = 0.99


class EncoderGraph(nn.Module):
    def __init__(self, sam: nn.Module) -> None:
        super().__init__()
        self.image_encoder = sam.image_encoder

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        return self.image_encoder(image)


class DecoderGraph(nn.Module):
    """SAM's decoder with the text token(s) first among the sparse tokens; optional geometric prompts."""

    def __init__(self, sam: nn.Module, with_points: bool) -> None:
        super().__init__()
        self.sam = sam
        self.with_points = with_points

    def forward(self, image_embeddings, text_tokens, point_coords=None, point_labels=None):
        sparse = text_tokens
        if self.with_points:
            sparse = torch.cat([text_tokens, embed_points(self.sam.prompt_encoder, point_coords, point_labels)], 1)
        return decode_single_mask(self.sam, image_embeddings, sparse)


def deployable(model: TextSam) -> TextSam:
    """The model as export sees it: prompt precomputed, LoRA merged, no text tower, fp32 on the CPU.

    A model that is already deployable is used as is; otherwise a copy is made (the caller's model is kept).
    """
    if model.text is not None or has_lora(model.sam):
        model = model.deployable()
    return model.float().cpu()


def _export(module: nn.Module, args: tuple, path: Path, inputs: list[str], outputs: list[str],
            dynamic: dict | None = None) -> None:
    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")  # TracerWarnings from SAM's shape arithmetic (static here by design)
        torch.onnx.export(module, args, str(path), input_names=inputs, output_names=outputs, opset_version=OPSET,
                          do_constant_folding=True, dynamic_axes=dynamic, dynamo=False)


def export_onnx(model: TextSam, out: str | Path, fp16: bool = False) -> dict[str, str]:
    """Write the three graphs into ``out``; returns role -> file name.

    ``fp16``: also write ``*_fp16.onnx`` graphs (fp16 compute, LayerNorm/softmax fp32, fp32 inputs/outputs) for
    TensorRT and GPU runtimes.
    """
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    dep = deployable(model)
    cfg = dep.cfg
    s, c, g = cfg.image_size, cfg.prompt_embed_dim, cfg.embedding_grid
    image = torch.randn(1, 3, s, s)
    emb = torch.randn(1, c, g, g)
    tok = dep.cached_prompt.reshape(1, 1, c)
    coords = torch.tensor([[[s * 0.5, s * 0.5], [s * 0.3, s * 0.3], [s * 0.7, s * 0.7]]])
    labels = torch.tensor([[1.0, 2.0, 3.0]])
    files = {"encoder": "encoder.onnx", "decoder_text": "decoder_text.onnx", "decoder_refine": "decoder_refine.onnx"}
    _export(EncoderGraph(dep.sam), (image,), out / files["encoder"], ["image"], ["image_embeddings"])
    _export(DecoderGraph(dep.sam, False), (emb, tok), out / files["decoder_text"],
            ["image_embeddings", "text_tokens"], ["low_res_masks", "iou_predictions"])
    _export(DecoderGraph(dep.sam, True), (emb, tok, coords, labels), out / files["decoder_refine"],
            ["image_embeddings", "text_tokens", "point_coords", "point_labels"], ["low_res_masks", "iou_predictions"],
            dynamic={"point_coords": {1: "num_points"}, "point_labels": {1: "num_points"}})
    if fp16:
        from .fp16 import HalfIO, fp32_softmax, half_model

        d16 = half_model(dep)
        with fp32_softmax():
            for role, graph, args, inputs, dyn in [
                ("encoder", EncoderGraph(d16.sam), (image,), ["image"], None),
                ("decoder_text", DecoderGraph(d16.sam, False), (emb, tok), ["image_embeddings", "text_tokens"], None),
                ("decoder_refine", DecoderGraph(d16.sam, True), (emb, tok, coords, labels),
                 ["image_embeddings", "text_tokens", "point_coords", "point_labels"],
                 {"point_coords": {1: "num_points"}, "point_labels": {1: "num_points"}}),
            ]:
                name = f"{role}_fp16.onnx"
                outputs = ["image_embeddings"] if role == "encoder" else ["low_res_masks", "iou_predictions"]
                _export(HalfIO(graph), args, out / name, inputs, outputs, dyn)
                files[f"{role}_fp16"] = name
    return files


def _versions() -> dict[str, str]:
    import onnx

    v = {"torch": torch.__version__, "onnx": onnx.__version__, "opset": str(OPSET)}
    if is_onnxruntime_available():
        v["onnxruntime"] = require_onnxruntime().__version__
    return v


NON_FINITE_HINT = "check the checkpoint/training (NaN weights or a diverged run); no bundle was written"


def _check_finite(what: str, value: np.ndarray | torch.Tensor, where: str) -> None:
    """Raise ExportError when ``value`` holds NaN or Inf: such a model must not become a bundle."""
    if not np.isfinite(np.asarray(value)).all():
        raise ExportError(f"the model produces non-finite outputs (NaN/Inf): {what} {where}; {NON_FINITE_HINT}")


def _logit_diff(a: np.ndarray, b: np.ndarray) -> float:
    """max |a - b|; inf when either holds NaN/Inf, so a non-finite output can never pass a tolerance."""
    if not (np.isfinite(a).all() and np.isfinite(b).all()):
        return float("inf")
    return float(np.abs(a - b).max())


def _mask_iou(a: np.ndarray, b: np.ndarray, threshold: float) -> float:
    """IoU of the binary masks ``a > threshold`` and ``b > threshold``; 0 when either holds NaN/Inf."""
    if not (np.isfinite(a).all() and np.isfinite(b).all()):
        return 0.0
    return mask_iou(a > threshold, b > threshold)


def check_parity(model: TextSam, folder: str | Path, frames: list[np.ndarray]) -> dict[str, float]:
    """Run the ONNX graphs with ONNX Runtime (CPU) against the torch model on ``frames``.

    Text-only and refinement passes; raises ExportError when torch or ONNX Runtime gives NaN/Inf mask logits or
    IoU predictions, when the low-res mask logits differ by more than 1e-3 or the binary masks' IoU is below 0.99.
    Returns the worst numbers seen.
    """
    ort = require_onnxruntime(instead="or export with --no-verify (no parity check)")
    folder = Path(folder)
    opts = ort.SessionOptions()
    opts.log_severity_level = 3
    sess = {k: ort.InferenceSession(str(folder / f"{k}.onnx"), opts, providers=["CPUExecutionProvider"])
            for k in ("encoder", "decoder_text", "decoder_refine")}
    dep = deployable(model)
    cfg = dep.cfg
    tok = dep.cached_prompt.reshape(1, 1, -1)
    _check_finite("the prompt token", tok, "(text branch)")
    worst = {"max_abs_logit_diff": 0.0, "min_mask_iou": 1.0}
    for frame in frames:
        x, resized = T.preprocess(T.to_rgb(frame), cfg.image_size, cfg.pixel_mean, cfg.pixel_std, resize=cfg.resize)
        with torch.no_grad():
            emb_t = dep.encode_image(x)
        emb_o = sess["encoder"].run(None, {"image": x.numpy()})[0]
        coords = labels = None
        while True:  # the text-only pass, then one refinement pass from its mask (box corners + centroid)
            with torch.no_grad():
                low_t, iou_t = dep.decode(emb_t, dep.sparse_prompts(tok[0], coords, labels))
            feeds = {"image_embeddings": emb_o, "text_tokens": tok.numpy()}
            if coords is None:
                low_o, iou_o = sess["decoder_text"].run(None, feeds)
            else:
                feeds.update(point_coords=coords.numpy(), point_labels=labels.numpy())
                low_o, iou_o = sess["decoder_refine"].run(None, feeds)
            where = f"({'text' if coords is None else 'refine'} pass)"
            for what, value in (("torch mask logits", low_t), ("torch IoU predictions", iou_t),
                                ("ONNX Runtime mask logits", low_o), ("ONNX Runtime IoU predictions", iou_o)):
                _check_finite(what, value, where)
            diff = _logit_diff(low_o, low_t.numpy())
            iou = _mask_iou(low_o, low_t.numpy(), cfg.mask_threshold)
            worst["max_abs_logit_diff"] = max(worst["max_abs_logit_diff"], diff)
            worst["min_mask_iou"] = min(worst["min_mask_iou"], iou)
            if not (diff <= LOGIT_TOL and iou >= IOU_MIN):  # written so that NaN fails
                raise ExportError(f"ONNX Runtime disagrees with torch on {folder} {where}: max |logit diff| "
                                  f"{diff:.2e} (limit {LOGIT_TOL}), mask IoU {iou:.4f} (limit {IOU_MIN}); "
                                  "the export is not usable")
            bc = T.box_and_centroid(T.lowres_to_input(low_t, cfg.image_size, resized) > cfg.mask_threshold)
            if coords is not None or bc is None:
                break
            coords = torch.cat([bc[1].view(1, 2), bc[0].view(2, 2)]).unsqueeze(0)
            labels = torch.tensor([[1.0, 2.0, 3.0]])
    return worst


def export_bundle(model: TextSam, out: str | Path, *, verify: bool = True, frames: list[np.ndarray] | None = None,
                  source: dict | None = None, fp16: bool = False, int8: bool = False,
                  int8_frames: list[np.ndarray] | None = None, int8_frames_source: str | None = None) -> Bundle:
    """Export ONNX graphs + bundle.json; verify them with ONNX Runtime unless ``verify=False``.

    A bundle.json already in ``out`` is removed first (its graphs are being replaced), so a failed export leaves
    no usable bundle behind. A model whose prompt token or outputs hold NaN/Inf is refused with ExportError.

    ``int8``: also int8 CPU graphs (:func:`textsam_eus.export.quantize.add_int8`, parity on ``int8_frames``). The
    whole bundle is then made in a temporary folder beside ``out`` and moved in only once the int8 parity passed:
    a refused int8 export leaves an existing bundle in ``out`` untouched.
    """
    out = Path(out)
    if int8:
        return _export_int8_bundle(model, out, verify=verify, frames=frames, source=source, fp16=fp16,
                                   int8_frames=int8_frames, int8_frames_source=int8_frames_source)
    (out / "bundle.json").unlink(missing_ok=True)
    dep = deployable(model)  # one copy serves the export, the bundle's token and the parity check
    token = dep.cached_prompt.reshape(1, -1)
    _check_finite("the prompt token", token, "(text branch)")
    files = export_onnx(dep, out, fp16=fp16)
    cfg = dep.cfg
    bundle = Bundle(preset=cfg.preset, image_size=cfg.image_size,
                    embedding_shape=[1, cfg.prompt_embed_dim, cfg.embedding_grid, cfg.embedding_grid],
                    lowres_size=cfg.lowres_mask_size, pixel_mean=list(cfg.pixel_mean), pixel_std=list(cfg.pixel_std),
                    mask_threshold=cfg.mask_threshold, refine_iterations=cfg.refine_iterations,
                    presence_threshold=cfg.presence_threshold, presence_show_frames=cfg.presence_show_frames,
                    presence_hide_frames=cfg.presence_hide_frames, resize=cfg.resize,
                    prompt_tokens=token.tolist(), files=files, versions=_versions(),
                    source={**(source or {}), "config": cfg.to_dict()})
    if verify:
        bundle.source["parity"] = check_parity(dep, out, frames or parity_frames(cfg.image_size))
    write_bundle(out, bundle)
    return bundle


def _export_int8_bundle(model: TextSam, out: Path, *, int8_frames, int8_frames_source, **kwargs) -> Bundle:
    import shutil
    import tempfile

    from ..model.bundle import read_bundle
    from .quantize import add_int8

    out.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{out.name}-staging-", dir=out.parent))
    try:
        export_bundle(model, staging, **kwargs)
        add_int8(staging, int8_frames, int8_frames_source)
        out.mkdir(parents=True, exist_ok=True)
        (out / "bundle.json").unlink(missing_ok=True)
        for f in sorted(staging.iterdir(), key=lambda p: p.name == "bundle.json"):  # bundle.json last
            f.replace(out / f.name)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return read_bundle(out)
