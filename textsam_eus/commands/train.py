"""``textsam-eus train``: train on your data (and/or the synthetic phantom), patient-wise splits."""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

from ..core.errors import OptionError
from ._args import TRAIN_VIDEO_FLAGS, add_data_arguments, check_held_out_videos, negative_options

MODEL_FLAGS = {  # CLI flag -> config field (ablations from config)
    "lora_rank": int, "lora_alpha": float, "n_ctx": int, "prompt_depth": int, "image_size": int,
    "patch_size": int, "finetune": str, "class_name": str, "sam_checkpoint": str, "biomedclip_dir": str,
    "refine_iterations": int, "resize": str,
}


def add_model_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--preset", default="vit_b", help="model preset: vit_b (the paper) or tiny")
    for name, typ in MODEL_FLAGS.items():
        p.add_argument("--" + name.replace("_", "-"), type=typ, default=None, dest=name,
                       help=f"override the preset's {name}")


def model_overrides(args: argparse.Namespace) -> dict:
    return {k: getattr(args, k) for k in MODEL_FLAGS if getattr(args, k, None) is not None}


def load_splits(args: argparse.Namespace) -> dict[str, list]:
    """{'train', 'val', 'calibration', 'test'}: lists of (image, mask) pairs, split by case (the lesion-free images
    by group into train / calibration / test with --negative-split); 'val_groups' names the kind of each
    validation pair, 'parts' counts the data images of each part."""
    from ..common.phantom import PhantomConfig, make_phantom_dataset
    from ..train.negative_split import part_counts
    from ..train.splits import split_samples

    splits = split_samples(args.data, args.split, args.val_fraction, args.test_fraction, args.split_seed,
                           **negative_options(args))
    from ..train.readers import SegmentationDataset

    out = {k: list(SegmentationDataset(v)) if v else [] for k, v in splits.items()}
    out["parts"] = part_counts(splits)
    k = getattr(args, "negative_variants", 0)
    if k:  # varied copies of the data's lesion-free images, in their own part (never in val: it picks the epoch)
        from ..train.negative_variants import negative_variants

        train_variants = negative_variants(out["train"], k, seed=5000 + args.split_seed)
        out["train"] += train_variants
        out["calibration_variants"] = negative_variants(out["val"] + out["calibration"], k,
                                                        seed=6000 + args.split_seed)
        out["parts"]["train"]["variants"] = len(train_variants)
        out["parts"]["calibration"]["variants"] = len(out["calibration_variants"])
    # what each validation image is, so the presence threshold is calibrated on every kind of negative
    groups = ["data"] * len(out["val"])
    pcfg = PhantomConfig(height=args.phantom_size, width=args.phantom_size)
    if args.phantom:
        seed = 1000 + args.split_seed if getattr(args, "phantom_seed", None) is None else args.phantom_seed
        out["train"] += make_phantom_dataset(args.phantom, seed=seed, config=pcfg)
    if args.phantom_val:
        out["val"] += make_phantom_dataset(args.phantom_val, seed=2000 + args.split_seed, config=pcfg)
        groups += ["phantom"] * args.phantom_val
    from ..train.video_labels import phantom_negatives, video_negatives, video_positives

    tail = getattr(args, "video_val_tail", 0.0)
    if not 0 <= tail < 1:
        raise OptionError(f"--video-val-tail {tail} is invalid: give a fraction in [0, 1), e.g. 0.3")
    for read, videos in ((video_negatives, getattr(args, "negative_video", [])),
                         (video_positives, getattr(args, "positive_video", []))):
        for v in videos:
            frames = read(v, every=args.video_every)
            cut = len(frames) - int(round(len(frames) * tail))
            out["train"] += frames[:cut]
            out["val"] += frames[cut:]
            groups += [f"video:{Path(v).name}"] * (len(frames) - cut)
    for read, videos in ((video_negatives, getattr(args, "val_negative_video", [])),
                         (video_positives, getattr(args, "val_positive_video", []))):
        for v in videos:
            frames = read(v, every=args.video_every)
            out["val"] += frames
            groups += [f"video:{Path(v).name}"] * len(frames)
    out["calibration_videos"], out["calibration_video_groups"] = [], []
    for v in getattr(args, "calibration_negative_video", []):
        frames = video_negatives(v, every=args.video_every)
        out["calibration_videos"] += frames
        out["calibration_video_groups"] += [f"video:{Path(v).name}"] * len(frames)
    if getattr(args, "phantom_negatives", 0):
        out["train"] += phantom_negatives(args.phantom_negatives, 3000 + args.split_seed, args.phantom_size)
    if getattr(args, "phantom_val_negatives", 0):
        out["val"] += phantom_negatives(args.phantom_val_negatives, 4000 + args.split_seed, args.phantom_size)
        groups += ["phantom"] * args.phantom_val_negatives
    out["val_groups"] = groups
    return out


VARIANT_GROUP = "variants"  # calibration pairs made by --negative-variants (not counted as calibration negatives)


def calibration_set(splits: dict) -> tuple[list, list[str]]:
    """The pairs the presence threshold is fitted on, and the kind of each: the validation pairs (lesion images,
    videos' and phantom frames; never trained on) and the calibration part's lesion-free images."""
    pairs = list(splits["val"]) + list(splits.get("calibration", []))
    groups = list(splits.get("val_groups") or ["data"] * len(splits["val"]))
    groups += ["data"] * len(splits.get("calibration", []))
    pairs += list(splits.get("calibration_videos", []))  # --calibration-negative-video: each its own group
    groups += list(splits.get("calibration_video_groups", []))
    variants = list(splits.get("calibration_variants", []))  # --negative-variants: a group of their own
    return pairs + variants, groups + [VARIANT_GROUP] * len(variants)


def add_arguments(p: argparse.ArgumentParser) -> None:
    add_model_arguments(p)
    add_data_arguments(p)
    p.add_argument("--out", required=True, help="output folder (checkpoints, logs)")
    p.add_argument("--epochs", type=int, default=5)
    p.add_argument("--batch-size", type=int, default=1)
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--weight-decay", type=float, default=0.01)
    p.add_argument("--warmup-steps", type=int, default=0)
    p.add_argument("--min-lr-ratio", type=float, default=0.0, help="cosine floor as a fraction of --lr")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--augment", action="store_true", help="ultrasound augmentation (gain, speckle, small affine)")
    p.add_argument("--negative-variants", type=int, default=0, metavar="K",
                   help="more negatives: K varied copies of each lesion-free image of --data in the train and "
                        "calibration parts (gain, depth/zoom, speckle, sector shape and position, scanner text and "
                        "graphics); the threshold must hold on them too (default: 0)")
    p.add_argument("--train-refinement", type=float, default=0.0,
                   help="probability of training steps with GT box+centroid prompts (0: the paper)")
    p.add_argument("--iou-loss-weight", type=float, default=0.0,
                   help="also train the IoU head (MSE to the real IoU, as SAM does); 0: the paper's Dice + BCE only")
    p.add_argument("--negative-mask-weight", type=float, default=1.0,
                   help="weight of the mask loss on lesion-free images (1: as on lesion images; lower keeps the mask "
                        "head outlining and leaves the decision to the presence score)")
    p.add_argument("--weak-presence-target", type=float, default=0.5,
                   help="frames of --positive-video recordings: the presence score is pushed to at least this")
    p.add_argument("--device", default="auto")
    p.add_argument("--no-amp", action="store_true")
    p.add_argument("--workers", type=int, default=0)
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: all cores)")
    p.add_argument("--max-steps-per-epoch", type=int, default=None)
    p.add_argument("--resume", action="store_true", help="continue the run in OUT (last.safetensors + train_state.pt)")
    p.add_argument("--overwrite", action="store_true",
                   help="OUT holds an earlier run: start over (its files are removed, other files are kept)")
    p.add_argument("--init", default=None, help="start from this checkpoint's weights (fine-tuning; a new schedule)")
    p.add_argument("--half-frozen", action="store_true", help="store frozen tensors in fp16 (smaller files)")
    p.add_argument("--presence-specificity", type=float, default=0.9,
                   help="calibrate the presence threshold on validation (and the calibration part of "
                        "--negative-split): the most sensitive one that keeps this share of their lesion-free images "
                        "below it (needs negatives there; fewer than 100 get a warning)")
    p.add_argument("--no-progress", action="store_true")


def run(args: argparse.Namespace) -> int:
    import torch

    torch.set_num_threads(args.threads or max(1, (os.cpu_count() or 1) // int(os.environ.get("WORLD_SIZE", "1"))))
    from ..model.registry import build_textsam
    from ..train.outputs import RUN_FILES, check_not_inputs, check_run_dir
    from ..train.trainer import TrainConfig, Trainer, read_resume_files

    check_not_inputs([("--out", Path(args.out) / name) for name in RUN_FILES], train_inputs(args))
    check_run_dir(args.out, args.resume, args.overwrite)  # an earlier run is never replaced silently
    if args.resume:
        read_resume_files(args.out)  # a damaged run fails before data is read
    if args.init:
        from ..model.checkpoint import resolve_checkpoint

        resolve_checkpoint(args.init)  # a missing --init fails before data is read
    else:
        from ..model.registry import get_config

        get_config(args.preset, **model_overrides(args))  # a bad preset or field fails before data is read
    if getattr(args, "negative_split", None) is not None:
        from ..train.negative_split import parse_fractions

        parse_fractions(args.negative_split)  # a bad value fails before data is read
    check_held_out_videos(args)
    splits = load_splits(args)
    torch.manual_seed(args.seed)
    if args.init:
        from ..model.checkpoint import load_checkpoint

        model, _ = load_checkpoint(args.init, **model_overrides(args))
    else:
        model = build_textsam(args.preset, **model_overrides(args))
    cfg = TrainConfig(out=args.out, epochs=args.epochs, batch_size=args.batch_size, lr=args.lr,
                      weight_decay=args.weight_decay, warmup_steps=args.warmup_steps, min_lr_ratio=args.min_lr_ratio,
                      seed=args.seed, augment=args.augment, train_refinement=args.train_refinement,
                      iou_loss_weight=args.iou_loss_weight, negative_mask_weight=args.negative_mask_weight,
                      weak_presence_target=args.weak_presence_target,
                      amp=not args.no_amp, device=args.device,
                      num_workers=args.workers, max_steps_per_epoch=args.max_steps_per_epoch, resume=args.resume,
                      overwrite=args.overwrite,
                      progress=not args.no_progress, half_frozen=args.half_frozen,
                      extra={"data": args.data, "phantom": args.phantom, "split": args.split,
                             "init": args.init, "negative_video": [Path(v).name for v in args.negative_video],
                             "positive_video": [Path(v).name for v in args.positive_video],
                             # recordings that picked the epoch and set the threshold: not held out either
                             "val_negative_video": [Path(v).name for v in args.val_negative_video],
                             "val_positive_video": [Path(v).name for v in args.val_positive_video],
                             **_split_extra(args)})
    total, trainable = model.count_parameters()
    print(f"model {model.cfg.preset}: {trainable:,} trainable of {total:,} parameters; "
          f"train {len(splits['train'])} / val {len(splits['val'])} / test {len(splits['test'])} images", flush=True)
    import numpy as np

    n_neg = {k: sum(1 for _, m in splits.get(k, []) if m is not None and not np.asarray(m).any())
             for k in ("train", "val", "calibration", "test")}
    n_neg["calibration"] += len(splits["calibration_videos"])
    n_weak = {k: sum(1 for _, m in splits[k] if m is None) for k in ("train", "val")}
    print(f"lesion-free images: train {n_neg['train']} / val {n_neg['val']}"
          + (f" / calibration {n_neg['calibration']} / test {n_neg['test']}"
             if getattr(args, "negative_split", None) is not None or splits["calibration_videos"] else "")
          + (f"; tumour-video frames (no outline): train {n_weak['train']} / val {n_weak['val']}"
             if any(n_weak.values()) else ""), flush=True)
    cal_pairs, cal_groups = calibration_set(splits)
    warnings = _calibration_warnings(cal_pairs, cal_groups, splits.get("parts"))
    trainer = Trainer(model, splits["train"], splits["val"], cfg)
    history = trainer.fit()
    if trainer.rank == 0 and history:
        best = min(history, key=lambda r: r["val_loss"])
        presence = calibrate_best(Path(args.out) / "best.safetensors", cal_pairs, args.presence_specificity,
                                  cal_groups, parts=_parts_note(args, splits.get("parts")))
        add_to_log(Path(args.out) / "log.json", warnings=warnings, presence_calibration=presence)
        print(json.dumps({"best_epoch": best["epoch"], "best_val_loss": best["val_loss"],
                          "best_val_dice": best["val_dice"], "presence": presence,
                          "checkpoint": str(Path(args.out) / "best.safetensors")}))
    return 0


def train_inputs(args: argparse.Namespace) -> dict:
    """flag -> the files ``train`` reads (the run's own files in ``--out``, read by --resume, are outputs)."""
    from ._inputs import checkpoint_inputs, folder_files, paths

    found = {"--data": paths(args.data), "--sam-checkpoint": args.sam_checkpoint,
             "--biomedclip-dir": folder_files(args.biomedclip_dir), **checkpoint_inputs(args.init, "--init")}
    for flag in TRAIN_VIDEO_FLAGS:
        found["--" + flag.replace("_", "-")] = paths(getattr(args, flag, None))
    return found


def _split_extra(args: argparse.Namespace) -> dict:
    """The honest-calibration flags for the checkpoint's record (none when they are off, as before them)."""
    opts = negative_options(args)
    variants = getattr(args, "negative_variants", 0)
    videos = {flag: [Path(v).name for v in getattr(args, flag, None) or []]
              for flag in ("calibration_negative_video", "test_negative_video")}
    videos = {k: v for k, v in videos.items() if v}
    if opts["negative_split"] is None and not opts["lesion_free_crops"] and not variants and not videos:
        return {}
    return {**opts, "split_seed": args.split_seed, "val_fraction": args.val_fraction,
            "test_fraction": args.test_fraction, **({"negative_variants": variants} if variants else {}), **videos}


def _parts_note(args: argparse.Namespace, parts: dict | None) -> dict | None:
    if parts is None:
        return None
    return {**parts, **_split_extra(args)} if _split_extra(args) else parts


def _calibration_warnings(pairs, groups, parts: dict | None) -> list[str]:
    """The warnings about the calibration set, each printed as one line now (and kept for log.json)."""
    import numpy as np

    from ..train.calibrate import few_negatives_warning

    neg_kinds = [g for (_, m), g in zip(pairs, groups)
                 if m is not None and not np.asarray(m).any() and g != VARIANT_GROUP]  # variants: no new evidence
    data_groups = sum(p.get("negative_groups", 0) for k, p in (parts or {}).items() if k in ("val", "calibration"))
    kinds = len(set(neg_kinds) - {"data"}) + data_groups
    n_pos = sum(1 for _, m in pairs if m is None or np.asarray(m).any())
    n_var = groups.count(VARIANT_GROUP)
    if os.environ.get("RANK", "0") == "0":
        print(f"presence calibration set: {len(neg_kinds)} lesion-free image(s)"
              + (f" in {kinds} group(s)" if parts is not None else "") + f", {n_pos} with a lesion"
              + (f", {n_var} varied lesion-free copies" if n_var else "") + " (none trained on)", flush=True)
    line = few_negatives_warning(len(neg_kinds), kinds if parts is not None else None)
    if line is None:
        return []
    if os.environ.get("RANK", "0") == "0":
        print(f"warning: {line}", file=sys.stderr, flush=True)
    return [line]


def add_to_log(path: Path, **fields) -> None:
    """Add ``fields`` to the run's log.json (written whole, renamed into place)."""
    from ..core.files import write_text_atomic

    log = json.loads(path.read_text()) if path.is_file() else {}
    log.update(fields)
    write_text_atomic(path, json.dumps(log, indent=2, default=float), parents=True)


def calibrate_best(path: Path, val_pairs, min_specificity: float, groups=None, parts: dict | None = None) -> dict:
    """Calibrate the presence threshold of the checkpoint at ``path`` on the calibration pairs (the validation
    pairs and the calibration part's negatives) and store it there, with ``parts`` (the split's sizes)."""
    from ..model.checkpoint import load_checkpoint, save_checkpoint
    from ..train.calibrate import calibrate_presence

    model, extra = load_checkpoint(path)
    result = calibrate_presence(model, val_pairs, min_specificity, groups, parts=parts)
    if result.get("threshold") is None:
        print(f"notice: {result['note']}; presence stays off in {path}", flush=True)
        return result
    hyst = result.get("hysteresis") or {}
    model.cfg = model.cfg.replace(presence_threshold=round(float(result["threshold"]), 4),
                                  presence_show_frames=int(hyst.get("show_frames", model.cfg.presence_show_frames)),
                                  presence_hide_frames=int(hyst.get("hide_frames", model.cfg.presence_hide_frames)))
    save_checkpoint(model, path, extra={**extra, "presence_calibration": result})
    return result
