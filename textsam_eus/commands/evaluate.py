"""``textsam-eus eval``: Dice and NSD (3 px) of a checkpoint, a zero-shot SAM baseline, or a folder of masks."""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from ..core.errors import OptionError
from ._args import add_data_arguments, check_held_out_videos, negative_options


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--checkpoint", default=None, help="TextSAM-EUS checkpoint (.safetensors) or 'demo'")
    add_data_arguments(p)
    p.add_argument("--subset", choices=["test", "val", "calibration", "train", "all"], default=None,
                   help="which split to score (default: test if it has images, else val); calibration: the "
                        "lesion-free images the presence threshold was fitted on (--negative-split)")
    p.add_argument("--phantom-clips", type=int, default=0, help="add K held-out synthetic clips")
    p.add_argument("--clip-frames", type=int, default=30)
    p.add_argument("--mode", default="auto+refine",
                   help="auto, auto+refine, manual, sam-box, sam-point, predictions")
    p.add_argument("--iterations", type=int, default=2, help="refinement iterations for auto+refine")
    p.add_argument("--refine-prompts", default="box+centroid",
                   help="refinement prompts: none, box, point, box+centroid, box+5points")
    p.add_argument("--predictions", default=None, help="folder of predicted masks (mode 'predictions')")
    p.add_argument("--sam-checkpoint", default=None, help="official SAM/MedSAM .pth for the sam-* baselines")
    p.add_argument("--preset", default="vit_b", help="preset of --sam-checkpoint for the sam-* baselines")
    p.add_argument("--tolerance", type=float, default=3.0, help="NSD tolerance in pixels")
    p.add_argument("--seed", type=int, default=0, help="seed of the manual-prompt perturbation")
    p.add_argument("--device", default="cpu")
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: all cores)")
    p.add_argument("--resize", choices=["area", "bilinear"], default=None,
                   help="how frames are resized into the model (default: the checkpoint's; bilinear = PIL's, for "
                        "weights trained with the authors' code)")
    p.add_argument("--json", default=None, help="write the summary + per-image results to this file")
    p.add_argument("--csv", default=None, help="write per-image results to this file")
    p.add_argument("--overwrite", action="store_true", help="replace existing --json/--csv files")
    p.add_argument("--no-progress", action="store_true")


def _items(args, splits) -> list:
    from ..common.phantom import PhantomClip, PhantomConfig
    from ..train.evaluate import EvalItem
    from ..train.readers import DatasetError, load_pair

    has_test = splits["test"] or getattr(args, "test_negative_video", None)
    subset = args.subset or ("test" if has_test else "val")
    chosen = ([s for k in ("train", "val", "calibration", "test") for s in splits.get(k, [])] if subset == "all"
              else splits.get(subset, []))
    items = []
    for s in chosen:
        image, mask = load_pair(s)
        # a lesion-free crop of a lesion image: the image's path and the window, so ids stay unique
        crop = f"#crop={','.join(str(v) for v in s.crop)}" if isinstance(s.crop, tuple) and s.mask is None else ""
        items.append(EvalItem(id=str(s.image) + crop, case=s.case, image=image, mask=mask))
    held = {"test": ["test_negative_video"], "calibration": ["calibration_negative_video"],
            "all": ["calibration_negative_video", "test_negative_video"]}.get(subset, [])
    for flag in held:  # lesion-free recordings held out of training: each frame a negative, a case per recording
        from ..train.video_labels import video_negatives

        for v in getattr(args, flag, None) or []:
            name = Path(v).name
            for i, (image, mask) in enumerate(video_negatives(v, every=args.video_every)):
                items.append(EvalItem(id=f"{name}#frame{i}", case=f"video:{name}",
                                      image=image, mask=mask))
    pcfg = PhantomConfig(height=args.phantom_size, width=args.phantom_size)
    if args.phantom:
        from ..common.phantom import make_phantom_dataset

        for i, (image, mask) in enumerate(make_phantom_dataset(args.phantom, seed=9000 + args.seed, config=pcfg)):
            items.append(EvalItem(id=f"phantom_{i:05d}", case=f"phantom_{i:05d}", image=image, mask=mask))
    for c in range(args.phantom_clips):
        clip = PhantomClip(args.clip_frames, seed=90_000 + c, config=pcfg)
        for i, (image, mask) in enumerate(clip):
            items.append(EvalItem(id=f"clip{c:03d}_{i:04d}", case=f"clip{c:03d}", image=image, mask=mask))
    if not items:
        raise DatasetError(f"nothing to evaluate: the {subset!r} split is empty; pass --data, --subset, --phantom N "
                           "or --phantom-clips K")
    return items, subset


def _check_same_split(args: argparse.Namespace, extra: dict) -> None:
    """Warn when the checkpoint's threshold was fitted on a --negative-split that this evaluation does not repeat:
    its test part may then hold the very negatives the threshold was fitted on."""
    from ..train.splits import RECORDED_SPLIT_KEYS as keys
    from ..train.video_labels import HELD_OUT_VIDEOS, RECORDED_VIDEOS

    trained_videos = {Path(v).name for k in RECORDED_VIDEOS if k not in HELD_OUT_VIDEOS for v in extra.get(k) or []}
    reused = sorted(trained_videos & {Path(v).name for v in args.test_negative_video})
    if reused:
        print(f"warning: {', '.join(reused)} trained or calibrated this checkpoint: as a --test-negative-video it "
              "does not judge it honestly", file=sys.stderr)
    trained = {k: extra[k] for k in keys if k in extra}
    if not trained or not args.data:  # synthetic clips only: no split to repeat
        return
    from ..train.negative_split import parse_fractions

    now = {**negative_options(args), "split_seed": args.split_seed, "val_fraction": args.val_fraction,
           "test_fraction": args.test_fraction}

    def same(k):
        a, b = trained[k], now[k]
        if k == "negative_split" and a is not None and b is not None:
            return parse_fractions(a) == parse_fractions(b)
        return a == b

    differ = [f"--{k.replace('_', '-')} {trained[k]} (now {now[k]})" for k in trained if not same(k)]
    if differ:
        print(f"warning: the checkpoint's presence threshold was calibrated with {', '.join(differ)}: evaluate with "
              "the same flags, or the test part may hold images the threshold was fitted on", file=sys.stderr)


def run(args: argparse.Namespace) -> int:
    import torch

    torch.set_num_threads(args.threads or max(1, os.cpu_count() or 1))
    from ..train import evaluate as E
    from ..train.outputs import check_distinct, check_not_inputs, check_output_file
    from ..train.splits import split_samples
    from ._inputs import checkpoint_inputs, folder_files, paths

    # every output is checked before minutes of evaluation; first that none is an input (--overwrite or not)
    outputs = {"--json": args.json, "--csv": args.csv}
    uses_checkpoint = args.mode not in ("sam-box", "sam-point", "predictions")
    check_not_inputs(outputs, {**(checkpoint_inputs(args.checkpoint) if uses_checkpoint else {}),
                               "--data": paths(args.data),
                               "--predictions": [args.predictions, *folder_files(args.predictions)],
                               "--sam-checkpoint": args.sam_checkpoint,
                               "--calibration-negative-video": paths(args.calibration_negative_video),
                               "--test-negative-video": paths(args.test_negative_video)})
    if args.json:
        check_output_file(args.json, "--json", args.overwrite, "results.json")
    if args.csv:
        check_output_file(args.csv, "--csv", args.overwrite, "results.csv")
    check_distinct(outputs)
    resize = {} if args.resize is None else {"resize": args.resize}
    if args.checkpoint and uses_checkpoint:
        from ..model.checkpoint import read_checkpoint_meta

        read_checkpoint_meta(args.checkpoint)  # a missing or damaged checkpoint fails before the data are read

    if args.negative_split is not None:
        from ..train.negative_split import parse_fractions

        parse_fractions(args.negative_split)  # a bad value fails before data is read
    check_held_out_videos(args)
    splits = split_samples(args.data, args.split, args.val_fraction, args.test_fraction, args.split_seed,
                           **negative_options(args))
    existing = {k: v for k, v in outputs.items() if v and os.path.exists(v)}
    if existing:  # an output that is one of the listed images or masks (a manifest may name any file)
        check_not_inputs(existing, {"--data": [p for part in splits.values() for s in part
                                               for p in (s.image, s.mask) if p is not None]})
    items, subset = _items(args, splits)
    predictor = None
    meta = {"mode": args.mode, "subset": subset, "data": args.data, "tolerance_px": args.tolerance}
    if args.mode in ("sam-box", "sam-point"):
        if not args.sam_checkpoint:
            raise OptionError(f"mode {args.mode!r} needs --sam-checkpoint (official SAM or MedSAM ViT-B .pth)")
        from ..model.pretrained import load_sam_checkpoint
        from ..model.predictor import SamBaselinePredictor
        from ..model.registry import get_config
        from ..model.textsam import build_sam

        cfg = get_config(args.preset, **resize)
        sam = build_sam(cfg)
        load_sam_checkpoint(sam, args.sam_checkpoint, args.preset)
        predictor = SamBaselinePredictor(sam, cfg, args.device)
        meta["sam_checkpoint"] = args.sam_checkpoint
    elif args.mode != "predictions":
        if not args.checkpoint:
            raise OptionError(f"mode {args.mode!r} needs --checkpoint PATH (or 'demo')")
        from ..model.checkpoint import load_checkpoint
        from ..model.predictor import TextSamPredictor

        model, extra = load_checkpoint(args.checkpoint, map_location=args.device, **resize)
        _check_same_split(args, extra)
        predictor = TextSamPredictor(model, refine_prompts=args.refine_prompts, device=args.device)
        meta.update(checkpoint=str(args.checkpoint), iterations=args.iterations, refine_prompts=args.refine_prompts,
                    resize=model.cfg.resize)
    else:
        meta["predictions"] = args.predictions
    predict = E.make_predict_fn(args.mode, predictor, args.iterations, args.seed, args.predictions)
    records = E.evaluate(items, predict, args.tolerance, progress=not args.no_progress)
    threshold = getattr(getattr(getattr(predictor, "model", None), "cfg", None), "presence_threshold", None)
    result = E.summarize(records, presence_threshold=threshold, **meta)
    E.write_results(result, args.json, args.csv)
    print(E.format_summary(result))
    if result["n_positive"] == 0:
        print("warning: no evaluated image has a lesion: Dice/NSD only count empty predictions (1 when empty), which "
              "is no segmentation score; evaluate images with lesions", file=sys.stderr)
    for row in result["per_case"][:20]:
        print(f"  {row['case']:>24s}  n={row['n_images']:<4d} Dice {100 * row['dice']:.2f}  NSD {100 * row['nsd']:.2f}")
    if len(result["per_case"]) > 20:
        print(f"  ... {len(result['per_case'])} cases in all" + (f" (see {args.json})" if args.json else ""))
    return 0
