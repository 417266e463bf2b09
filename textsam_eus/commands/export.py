"""``textsam-eus export``: deployment bundle (ONNX graphs, optional TensorRT plans, bundle.json)."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

# real EUS clips for the int8 parity check, when this checkout has the shared data beside it
EUS_CLIPS = Path(__file__).resolve().parents[2].parent / "shared" / "data" / "eus_clips"

from ..core.errors import OptionError
from ..core.hashing import file_sha256


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--checkpoint", default="demo", help="TextSAM-EUS checkpoint (.safetensors) or 'demo'")
    p.add_argument("--out", required=False, help="bundle folder to write")
    p.add_argument("--bundle", default=None, help="add TensorRT plans (--tensorrt) or int8 graphs (--int8) to an existing bundle "
                                                    "instead of exporting")
    p.add_argument("--tensorrt", action="store_true", help="also build TensorRT plans (NVIDIA GPU + tensorrt)")
    p.add_argument("--fp16", action="store_true",
                   help="also export fp16 graphs (LayerNorm/softmax in fp32) and build fp16 TensorRT plans")
    p.add_argument("--int8", action="store_true",
                   help="also int8 CPU graphs (ONNX Runtime dynamic quantization of the encoder); refused, with the "
                        "bundle left as it was, when the int8 masks' mean IoU against fp32 is below 0.98")
    p.add_argument("--serving", action="store_true",
                   help="also the batched encoder (encoder_batch.onnx, dynamic batch axis) that 'textsam-eus serve' "
                        "runs; with --bundle DIR, --checkpoint must be the bundle's own checkpoint")
    p.add_argument("--no-verify", action="store_true", help="skip the ONNX Runtime parity check")
    p.add_argument("--sam-checkpoint", default=None, help="override the checkpoint's base SAM weights path")
    p.add_argument("--biomedclip-dir", default=None, help="override the checkpoint's BiomedCLIP folder")


def run(args: argparse.Namespace) -> int:
    from ._warnings import one_line_warnings

    with one_line_warnings("export"):  # the exporters' and quantizer's warnings: one line each, no source paths
        return _run(args)


def _run(args: argparse.Namespace) -> int:
    import torch

    torch.set_num_threads(max(1, torch.get_num_threads()))
    if args.bundle:
        folder = args.bundle
        if args.int8:
            from ..export.quantize import add_int8
            from ..model.bundle import read_bundle

            bundle = add_int8(folder, *int8_parity_frames(read_bundle(folder, verify=False).image_size))
            print(f"added {', '.join(v for k, v in bundle.files.items() if k.endswith('_int8'))} to {folder}")
        if args.serving:
            from ..export.batch_encoder import add_batch_encoder
            from ..model.checkpoint import load_checkpoint

            model, _ = load_checkpoint(args.checkpoint)
            bundle = add_batch_encoder(model, folder, verify=not args.no_verify)
            print(f"added encoder_batch.onnx to {folder}")
    else:
        if not args.out:
            raise OptionError("--out DIR is required (or --bundle DIR to add TensorRT plans to a bundle)")
        from ..export.onnx_export import export_bundle
        from ..model.checkpoint import load_checkpoint, resolve_checkpoint

        check_out_folder(args)  # before the checkpoint is loaded
        overrides = {k: v for k, v in (("sam_checkpoint", args.sam_checkpoint),
                                       ("biomedclip_dir", args.biomedclip_dir)) if v}
        model, _ = load_checkpoint(args.checkpoint, **overrides)
        ckpt = resolve_checkpoint(args.checkpoint)
        int8_frames, int8_source = int8_parity_frames(model.cfg.image_size) if args.int8 else (None, None)
        bundle = export_bundle(model, args.out, verify=not args.no_verify, fp16=args.fp16, int8=args.int8,
                               int8_frames=int8_frames, int8_frames_source=int8_source,
                               source={"checkpoint": str(ckpt), "checkpoint_sha256": file_sha256(ckpt)})
        folder = args.out
        if args.serving:
            from ..export.batch_encoder import add_batch_encoder

            bundle = add_batch_encoder(model, folder, verify=not args.no_verify)
        print(f"wrote {folder}: {', '.join(bundle.files.values())}")
        if "parity" in bundle.source:
            print("ONNX Runtime vs torch: " + json.dumps(bundle.source["parity"]))
    if args.int8:
        print("int8 vs fp32: " + json.dumps(bundle.int8["parity"]))
    if args.tensorrt:
        from ..export.tensorrt_build import build_bundle_plans

        section = build_bundle_plans(folder, fp16=args.fp16)
        print(f"TensorRT plans for {section['tag']['gpu']} (TensorRT {section['tag']['tensorrt']}): "
              + ", ".join(v for k, v in section.items() if k.startswith("plan_")))
    return 0


ROLES = ("encoder", "decoder_text", "decoder_refine")
#: the files an export may write into --out (graphs of each precision, TensorRT plans and their tags)
WRITTEN = ("bundle.json", "timing.cache", *(f"{r}{s}.onnx" for r in ROLES for s in ("", "_fp16", "_int8")),
           *(f"{r}{s}.plan{t}" for r in ROLES for s in ("", "_fp16") for t in ("", ".json")))


def check_out_folder(args: argparse.Namespace) -> None:
    """``--out`` must be a folder (or not exist yet) and none of the files the export writes there may be one of
    its inputs (the checkpoint, its base weights)."""
    from ..train.outputs import OutputPathError, check_not_inputs
    from ._inputs import checkpoint_inputs, folder_files

    out = Path(args.out)
    inputs = {**checkpoint_inputs(args.checkpoint), "--sam-checkpoint": args.sam_checkpoint,
              "--biomedclip-dir": folder_files(args.biomedclip_dir)}
    check_not_inputs({"--out": out}, inputs)
    if out.exists() and not out.is_dir():
        raise OutputPathError(f"--out {out} is a file, not a folder; give the bundle folder to write (it is created "
                              "if missing)")
    check_not_inputs([("--out", out / name) for name in WRITTEN], inputs)
def int8_parity_frames(image_size: int, per_clip: int = 6, every: int = 10) -> tuple[list, str]:
    """(frames, what they are) for the int8 parity: real EUS frames (``../shared/data/eus_clips/*.mp4``, every
    ``every``-th frame, ROI-cropped) when present, else phantom frames of the same size."""
    clips = sorted(EUS_CLIPS.glob("*.mp4")) if EUS_CLIPS.is_dir() else []
    frames: list = []
    if clips:
        from ..stream.roi import ROI
        from ..stream.sources import VideoFileSource

        roi = ROI.preset("eus800x600")
        for clip in clips:
            with VideoFileSource(clip) as src:
                taken = 0
                for i, frame in enumerate(src):
                    if i % every == 0:
                        frames.append(roi.crop(frame.image))
                        taken += 1
                        if taken == per_clip:
                            break
        if frames:
            return frames, (f"{len(frames)} real EUS frames ({', '.join(c.name for c in clips)}: every {every}th, "
                            "eus800x600 ROI)")
    from ..common.phantom import PhantomConfig, make_phantom_dataset

    n = per_clip * 3
    return ([img for img, _ in make_phantom_dataset(n, seed=11, config=PhantomConfig(height=457, width=711))],
            f"{n} phantom frames (shared EUS clips absent)")
