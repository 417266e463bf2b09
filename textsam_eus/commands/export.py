"""``textsam-eus export``: deployment bundle (ONNX graphs, optional TensorRT plans, bundle.json)."""

from __future__ import annotations

import argparse
import json

from ..model.errors import OptionError


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--checkpoint", default="demo", help="TextSAM-EUS checkpoint (.safetensors) or 'demo'")
    p.add_argument("--out", required=False, help="bundle folder to write")
    p.add_argument("--bundle", default=None, help="add TensorRT plans to an existing bundle instead of exporting")
    p.add_argument("--tensorrt", action="store_true", help="also build TensorRT plans (NVIDIA GPU + tensorrt)")
    p.add_argument("--fp16", action="store_true",
                   help="also export fp16 graphs (LayerNorm/softmax in fp32) and build fp16 TensorRT plans")
    p.add_argument("--no-verify", action="store_true", help="skip the ONNX Runtime parity check")
    p.add_argument("--sam-checkpoint", default=None, help="override the checkpoint's base SAM weights path")
    p.add_argument("--biomedclip-dir", default=None, help="override the checkpoint's BiomedCLIP folder")


def run(args: argparse.Namespace) -> int:
    import torch

    torch.set_num_threads(max(1, torch.get_num_threads()))
    if args.bundle:
        folder = args.bundle
    else:
        if not args.out:
            raise OptionError("--out DIR is required (or --bundle DIR to add TensorRT plans to a bundle)")
        from ..export.onnx_export import export_bundle
        from ..model.checkpoint import load_checkpoint, resolve_checkpoint

        overrides = {k: v for k, v in (("sam_checkpoint", args.sam_checkpoint),
                                       ("biomedclip_dir", args.biomedclip_dir)) if v}
        model, _ = load_checkpoint(args.checkpoint, **overrides)
        bundle = export_bundle(model, args.out, verify=not args.no_verify, fp16=args.fp16,
                               source={"checkpoint": str(resolve_checkpoint(args.checkpoint))})
        folder = args.out
        print(f"wrote {folder}: {', '.join(bundle.files.values())}")
        if "parity" in bundle.source:
            print("ONNX Runtime vs torch: " + json.dumps(bundle.source["parity"]))
    if args.tensorrt:
        from ..export.tensorrt_build import build_bundle_plans

        section = build_bundle_plans(folder, fp16=args.fp16)
        print(f"TensorRT plans for {section['tag']['gpu']} (TensorRT {section['tag']['tensorrt']}): "
              + ", ".join(v for k, v in section.items() if k.startswith("plan_")))
    return 0
