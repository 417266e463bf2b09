"""``textsam-eus info``: a preset's configuration and parameter counts."""

from __future__ import annotations

import argparse
import json


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--preset", default="vit_b", help="model preset (vit_b, tiny)")
    p.add_argument("--lora-rank", type=int, default=None, help="LoRA rank (default: the preset's)")
    p.add_argument("--prompt-depth", type=int, default=None,
                   help="text layers with learnt deep prompts (default: the preset's; 1 = input prompts only)")
    p.add_argument("--checkpoint", default=None, help="describe a checkpoint instead ('demo' or a path)")
    p.add_argument("--json", action="store_true", help="print JSON")


def run(args: argparse.Namespace) -> int:
    import torch

    torch.set_num_threads(max(1, min(2, torch.get_num_threads())))
    overrides = {k: getattr(args, k) for k in ("lora_rank", "prompt_depth") if getattr(args, k) is not None}
    if args.checkpoint and overrides:
        from ..core.config import ConfigError

        flags = ", ".join("--" + k.replace("_", "-") for k in overrides)
        raise ConfigError(f"{flags} describe a preset, not --checkpoint (whose values are its own); drop {flags} "
                          "or --checkpoint")
    if args.checkpoint:
        from ..model.checkpoint import load_checkpoint

        model, extra = load_checkpoint(args.checkpoint)
    else:
        from ..model.registry import build_textsam

        model, extra = build_textsam(args.preset, **overrides), {}
    total, trainable = model.count_parameters()
    cfg = model.cfg
    info = {"preset": cfg.preset, "lora_rank": cfg.lora_rank, "n_ctx": cfg.n_ctx, "prompt_depth": cfg.prompt_depth,
            "image_size": cfg.image_size, "patch_size": cfg.patch_size, "finetune": cfg.finetune, "resize": cfg.resize,
            "total_parameters": total, "trainable_parameters": trainable}
    if extra:
        info["checkpoint"] = extra
    if args.json:
        print(json.dumps(info, indent=2))
    else:
        for k, v in info.items():
            print(f"{k:22s} {v:,}" if k.endswith("_parameters") else f"{k:22s} {v}")
    return 0
