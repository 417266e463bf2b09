#!/usr/bin/env python
"""Mask parity of the GPU engines against the torch CPU engine (called by benchmarks/gpu_check.sh).

    python benchmarks/gpu_parity.py --checkpoint demo --out parity_torch.json              # torch cuda vs cpu
    python benchmarks/gpu_parity.py --checkpoint demo --bundle DIR --checks engines        # ORT / TensorRT
    python benchmarks/gpu_parity.py --make-checkpoint PATH     # a seeded random tiny checkpoint (no demo model)

Each check segments a few synthetic phantom frames (text-only pass and ``--iterations`` refinement passes) and
compares the final masks with the torch fp32 CPU engine's: the smallest per-frame IoU must be >= ``--min-iou``
(0.98). Informational checks (bf16) are reported but do not fail the run. Exit status 0 when every required check
passed, 1 otherwise. Run it by path or as ``python -m benchmarks.gpu_parity``.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
import traceback
from pathlib import Path
from typing import Any, Callable

import numpy as np

if not __package__:  # run by path: the benchmarks package from this checkout (not its modules as top-level names)
    _HERE = Path(__file__).resolve().parent
    sys.path[:] = [str(_HERE.parent)] + [p for p in sys.path if Path(p or ".").resolve() != _HERE]

from benchmarks.models import load_tiny  # noqa: E402
from textsam_eus.core.imports import is_onnxruntime_gpu_available  # noqa: E402
from textsam_eus.core.mask_metrics import mask_iou  # noqa: E402


def parity_frames(n: int, seed: int) -> list[np.ndarray]:
    """``n`` synthetic EUS frames: the ROI size of an 800x600 screen (711x457), and one square 256 frame."""
    from textsam_eus.common.phantom import PhantomConfig, make_phantom_dataset
    from textsam_eus.common.screen import EUS_DB_CROP

    w, h = EUS_DB_CROP[2:]
    big = make_phantom_dataset(max(1, n - 1), seed, PhantomConfig(height=h, width=w))
    small = make_phantom_dataset(1, seed + 1, PhantomConfig(height=256, width=256)) if n > 1 else []
    return [np.ascontiguousarray(img) for img, _ in big + small]


def load_model(checkpoint: str, seed: int = 0):
    """(model, description); a seeded random tiny model when ``checkpoint`` is 'random' or the demo is missing."""
    model, desc, note = load_tiny(checkpoint, seed, fallback="demo")
    if checkpoint != "random" and note is None:
        return model, desc
    return model, (f"{note}; " if note else "") + f"random tiny model (torch.manual_seed({seed})): a weaker check"


def masks_of(engine, frames: list[np.ndarray], iterations: int) -> dict[str, list[np.ndarray]]:
    return {f"it{it}": [engine.segment(f, iterations=it).mask for f in frames] for it in sorted({0, iterations})}


class Checker:
    def __init__(self, frames: list[np.ndarray], iterations: int, min_iou: float) -> None:
        self.frames, self.iterations, self.min_iou = frames, iterations, min_iou
        self.results: list[dict[str, Any]] = []
        self.references: dict[str, dict[str, list[np.ndarray]]] = {}

    def add(self, name: str, status: str, reason: str = "", required: bool = True, **extra) -> None:
        row = {"check": name, "status": status, "required": required, "reason": reason, **extra}
        self.results.append(row)
        print(f"{status:5} {name}" + (f" min IoU {extra['min_iou']:.4f}" if "min_iou" in extra else "")
              + (f" ({reason})" if reason else ""), flush=True)

    def compare(self, name: str, make: Callable, against: str, required: bool = True) -> None:
        """Build an engine with ``make()`` and compare its masks with the reference ``against``."""
        ref = self.references.get(against)
        if ref is None:
            self.add(name, "SKIP", f"reference {against!r} is not available", required=False)
            return
        t = time.perf_counter()
        try:
            engine = make()
            try:
                got = masks_of(engine, self.frames, self.iterations)
                info = engine.info()
            finally:
                engine.close()
        except Exception as exc:  # noqa: BLE001 - one check, not the run
            self.add(name, "FAIL" if required else "INFO", f"{type(exc).__name__}: {exc}", required=required,
                     traceback=traceback.format_exc(limit=5))
            return
        ious = {k: [mask_iou(a, b) for a, b in zip(got[k], ref[k])] for k in ref}
        worst = min(min(v) for v in ious.values())
        passed = worst >= self.min_iou
        status = "PASS" if passed else ("FAIL" if required else "INFO")
        self.add(name, status, "" if passed else f"min IoU {worst:.4f} < {self.min_iou} against {against}",
                 required=required, min_iou=worst, ious={k: [round(x, 5) for x in v] for k, v in ious.items()},
                 against=against, engine=info, seconds=round(time.perf_counter() - t, 2))
        self.references.setdefault(name, got)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="benchmarks/gpu_parity.py", description=__doc__.split("\n\n")[0])
    p.add_argument("--checkpoint", default="demo", help="'demo', 'random' or a .safetensors checkpoint")
    p.add_argument("--bundle", default=None, help="exported bundle (onnxruntime / TensorRT checks)")
    p.add_argument("--checks", default="torch,engines", help="comma list: torch (cuda vs cpu), engines (bundle)")
    p.add_argument("--frames", type=int, default=4)
    p.add_argument("--iterations", type=int, default=2)
    p.add_argument("--min-iou", type=float, default=0.98)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", default=None, help="write the results as JSON here")
    p.add_argument("--no-require-cuda", action="store_true",
                   help="report the CUDA checks as SKIP instead of FAIL when no GPU is visible")
    p.add_argument("--make-checkpoint", default=None, metavar="PATH",
                   help="only write a seeded random tiny checkpoint to PATH (for machines without the demo model)")
    args = p.parse_args(argv)

    import torch

    if args.make_checkpoint:
        from textsam_eus.model.checkpoint import save_checkpoint

        model, desc = load_model("random", args.seed)
        save_checkpoint(model, args.make_checkpoint, full=True, extra={"note": "random tiny model for gpu_check"})
        print(f"wrote {args.make_checkpoint} ({desc})")
        return 0

    from textsam_eus.engines import available_engines, create_engine

    checks = {c.strip() for c in args.checks.split(",") if c.strip()}
    model, desc = load_model(args.checkpoint, args.seed)
    print(f"model: {desc}", flush=True)
    frames = parity_frames(args.frames, args.seed)
    ck = Checker(frames, args.iterations, args.min_iou)
    cpu = create_engine("torch", model=model, device="cpu", precision="fp32")
    ck.references["torch-cpu-fp32"] = masks_of(cpu, frames, args.iterations)
    cpu.close()
    fg = [float(m.mean()) for m in ck.references["torch-cpu-fp32"][f"it{args.iterations}"]]
    weak = all(f == 0.0 for f in fg) or all(f == 1.0 for f in fg)
    cuda = torch.cuda.is_available()
    no_cuda = (f"torch {torch.__version__} sees no CUDA GPU (CUDA build {torch.version.cuda})")

    if "torch" in checks:
        variants = [("fp32", False, True), ("fp16", False, True), ("bf16", False, False), ("fp32", True, True),
                    ("fp16", True, True)]
        for prec, graphs, required in variants:
            name = f"torch-cuda-{prec}{'-graphs' if graphs else ''}"
            if not cuda:
                hard = required and not args.no_require_cuda
                ck.add(name, "FAIL" if hard else "SKIP", no_cuda, required=hard)
                continue
            ck.compare(name, lambda prec=prec, graphs=graphs: create_engine(
                "torch", model=model, device="cuda", precision=prec, cuda_graphs=graphs), "torch-cpu-fp32", required)

    if "engines" in checks:
        if not args.bundle:
            ck.add("engines", "SKIP", "no --bundle given", required=False)
        else:
            from textsam_eus.model.bundle import read_bundle

            bundle = read_bundle(args.bundle)
            avail = available_engines()
            ck.compare("onnxruntime-cpu-fp32", lambda: create_engine("onnxruntime", bundle=args.bundle, device="cpu"),
                       "torch-cpu-fp32")
            ort_cuda = bool(avail["onnxruntime"][0]) and is_onnxruntime_gpu_available()
            for prec in ("fp32", "fp16"):
                name = f"onnxruntime-cuda-{prec}"
                if not cuda or not ort_cuda:
                    ck.add(name, "SKIP", "no CUDA GPU" if not cuda else
                           "onnxruntime has no CUDAExecutionProvider (onnxruntime-gpu is not installed)",
                           required=False)
                elif prec == "fp16" and "encoder_fp16" not in bundle.files:
                    ck.add(name, "SKIP", "the bundle has no fp16 graphs (export with --fp16)", required=False)
                else:
                    ck.compare(name, lambda prec=prec: create_engine("onnxruntime", bundle=args.bundle, device="cuda",
                                                                     precision=prec), "torch-cpu-fp32")
            trt_ok, trt_why = avail["tensorrt"]
            if not trt_ok:
                ck.add("tensorrt", "SKIP", trt_why, required=False)
            elif not bundle.tensorrt:
                ck.add("tensorrt", "FAIL", f"tensorrt is importable but {args.bundle} has no TensorRT plans "
                       "(the export step with --tensorrt failed?)")
            else:
                prec = "fp16" if bundle.tensorrt.get("fp16") else "fp32"
                ck.compare(f"tensorrt-{prec}-vs-torch-cpu",
                           lambda: create_engine("tensorrt", bundle=args.bundle), "torch-cpu-fp32")
                ck.compare(f"tensorrt-{prec}-vs-onnxruntime-cpu",
                           lambda: create_engine("tensorrt", bundle=args.bundle), "onnxruntime-cpu-fp32")

    failed = [r for r in ck.results if r["status"] == "FAIL" and r["required"]]
    summary = {"model": desc, "frames": [list(f.shape) for f in frames], "iterations": args.iterations,
               "min_iou_required": args.min_iou, "reference_foreground_fraction": fg,
               "weak_check": weak, "cuda": cuda, "gpu": torch.cuda.get_device_name() if cuda else None,
               "checks": ck.results, "passed": not failed}
    if weak:
        print("WARNING: the reference masks are all empty or all full: the IoU check says little", flush=True)
    print("\n| check | status | min IoU | reason |\n|---|---|---|---|")
    for r in ck.results:
        m = f"{r['min_iou']:.4f}" if "min_iou" in r else "-"
        print(f"| {r['check']} | {r['status']}{'' if r['required'] else ' (info)'} | {m} | {r['reason']} |")
    if args.out:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(json.dumps(summary, indent=1, default=str))
    print(f"\nparity: {'PASS' if not failed else 'FAIL (' + ', '.join(r['check'] for r in failed) + ')'}")
    return 0 if not failed else 1


if __name__ == "__main__":
    sys.exit(main())
