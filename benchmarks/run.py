#!/usr/bin/env python
"""Latency benchmarks of TextSAM-EUS: per-stage and end-to-end, over engines, devices, precisions and presets.

    python benchmarks/run.py --quick                      # < 3 minutes on a small CPU
    python benchmarks/run.py                              # the full matrix (vit_b at 1024 and 512 too)
    python benchmarks/run.py --device cuda --presets vit_b --engines torch --frames 20

Modes (per configuration):

* ``model``     -- ``engine.segment`` on frames decoded beforehand: preprocess, the image encoder ONCE, the
  text-only decoder pass, ``iterations`` refinement decoder passes, postprocess.
* ``reference`` -- the same, but the image encoder is recomputed before every refinement pass (the reference
  implementation's way: each pass calls the predictor on the image again). ``reference / model`` is reported.
* ``stream``    -- the full :class:`~textsam_eus.stream.pipeline.StreamPipeline` on a clip: video decode, queue,
  the model, overlay, and the sinks (H.264 overlay video + PNG masks), threads overlapping.

Outputs in ``--out`` (default ``benchmarks/results/<timestamp>``): ``results.json`` (every number, one row per
configuration, skipped configurations with the reason), ``results.md`` (tables) and ``latency.png``.

The pieces live in the ``benchmarks`` package (``plans``: the matrix; ``runner``: running it; ``timing``,
``modes``, ``machine``, ``report``); this file is the command line: ``python benchmarks/run.py`` or, in-process,
``from benchmarks import run; run.main([...])``.
"""

from __future__ import annotations

import argparse
import datetime as _dt
import json
import os
import shutil
import sys
from pathlib import Path

if not __package__:  # run by path: the benchmarks package from this checkout (not its modules as top-level names)
    _HERE = Path(__file__).resolve().parent
    sys.path[:] = [str(_HERE.parent)] + [p for p in sys.path if Path(p or ".").resolve() != _HERE]

from benchmarks.frames import DEFAULT_CLIP, load_frames  # noqa: E402
from benchmarks.machine import REPO, busy_load, loadavg, machine_info, torch_threads  # noqa: E402
from benchmarks.plans import ENGINES, PRESETS, MatrixSpec, build_matrix  # noqa: E402
from benchmarks.report import write_markdown, write_plot  # noqa: E402
from benchmarks.runner import Bench  # noqa: E402


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="benchmarks/run.py", description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--quick", action="store_true",
                   help="short run (< 3 min on 2 CPU cores): tiny full matrix with few frames; vit_b on the CPU only "
                        "at 512, torch engine, iterations 2, modes model+reference, 3 frames")
    p.add_argument("--out", default=None, help="output folder (default benchmarks/results/<timestamp>)")
    p.add_argument("--engines", default=",".join(ENGINES), help="comma list of torch,onnxruntime,tensorrt")
    p.add_argument("--presets", default=",".join(PRESETS), help="comma list of tiny,vit_b")
    p.add_argument("--sizes", default=None,
                   help="vit_b encoder input sizes (default 1024,512; --quick on CPU: 512); tiny is always 256")
    p.add_argument("--iterations", default=None, help="refinement iterations (default 0,1,2)")
    p.add_argument("--modes", default=None, help="comma list of model,stream,reference (default all)")
    p.add_argument("--frames", type=int, default=None, help="measured frames per configuration (after warm-up)")
    p.add_argument("--warmup", type=int, default=None, help="warm-up frames per configuration (excluded)")
    p.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"],
                   help="auto: cpu, plus cuda when torch sees a GPU")
    p.add_argument("--precisions", default=None,
                   help="comma list of fp32,fp16,bf16,int8 (default: fp32 on cpu, plus int8 for onnxruntime as a "
                        "mode-model iterations-2 row against fp32; fp32,fp16,bf16 on cuda)")
    p.add_argument("--cuda-graphs", default="both", choices=["off", "on", "both"],
                   help="torch engine on cuda: without/with CUDA graphs (default both)")
    p.add_argument("--attention", default="reference,sdpa",
                   help="torch engine: image-encoder attention implementations; the engine's auto choice (sdpa on "
                        "cuda and at 1024 px on cpu, else reference) runs the full rows, the other one mode model at iterations 2, reported "
                        "as a ratio (default reference,sdpa)")
    p.add_argument("--compile", default=None, choices=["off", "on", "both"],
                   help="torch engine: also rows with torch.compile of the image encoder (mode model, iterations 2; "
                        "default both, but --quick leaves them out unless given)")
    p.add_argument("--threads", type=int, default=None,
                   help="torch intra-op and onnxruntime intra-op threads (default os.cpu_count())")
    p.add_argument("--clip", default=None,
                   help="video for the frames (default ../shared/data/eus_clips/cancer_v1.mp4 when present, "
                        "cropped with the eus800x600 ROI) or 'synthetic' for a phantom clip")
    p.add_argument("--checkpoint", default="demo",
                   help="tiny model: 'demo' (the shipped model; random init when missing), 'random', or a path")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--time-budget", type=float, default=None,
                   help="seconds; configurations not started by then are recorded as skipped (default: none; "
                        "--quick: 170)")
    return p


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        spec = MatrixSpec.from_args(args)
    except ValueError as exc:
        parser.error(str(exc))
    # results.json records the arguments as the run used them
    args.engines_default, args.engines, args.presets = spec.engines_default, list(spec.engines), list(spec.presets)
    if args.threads is None:
        args.threads = os.cpu_count() or 1
    if args.quick and args.time_budget is None:
        args.time_budget = 170.0
    started = _dt.datetime.now()
    out = Path(args.out) if args.out else REPO / "benchmarks" / "results" / started.strftime("%Y%m%d-%H%M%S")
    out.mkdir(parents=True, exist_ok=True)

    with torch_threads(args.threads):
        return _run(args, spec, out, started)


def _command() -> str:
    return " ".join(["python benchmarks/run.py"] + (sys.argv[1:] if Path(sys.argv[0]).name == "run.py"
                                                    else ["(in-process)"]))


def _start(args: argparse.Namespace, out: Path, started: _dt.datetime, devices: list[str]) -> Bench:
    """The Bench with its meta and the notes about the machine."""
    import torch

    bench = Bench(out, threads=args.threads, seed=args.seed, checkpoint=args.checkpoint,
                  time_budget=args.time_budget)
    machine = machine_info(args.threads)
    bench.meta = {"started": started.isoformat(timespec="seconds"), "command": _command(),
                  "args": dict(vars(args)), "machine": machine, "devices": devices}
    load = busy_load(machine)
    if load is not None:
        bench.notes.append(
            f"the CPU was busy when the run started (1-min load average {load:.2f} on {os.cpu_count()} logical "
            "CPUs): timings are pessimistic and noisy. With other processes on every core, torch's OpenMP threads "
            "can be slowed down many times over; compare with --threads 1.")
    if args.device == "auto" and not torch.cuda.is_available():
        bench.notes.append("no CUDA GPU visible: CPU only (cuda rows are not part of the matrix; --device cuda lists "
                           "them as skipped)")
    return bench


def _clip(args: argparse.Namespace, bench: Bench) -> str:
    if args.clip is not None:
        return args.clip
    if DEFAULT_CLIP.is_file():
        return str(DEFAULT_CLIP)
    bench.notes.append(f"{DEFAULT_CLIP} is absent: frames come from a synthetic phantom clip")
    return "synthetic"


def _run(args: argparse.Namespace, spec: MatrixSpec, out: Path, started: _dt.datetime) -> int:
    import torch

    from textsam_eus.engines import available_engines

    cuda = torch.cuda.is_available()
    devices = {"auto": ["cpu"] + (["cuda"] if cuda else []), "cpu": ["cpu"], "cuda": ["cuda"]}[args.device]
    avail = available_engines()
    plans, plan_notes = build_matrix(spec, devices, avail)
    bench = _start(args, out, started, devices)
    bench.notes += plan_notes
    clip = _clip(args, bench)
    need = max([p.warmup + p.frames for p in plans] + [1])
    try:
        frames, clip_info = load_frames(clip, min(need, 60), args.seed)
    except Exception as exc:  # noqa: BLE001
        print(f"benchmarks/run.py: error: cannot read frames from {clip}: {exc}", file=sys.stderr)
        return 2
    bench.meta.update(clip=clip_info["desc"], clip_info=clip_info,
                      engines_available={k: {"available": v[0], "reason": v[1]} for k, v in avail.items()})
    machine = bench.meta["machine"]
    print(f"benchmark -> {out}\n  machine: {machine['cpu_model']}, {machine['logical_cpus']} CPUs, GPU "
          f"{', '.join(g['name'] for g in machine['gpus']) or 'none'}; threads {args.threads}; frames: "
          f"{clip_info['desc']}", flush=True)
    for n in bench.notes:
        print("NOTE: " + n, flush=True)
    bench.save_json()
    try:
        bench.run(plans, frames, clip_info)
    finally:
        shutil.rmtree(bench.tmp, ignore_errors=True)
        bench.meta["finished"] = _dt.datetime.now().isoformat(timespec="seconds")
        bench.meta["loadavg_at_end"] = loadavg()
        bench.save_json()
    return _finish(bench, out)


def _finish(bench: Bench, out: Path) -> int:
    """results.md and latency.png from results.json; the exit status."""
    data = json.loads((out / "results.json").read_text())
    text = write_markdown(out / "results.md", data)
    try:
        write_plot(out / "latency.png", bench.rows)
    except Exception as exc:  # noqa: BLE001 - the numbers are written; the plot is a convenience
        print(f"latency.png not written: {type(exc).__name__}: {exc}", file=sys.stderr)
    print()
    print(text)
    n_ok = sum(r["status"] == "ok" for r in bench.rows)
    errors = [r["id"] for r in bench.rows if r.get("skip_kind") == "error"]
    print(f"{n_ok} configurations measured, {len(bench.rows) - n_ok} skipped; wrote {out}/results.json, "
          f"results.md, latency.png")
    if errors:
        print(f"exit status 1: {len(errors)} configuration(s) failed with an error: {', '.join(errors)}",
              file=sys.stderr)
    if not n_ok:
        print("exit status 1: no configuration could be measured (see the skipped rows)", file=sys.stderr)
    return 1 if errors or not n_ok else 0


if __name__ == "__main__":
    sys.exit(main())
