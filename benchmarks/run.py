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

``benchmarks`` is not a package: import this file by path (``importlib``) to call :func:`main`.
"""

from __future__ import annotations

import argparse
import datetime as _dt
import gc
import json
import math
import os
import platform
import resource
import shutil
import subprocess
import sys
import tempfile
import time
import traceback
from pathlib import Path
from typing import Any, Callable

import numpy as np

REPO = Path(__file__).resolve().parents[1]
CLIP_DIR = REPO.parent / "shared" / "data" / "eus_clips"
DEFAULT_CLIP = CLIP_DIR / "cancer_v1.mp4"
ALL_ENGINES = ("torch", "onnxruntime", "tensorrt")
ALL_MODES = ("model", "stream", "reference")
ALL_PRESETS = ("tiny", "vit_b")
TINY_SIZE = 256
SYNTH_SIZE = (711, 457)  # (width, height) of the eus800x600 ROI: synthetic frames get the same shape
# stages of the stacked bars, in pipeline order: (label, key in the row's "bars_p50_ms", colour)
BAR_STAGES = [("video decode", "video_decode", "#1f77b4"), ("queue wait (stream)", "queue_wait", "#d9d9d9"),
              ("preprocess", "preprocess", "#ff7f0e"), ("image encoder (all calls)", "encoder", "#2ca02c"),
              ("decoder passes (all)", "decoder", "#d62728"), ("postprocess", "postprocess", "#9467bd"),
              ("overlay", "overlay", "#8c564b"), ("sink write (H.264 + PNG)", "sink_write", "#e377c2")]


# ============================================================================================ small helpers
def stats(values) -> dict[str, Any]:
    """count, p50, p95, p99, mean, min, max, std of the finite values (ms); None fields when empty."""
    arr = np.asarray([float(v) for v in values if v is not None and math.isfinite(float(v))], dtype=np.float64)
    if arr.size == 0:
        return {"count": 0, "p50": None, "p95": None, "p99": None, "mean": None, "min": None, "max": None,
                "std": None}
    p50, p95, p99 = np.percentile(arr, [50, 95, 99])

    def r(x) -> float:
        return round(float(x), 4)

    return {"count": int(arr.size), "p50": r(p50), "p95": r(p95), "p99": r(p99), "mean": r(arr.mean()),
            "min": r(arr.min()), "max": r(arr.max()), "std": r(arr.std())}


def _csv(text: str | None, cast: Callable = str) -> list | None:
    if text is None:
        return None
    return [cast(t.strip()) for t in str(text).split(",") if t.strip()]


def _num(v: float | None) -> str:
    if v is None or (isinstance(v, float) and not math.isfinite(v)):
        return "-"
    v = float(v)
    if abs(v) >= 100:
        return f"{v:.0f}"
    if abs(v) >= 10:
        return f"{v:.1f}"
    return f"{v:.2f}"


def _triple(st: dict | None) -> str:
    if not st or not st.get("count"):
        return "-"
    return f"{_num(st['p50'])} / {_num(st['p95'])} / {_num(st['p99'])}"


def _round_list(values, nd: int = 3) -> list:
    return [None if v is None else round(float(v), nd) for v in values]


# ============================================================================================ memory
def _proc_status() -> dict[str, float]:
    """VmRSS / VmHWM of this process in MB (Linux), empty elsewhere."""
    out = {}
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith(("VmRSS:", "VmHWM:")):
                key, val = line.split(":", 1)
                out[key] = int(val.split()[0]) / 1024.0
    except OSError:
        pass
    return out


def reset_peak_rss() -> bool:
    """Reset the kernel's peak-RSS mark (VmHWM) for this process; False where that is not possible."""
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        return True
    except OSError:
        return False


def ru_maxrss_mb() -> float:
    r = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return r / (1024.0 * 1024.0) if sys.platform == "darwin" else r / 1024.0  # bytes on macOS, KiB on Linux


# ============================================================================================ machine info
def _read(path: str) -> str:
    try:
        return Path(path).read_text()
    except OSError:
        return ""


def git_commit(repo: Path = REPO) -> dict[str, Any]:
    """The checked-out commit, read from the .git folder (no git process is started)."""
    git = repo / ".git"
    try:
        if git.is_file():  # a worktree / submodule: "gitdir: PATH"
            git = (repo / git.read_text().split(":", 1)[1].strip()).resolve()
        head = (git / "HEAD").read_text().strip()
        if not head.startswith("ref:"):
            return {"commit": head, "ref": None}
        ref = head.split(":", 1)[1].strip()
        f = git / ref
        if f.is_file():
            return {"commit": f.read_text().strip(), "ref": ref}
        packed = git / "packed-refs"
        if packed.is_file():
            for line in packed.read_text().splitlines():
                parts = line.split()
                if len(parts) == 2 and parts[1] == ref:
                    return {"commit": parts[0], "ref": ref}
        return {"commit": None, "ref": ref, "note": "no commit yet on this branch"}
    except OSError:
        return {"commit": None, "ref": None, "note": "not a git checkout"}


def _version(module: str) -> str | None:
    try:
        mod = __import__(module)
    except Exception:  # noqa: BLE001 - absent or broken: reported as missing
        return None
    return str(getattr(mod, "__version__", "?"))


def machine_info(threads: int) -> dict[str, Any]:
    import torch

    cpuinfo = _read("/proc/cpuinfo")
    model = next((line.split(":", 1)[1].strip() for line in cpuinfo.splitlines() if line.startswith("model name")),
                 None) or platform.processor() or platform.machine()
    cores = set()
    phys = core = None
    for line in cpuinfo.splitlines():
        if line.startswith("physical id"):
            phys = line.split(":", 1)[1].strip()
        elif line.startswith("core id"):
            core = line.split(":", 1)[1].strip()
        elif not line.strip():
            if core is not None:
                cores.add((phys, core))
            phys = core = None
    if core is not None:
        cores.add((phys, core))
    mem = next((line.split()[1] for line in _read("/proc/meminfo").splitlines() if line.startswith("MemTotal")), None)
    try:
        affinity = len(os.sched_getaffinity(0))
    except AttributeError:
        affinity = None
    info: dict[str, Any] = {
        "cpu_model": model,
        "logical_cpus": os.cpu_count(),
        "physical_cores": len(cores) or None,
        "cpus_usable": affinity,
        "memory_gb": round(int(mem) / 1024 ** 2, 1) if mem else None,
        "loadavg_at_start": list(os.getloadavg()) if hasattr(os, "getloadavg") else None,
        "platform": platform.platform(),
        "python": platform.python_version(),
        "threads": {"requested": threads, "torch_intra_op": torch.get_num_threads(),
                    "torch_inter_op": torch.get_num_interop_threads(), "onnxruntime_intra_op": threads},
        "versions": {"torch": torch.__version__, "torch_cuda": torch.version.cuda,
                     "cudnn": (torch.backends.cudnn.version() if torch.backends.cudnn.is_available() else None)},
        "git": git_commit(),
        "cuda_available": torch.cuda.is_available(),
        "gpus": [],
        "nvidia_smi": None,
    }
    for mod in ("onnxruntime", "onnx", "av", "cv2", "numpy", "matplotlib", "tensorrt"):
        info["versions"][mod] = _version(mod)
    try:
        from importlib.metadata import version

        info["versions"]["textsam-eus"] = version("textsam-eus")
    except Exception:  # noqa: BLE001
        info["versions"]["textsam-eus"] = None
    try:
        import onnxruntime as ort

        info["onnxruntime_providers"] = ort.get_available_providers()
    except ImportError:
        info["onnxruntime_providers"] = None
    if torch.cuda.is_available():
        for i in range(torch.cuda.device_count()):
            p = torch.cuda.get_device_properties(i)
            info["gpus"].append({"name": p.name, "compute_capability": f"{p.major}.{p.minor}",
                                 "memory_gb": round(p.total_memory / 1024 ** 3, 1)})
    smi = shutil.which("nvidia-smi")
    if smi:
        try:
            q = subprocess.run([smi, "--query-gpu=name,driver_version,memory.total,power.limit,clocks.max.sm",
                                "--format=csv,noheader"], capture_output=True, text=True, timeout=15)
            info["nvidia_smi"] = q.stdout.strip() or q.stderr.strip()
        except (OSError, subprocess.SubprocessError) as exc:
            info["nvidia_smi"] = f"nvidia-smi failed: {exc}"
    return info


# ============================================================================================ frames
def load_frames(clip: str, n: int, seed: int) -> tuple[list[np.ndarray], dict[str, Any]]:
    """Up to ``n`` RGB frames (ROI-cropped for 800x600 screens) and a description of where they came from."""
    if clip == "synthetic":
        from textsam_eus.common.phantom import PhantomClip, PhantomConfig

        w, h = SYNTH_SIZE
        pc = PhantomClip(n, seed, config=PhantomConfig(height=h, width=w))
        frames = [np.ascontiguousarray(pc.frame(i)[0]) for i in range(n)]
        return frames, {"kind": "synthetic", "desc": f"synthetic phantom clip {w}x{h} (seed {seed})", "roi": None,
                        "frames_available": n}
    from textsam_eus.stream.roi import ROI
    from textsam_eus.stream.sources import VideoFileSource

    src = VideoFileSource(clip)
    roi = ROI.preset("eus800x600") if ROI.preset("eus800x600").fits(*src.size) else None
    frames = []
    with src:
        for f in src:
            frames.append(np.ascontiguousarray(roi.crop(f.image) if roi else f.image))
            if len(frames) >= n:
                break
    if not frames:
        raise RuntimeError(f"{clip}: no frame could be decoded")
    return frames, {"kind": "video", "desc": f"{Path(clip).name} ({src.size[0]}x{src.size[1]}, {src.codec}"
                    f"{', ROI eus800x600 ' + str(roi) if roi else ''})", "path": str(clip),
                    "roi": str(roi) if roi else None, "frames_available": src.n_frames or len(frames),
                    "size": list(src.size)}


# ============================================================================================ measuring
class CallTimer:
    """Wraps an encode/decode callable: counts calls and times each (CUDA events on GPU, else perf_counter)."""

    def __init__(self, fn: Callable, cuda: bool) -> None:
        self.fn, self.cuda = fn, cuda
        self.calls = 0
        self._events: list = []
        self._ms: list[float] = []

    def __call__(self, *args):
        self.calls += 1
        if self.cuda:
            import torch

            start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            start.record()
            out = self.fn(*args)
            end.record()
            self._events.append((start, end))
            return out
        t = time.perf_counter()
        out = self.fn(*args)
        self._ms.append((time.perf_counter() - t) * 1e3)
        return out

    def harvest(self) -> tuple[int, list[float]]:
        """(calls, per-call ms) since the last harvest."""
        if self.cuda:
            import torch

            torch.cuda.synchronize()
            self._ms = [s.elapsed_time(e) for s, e in self._events]
            self._events = []
        calls, ms = self.calls, self._ms
        self.calls, self._ms = 0, []
        return calls, ms


class Measured:
    """An engine proxy for one benchmark row: times the encoder/decoder calls of every ``segment`` and, in the
    ``reference`` mode, recomputes the image embedding before every refinement pass.

    It is what the StreamPipeline gets in the ``stream`` mode (it needs ``name``, ``info()`` and ``segment``).
    """

    def __init__(self, engine, mode: str, cuda: bool) -> None:
        self.engine, self.mode, self.cuda = engine, mode, cuda
        self.name = engine.name
        seg = engine.segmenter
        self._seg, self._orig = seg, (seg.encode, seg.decode)
        self.enc = CallTimer(seg.encode, cuda)
        self.dec = CallTimer(seg.decode, cuda)
        self.frames: list[dict[str, Any]] = []
        state: dict[str, Any] = {}

        def encode(x):
            state["x"], state["first"] = x, True
            return self.enc(x)

        def decode(emb, coords, labels):
            if mode == "reference":
                if state.get("first"):
                    state["first"] = False  # the text-only pass uses the frame's embedding
                else:  # every refinement pass: the reference recomputes the encoder on the same input
                    emb = self.enc(state["x"])
            return self.dec(emb, coords, labels)

        seg.encode, seg.decode = encode, decode

    def restore(self) -> None:
        self._seg.encode, self._seg.decode = self._orig

    def info(self) -> dict[str, Any]:
        return self.engine.info()

    def segment(self, frame, **kwargs):
        t = time.perf_counter()
        res = self.engine.segment(frame, **kwargs)
        wall = (time.perf_counter() - t) * 1e3
        n_enc, enc_ms = self.enc.harvest()
        n_dec, dec_ms = self.dec.harvest()
        self.frames.append({"wall": wall, "timings": dict(res.timings), "passes": int(res.passes),
                            "enc_calls": n_enc, "enc_ms": enc_ms, "dec_calls": n_dec, "dec_ms": dec_ms,
                            "empty": res.box is None})
        return res


def _stage_table(per_frame: list[dict[str, float]]) -> dict[str, dict]:
    keys: list[str] = []
    for t in per_frame:
        keys += [k for k in t if k not in keys]
    return {k: stats([t.get(k) for t in per_frame if t.get(k) is not None]) for k in keys}


def summarise(frames: list[dict[str, Any]], stage_frames: list[dict[str, float]], latency: list[float],
              fps: float | None) -> dict[str, Any]:
    """Row numbers from the measured (post-warm-up) frames."""
    enc_frame = [sum(f["enc_ms"]) for f in frames]
    dec_frame = [sum(f["dec_ms"]) for f in frames]
    stages = _stage_table(stage_frames)
    bars = {"encoder": stats(enc_frame)["p50"], "decoder": stats(dec_frame)["p50"]}
    for key in ("video_decode", "queue_wait", "preprocess", "postprocess", "overlay", "sink_write"):
        bars[key] = (stages.get(key) or {}).get("p50")
    n = len(frames)
    return {
        "frames_measured": n,
        "encoder_calls_per_frame": (sum(f["enc_calls"] for f in frames) / n) if n else None,
        "decoder_calls_per_frame": (sum(f["dec_calls"] for f in frames) / n) if n else None,
        "passes_per_frame": (sum(f["passes"] for f in frames) / n) if n else None,
        "frames_refinement_stopped_early": sum(1 for f in frames if f["empty"]),
        "encoder_call_ms": stats([m for f in frames for m in f["enc_ms"]]),
        "decoder_call_ms": stats([m for f in frames for m in f["dec_ms"]]),
        "encoder_frame_ms": stats(enc_frame),
        "decoder_frame_ms": stats(dec_frame),
        "stages_ms": stages,
        "latency_ms": stats(latency),
        "fps": fps,
        "bars_p50_ms": bars,
        "per_frame_ms": {"latency": _round_list(latency), "encoder": _round_list(enc_frame),
                         "decoder": _round_list(dec_frame)},
    }


def run_model_mode(proxy: Measured, frames: list[np.ndarray], warmup: int, n: int, iterations: int) -> dict:
    for i in range(warmup + n):
        proxy.segment(frames[i % len(frames)], iterations=iterations)
    measured = proxy.frames[warmup:]
    latency = [f["wall"] for f in measured]
    mean = float(np.mean(latency)) if latency else None
    stage_frames = [{**f["timings"], "segment_wall": f["wall"]} for f in measured]
    out = summarise(measured, stage_frames, latency, 1e3 / mean if mean else None)
    out["latency_definition"] = "engine.segment wall time per frame (preprocess .. postprocess)"
    out["fps_definition"] = "1000 / mean per-frame latency (one frame at a time)"
    return out


def run_stream_mode(proxy: Measured, clip_info: dict, warmup: int, n: int, iterations: int, seed: int,
                    tmp: Path) -> dict:
    from textsam_eus.stream.pipeline import PipelineConfig, StreamPipeline
    from textsam_eus.stream.roi import ROI
    from textsam_eus.stream.sources import PhantomSource, VideoFileSource

    total = warmup + n
    if clip_info["kind"] == "video":
        source = VideoFileSource(clip_info["path"])
        roi = ROI.parse(clip_info["roi"]) if clip_info.get("roi") else None
    else:
        w, h = SYNTH_SIZE
        source = PhantomSource(n_frames=total, seed=seed, width=w, height=h)
        roi = None
    done: list[float] = []
    out_dir = Path(tempfile.mkdtemp(prefix="stream-", dir=tmp))
    cfg = PipelineConfig(roi=roi, iterations=iterations, max_frames=total, masks="png", write_video=True,
                         report=False, handle_signals=False)
    try:
        with source:
            pipe = StreamPipeline(proxy, source, out_dir, cfg, progress=lambda _k: done.append(time.perf_counter()))
            summary = pipe.run()
        records = [r for r in pipe.report.records() if not r["dropped"]]
    finally:
        shutil.rmtree(out_dir, ignore_errors=True)
    measured_frames = proxy.frames[warmup:]
    measured = records[warmup:]
    stage_frames = [dict(r["stages"]) for r in measured]
    latency = [r["stages"].get("capture_to_written") for r in measured]
    fps = None
    if warmup and len(done) > warmup:
        fps = (len(done) - warmup) / (done[-1] - done[warmup - 1])
    elif summary.get("fps"):
        fps = summary["fps"]
    out = summarise(measured_frames, stage_frames, latency, fps)
    out["latency_capture_to_overlay_ms"] = stats([r["latency_ms"] for r in measured])
    # what a live source (newest-frame queue, no backlog) would see: the file reader runs ahead of the model
    out["latency_without_queue_wait_ms"] = stats([
        r["stages"]["capture_to_written"] - r["stages"].get("queue_wait", 0.0)
        for r in measured if r["stages"].get("capture_to_written")])
    out["latency_definition"] = "capture/decode of the frame -> overlay drawn and written to the sinks"
    out["fps_definition"] = "frames written per second after the warm-up frames (stages overlap in threads)"
    out["frames_requested"] = total
    out["frames_delivered"] = len(records)
    return out


# ============================================================================================ the matrix
class Bench:
    def __init__(self, args: argparse.Namespace, out: Path) -> None:
        self.args, self.out = args, out
        self.rows: list[dict[str, Any]] = []
        self.setup: list[dict[str, Any]] = []
        self.notes: list[str] = []
        self.meta: dict[str, Any] = {}
        self.t0 = time.perf_counter()
        self.tmp = Path(tempfile.mkdtemp(prefix="textsam-bench-"))
        self._bundles: dict[tuple, Path] = {}

    # ---------------------------------------------------------------- bookkeeping
    def over_budget(self) -> bool:
        b = self.args.time_budget
        return bool(b) and time.perf_counter() - self.t0 > b

    def skip(self, config: dict[str, Any], reason: str, kind: str = "unavailable") -> None:
        self.rows.append({"id": row_id(config), "status": "skipped", "skip_kind": kind, "reason": reason,
                          "config": config})
        print(f"  skipped {row_id(config)}: {reason}", flush=True)
        self.save_json()

    def timed_setup(self, what: str, fn: Callable):
        t = time.perf_counter()
        result = fn()
        s = time.perf_counter() - t
        self.setup.append({"what": what, "seconds": round(s, 3)})
        print(f"  setup: {what} took {s:.1f} s", flush=True)
        return result

    def save_json(self) -> None:
        data = {"meta": {**self.meta, "wall_s": round(time.perf_counter() - self.t0, 2)}, "notes": self.notes,
                "setup": self.setup, "rows": self.rows}
        tmp = self.out / "results.json.tmp"
        tmp.write_text(json.dumps(data, indent=1, default=str))
        tmp.replace(self.out / "results.json")

    # ---------------------------------------------------------------- models and bundles
    def build_model(self, preset: str, size: int):
        import torch

        from textsam_eus.model.registry import build_textsam

        if preset == "tiny":
            ckpt = self.args.checkpoint
            if ckpt != "random":
                from textsam_eus.model.checkpoint import CheckpointError, load_checkpoint, resolve_checkpoint

                try:
                    model, _ = load_checkpoint(ckpt)
                    return model.eval(), f"checkpoint {resolve_checkpoint(ckpt)}"
                except (CheckpointError, OSError) as exc:
                    msg = (f"tiny: checkpoint {ckpt!r} could not be loaded ({exc}); using a randomly initialised "
                           "tiny model instead (weights do not change the speed; masks differ)")
                    if msg not in self.notes:
                        self.notes.append(msg)
                        print("NOTE: " + msg, flush=True)
            torch.manual_seed(self.args.seed)
            return build_textsam("tiny").eval(), "random init (seeded)"
        torch.manual_seed(self.args.seed)
        model = build_textsam(preset, image_size=size).eval()
        return model, "random init (seeded; no SAM/BiomedCLIP weights needed: weights do not change the speed)"

    def onnx_bundle(self, key: tuple, model, fp16: bool) -> Path:
        """An ONNX bundle for ``model`` (exported once per preset/size; with fp16 graphs when asked)."""
        from textsam_eus.export.onnx_export import export_bundle

        have = self._bundles.get(key + ("onnx",))
        if have is not None and (not fp16 or (have / "encoder_fp16.onnx").is_file()):
            return have
        folder = self.tmp / f"{key[0]}-{key[1]}-onnx{'-fp16' if fp16 else ''}"
        self.timed_setup(f"ONNX export {key[0]}@{key[1]}{' (+fp16 graphs)' if fp16 else ''}",
                         lambda: export_bundle(model, folder, fp16=fp16, verify=False))
        self._bundles[key + ("onnx",)] = folder
        return folder

    def trt_bundle(self, key: tuple, model, fp16: bool) -> Path:
        from textsam_eus.export.tensorrt_build import build_bundle_plans

        k = key + ("trt", fp16)
        if k in self._bundles:
            return self._bundles[k]
        src = self.onnx_bundle(key, model, fp16)
        folder = self.tmp / f"{key[0]}-{key[1]}-trt-{'fp16' if fp16 else 'fp32'}"
        shutil.copytree(src, folder)
        self.timed_setup(f"TensorRT plans {key[0]}@{key[1]} {'fp16' if fp16 else 'fp32'}",
                         lambda: build_bundle_plans(folder, fp16=fp16, timing_cache=self.tmp / "trt-timing.cache"))
        self._bundles[k] = folder
        return folder

    def make_engine(self, engine: str, key: tuple, model, device: str, precision: str, graphs: bool):
        from textsam_eus.engines import create_engine

        if engine == "torch":
            return create_engine("torch", model=model, device=device, precision=precision, cuda_graphs=graphs)
        if engine == "onnxruntime":
            folder = self.onnx_bundle(key, model, precision == "fp16")
            return create_engine("onnxruntime", bundle=folder, device=device, precision=precision,
                                 threads=self.args.threads)
        folder = self.trt_bundle(key, model, precision == "fp16")
        return create_engine("tensorrt", bundle=folder)

    # ---------------------------------------------------------------- availability
    def unavailable(self, engine: str, device: str, precision: str, avail: dict) -> str | None:
        import torch

        if device == "cuda" and not torch.cuda.is_available():
            return (f"no CUDA GPU visible to torch {torch.__version__} (CUDA build {torch.version.cuda}); "
                    "run on an NVIDIA machine (benchmarks/gpu_check.sh)")
        ok, why = avail[engine]
        if engine == "tensorrt":
            if device == "cpu":
                return ("TensorRT runs on NVIDIA GPUs only" + ("" if ok else f"; also: {why}"))
            if not ok:
                return why
            if precision == "bf16":
                return "no bf16 TensorRT plans (exported graphs are fp32 or fp16)"
            return None
        if not ok:
            return why
        if engine == "onnxruntime":
            if precision == "bf16":
                return "the ONNX bundle has fp32 and fp16 graphs only (bf16 is a torch-engine precision)"
            if device == "cuda":
                import onnxruntime as ort

                if "CUDAExecutionProvider" not in ort.get_available_providers():
                    return (f"onnxruntime {ort.__version__} has no CUDAExecutionProvider (providers: "
                            f"{', '.join(ort.get_available_providers())}); install onnxruntime-gpu")
            elif precision == "fp16":
                return "fp16 graphs are run on CUDA only (slow or unsupported on the CPU execution provider)"
        if engine == "torch" and device == "cpu" and precision == "fp16":
            return "the torch engine runs fp16 on CUDA only (use fp32 or bf16 on the CPU)"
        return None

    # ---------------------------------------------------------------- the run
    def run(self, plans: list[dict[str, Any]], devices: list[str], frames: list[np.ndarray], clip: dict) -> None:
        import torch

        from textsam_eus.engines import available_engines

        avail = available_engines()
        self.meta["engines_available"] = {k: {"available": v[0], "reason": v[1]} for k, v in avail.items()}
        for plan in plans:
            preset = plan["preset"]
            for size in plan["sizes"]:
                key = (preset, size)
                model = None
                for device in devices:
                    frames_n, warmup = plan["frames"][device], plan["warmup"][device]
                    limit = plan["quick_limits"].get(device) or {}
                    if size not in limit.get("sizes", [size]):
                        self.skip({"preset": preset, "image_size": size, "engine": ",".join(self.args.engines),
                                   "device": device, "precision": ",".join(plan["precisions"][device]),
                                   "iterations": plan["iterations"], "mode": plan["modes"], "frames": frames_n,
                                   "warmup": warmup, "clip": clip["desc"]}, limit["why"], kind="quick")
                        continue
                    for engine in ALL_ENGINES:
                        if engine not in self.args.engines:
                            continue
                        for precision in plan["precisions"][device]:
                            for graphs in (plan["graphs"][device] if engine == "torch" else [False]):
                                base = {"preset": preset, "image_size": size, "engine": engine, "device": device,
                                        "precision": precision, "cuda_graphs": graphs, "threads": self.args.threads,
                                        "frames": frames_n, "warmup": warmup, "clip": clip["desc"]}
                                its = limit.get("iterations", plan["iterations"])
                                modes = limit.get("modes", plan["modes"])
                                why = self.unavailable(engine, device, precision, avail)
                                if why:
                                    self.skip({**base, "iterations": its, "mode": modes}, why)
                                    continue
                                if engine not in limit.get("engines", [engine]):
                                    self.skip({**base, "iterations": its, "mode": modes}, limit["why"], kind="quick")
                                    continue
                                if self.over_budget():
                                    self.skip({**base, "iterations": its, "mode": modes},
                                              f"time budget of {self.args.time_budget:.0f} s used up", kind="budget")
                                    continue
                                if model is None:
                                    model, weights = self.timed_setup(f"build model {preset}@{size}",
                                                                      lambda: self.build_model(preset, size))
                                    self.meta.setdefault("weights", {})[f"{preset}@{size}"] = weights
                                try:
                                    eng = self.timed_setup(
                                        f"engine {engine} {device} {precision}{' cuda-graphs' if graphs else ''} "
                                        f"{preset}@{size}",
                                        lambda: self.make_engine(engine, key, model, device, precision, graphs))
                                except Exception as exc:  # noqa: BLE001 - one configuration, not the run
                                    self.skip({**base, "iterations": its, "mode": modes},
                                              f"error creating the engine: {type(exc).__name__}: {exc}", kind="error")
                                    continue
                                try:
                                    for it in its:
                                        for mode in modes:
                                            self.run_row({**base, "iterations": it, "mode": mode,
                                                          "weights": self.meta["weights"][f"{preset}@{size}"]},
                                                         eng, frames, clip)
                                finally:
                                    eng.close()
                                    del eng
                                    gc.collect()
                                    if device == "cuda":
                                        torch.cuda.empty_cache()
                if model is not None:
                    del model
                    gc.collect()
        self.add_ratios()

    def run_row(self, config: dict[str, Any], engine, frames: list[np.ndarray], clip: dict) -> None:
        import torch

        rid = row_id(config)
        if self.over_budget():
            self.skip(config, f"time budget of {self.args.time_budget:.0f} s used up", kind="budget")
            return
        if config["mode"] == "stream" and clip["kind"] == "video":
            avail = int(clip.get("frames_available") or 0)
            if avail and config["warmup"] + config["frames"] > avail:
                config = {**config, "frames": max(1, avail - config["warmup"]),
                          "note": f"the clip has {avail} frames: {max(1, avail - config['warmup'])} measured"}
        cuda = config["device"] == "cuda"
        print(f"- {rid} ({config['frames']} frames + {config['warmup']} warm-up)", flush=True)
        row_reset = reset_peak_rss()
        if cuda:
            torch.cuda.synchronize()
            torch.cuda.reset_peak_memory_stats()
        proxy = Measured(engine, config["mode"], cuda)
        t = time.perf_counter()
        try:
            if config["mode"] == "stream":
                res = run_stream_mode(proxy, clip, config["warmup"], config["frames"], config["iterations"],
                                      self.args.seed, self.tmp)
            else:
                res = run_model_mode(proxy, frames, config["warmup"], config["frames"], config["iterations"])
        except Exception as exc:  # noqa: BLE001 - recorded, the run goes on
            self.rows.append({"id": rid, "status": "skipped", "skip_kind": "error",
                              "reason": f"error: {type(exc).__name__}: {exc}", "config": config,
                              "traceback": traceback.format_exc(limit=6)})
            print(f"  FAILED {rid}: {type(exc).__name__}: {exc}", flush=True)
            self.save_json()
            return
        finally:
            proxy.restore()
        status = _proc_status()
        mem = {"rss_peak_mb": status.get("VmHWM"), "rss_peak_scope": "row" if row_reset else "process",
               "rss_now_mb": status.get("VmRSS"), "ru_maxrss_mb": ru_maxrss_mb()}
        if cuda:
            mem["cuda_max_allocated_mb"] = torch.cuda.max_memory_allocated() / 2 ** 20
            mem["cuda_max_reserved_mb"] = torch.cuda.max_memory_reserved() / 2 ** 20
        row = {"id": rid, "status": "ok", "config": config, **res, "memory": mem,
               "timer": "cuda_event" if cuda else "perf_counter", "wall_s": round(time.perf_counter() - t, 3),
               "engine_info": engine.info()}
        self.rows.append(row)
        lat = row["latency_ms"]
        print(f"  total p50 {_num(lat['p50'])} ms, p95 {_num(lat['p95'])}, encoder/call p50 "
              f"{_num(row['encoder_call_ms']['p50'])} ms x {row['encoder_calls_per_frame']:.2f}, "
              f"fps {_num(row['fps'])}", flush=True)
        self.save_json()

    def add_ratios(self) -> None:
        """reference / ours for every reference row with a matching model row (same config, mode 'model')."""
        ours = {row_id({**r["config"], "mode": "model"}): r for r in self.rows
                if r["status"] == "ok" and r["config"]["mode"] == "model"}
        for r in self.rows:
            if r["status"] != "ok" or r["config"]["mode"] != "reference":
                continue
            m = ours.get(row_id({**r["config"], "mode": "model"}))
            if m is None:
                r["reference_over_ours"] = None
                continue
            ratio = {}
            for stat in ("p50", "mean"):
                a, b = r["latency_ms"][stat], m["latency_ms"][stat]
                ratio[stat] = a / b if a and b else None
            r["reference_over_ours"] = ratio
            r["ours_id"] = m["id"]


def row_id(c: dict[str, Any]) -> str:
    def j(v):
        return ",".join(str(x) for x in v) if isinstance(v, (list, tuple)) else str(v)

    return (f"{c['preset']}@{c['image_size']}/{c['engine']}/{c['device']}/{c['precision']}"
            f"{'/graphs' if c.get('cuda_graphs') else ''}/it{j(c['iterations'])}/{j(c['mode'])}")


# ============================================================================================ reports
def _short(c: dict[str, Any]) -> str:
    return (f"{c['preset']}@{c['image_size']} {c['engine']} {c['device']} {c['precision']}"
            f"{' graphs' if c.get('cuda_graphs') else ''} it{c['iterations']} {c['mode']}")


def write_markdown(path: Path, data: dict[str, Any]) -> str:
    meta, rows = data["meta"], data["rows"]
    m = meta["machine"]
    ok = [r for r in rows if r["status"] == "ok"]
    skipped = [r for r in rows if r["status"] != "ok"]
    gpus = ", ".join(g["name"] for g in m["gpus"]) or "none"
    lines = [f"# TextSAM-EUS latency benchmark ({meta['started']})", "",
             f"- command: `{meta['command']}`",
             f"- machine: {m['cpu_model']}, {m['logical_cpus']} logical CPUs ({m['physical_cores']} physical cores), "
             f"{m['memory_gb']} GB; GPU: {gpus}" + (f" ({m['nvidia_smi']})" if m.get("nvidia_smi") else ""),
             f"- load average at start: {', '.join(f'{x:.2f}' for x in m['loadavg_at_start'] or [])}",
             f"- threads: torch intra-op {m['threads']['torch_intra_op']}, onnxruntime intra-op "
             f"{m['threads']['onnxruntime_intra_op']}",
             "- versions: " + ", ".join(f"{k} {v}" for k, v in m["versions"].items() if v),
             f"- commit: {m['git'].get('commit') or 'unknown'}",
             f"- frames: {meta['clip']}; warm-up frames excluded; timer: "
             f"{'CUDA events' if any(r.get('timer') == 'cuda_event' for r in ok) else 'perf_counter'} for "
             "encoder/decoder calls",
             "- weights: " + "; ".join(f"{k}: {v}" for k, v in meta.get("weights", {}).items()), ""]
    for n in data["notes"]:
        lines.append(f"> {n}")
    if data["notes"]:
        lines.append("")
    lines += ["## Latency (ms, p50 / p95 / p99)", "",
              "encoder and decoder are per call; total is per frame (model/reference: `engine.segment`; stream: "
              "decode of the frame to written outputs); fps: see the README.", "",
              "| preset | size | engine | device | prec | graphs | iters | mode | n | enc calls/frame | encoder | "
              "decoder pass | total | fps | peak RSS MB | GPU peak MB |",
              "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in ok:
        c, mem = r["config"], r["memory"]
        gpu = mem.get("cuda_max_allocated_mb")
        lines.append(
            f"| {c['preset']} | {c['image_size']} | {c['engine']} | {c['device']} | {c['precision']} | "
            f"{'yes' if c.get('cuda_graphs') else 'no'} | {c['iterations']} | {c['mode']} | {r['frames_measured']} | "
            f"{r['encoder_calls_per_frame']:.2f} | {_triple(r['encoder_call_ms'])} | {_triple(r['decoder_call_ms'])} "
            f"| {_triple(r['latency_ms'])} | {_num(r['fps'])} | {_num(mem.get('rss_peak_mb'))} | "
            f"{_num(gpu) if gpu is not None else '-'} |")
    refs = [r for r in ok if r["config"]["mode"] == "reference"]
    if refs:
        lines += ["", "## Refinement: reference (encoder per pass) vs ours (encoder once)", "",
                  "| configuration | iters | ours total p50 | reference total p50 | reference / ours (p50) | "
                  "(mean) |", "|---|---|---|---|---|---|"]
        by_id = {r["id"]: r for r in ok}
        for r in refs:
            ratio = r.get("reference_over_ours") or {}
            ours = by_id.get(r.get("ours_id", ""))
            c = r["config"]
            name = (f"{c['preset']}@{c['image_size']} {c['engine']} {c['device']} {c['precision']}"
                    f"{' graphs' if c.get('cuda_graphs') else ''}")
            r50 = f"{ratio['p50']:.2f}x" if ratio.get("p50") else "-"
            rmean = f"{ratio['mean']:.2f}x" if ratio.get("mean") else "-"
            ours50 = _num(ours["latency_ms"]["p50"]) if ours else "-"
            lines.append(f"| {name} | {c['iterations']} | {ours50} | {_num(r['latency_ms']['p50'])} | {r50} | "
                         f"{rmean} |")
    streams = [r for r in ok if r["config"]["mode"] == "stream"]
    if streams:
        stage_keys = ["video_decode", "queue_wait", "preprocess", "encode", "decode_0", "postprocess", "overlay",
                      "sink_write"]
        lines += ["", "## Stream mode: per-stage p50 (ms)", "",
                  "end-to-end: decode of a frame to its outputs written, including the wait in the frame queue "
                  "(the file reader runs ahead of the model); without queue wait: the same minus that wait.", "",
                  "| configuration | " + " | ".join(stage_keys) + " | decoder (all passes) | end-to-end p50 / p95 / "
                  "p99 | without queue wait p50 / p95 / p99 | fps |", "|---" * (len(stage_keys) + 5) + "|"]
        for r in streams:
            st = r["stages_ms"]
            cells = [_num((st.get(k) or {}).get("p50")) for k in stage_keys]
            lines.append(f"| {_short(r['config'])} | " + " | ".join(cells) +
                         f" | {_num(r['decoder_frame_ms']['p50'])} | {_triple(r['latency_ms'])} | "
                         f"{_triple(r.get('latency_without_queue_wait_ms'))} | {_num(r['fps'])} |")
    if skipped:
        lines += ["", "## Skipped configurations", "", "| configuration | reason |", "|---|---|"]
        for r in skipped:
            reason = str(r["reason"]).replace("|", "\\|").replace("\n", " ")
            lines.append(f"| {r['id']} | {reason} |")
    if data["setup"]:
        lines += ["", "## Setup times (not in the latencies)", "", "| step | s |", "|---|---|"]
        lines += [f"| {s['what']} | {s['seconds']:.1f} |" for s in data["setup"]]
    text = "\n".join(lines) + "\n"
    path.write_text(text)
    return text


def write_plot(path: Path, rows: list[dict[str, Any]]) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    ok = [r for r in rows if r["status"] == "ok"]
    presets = [p for p in ALL_PRESETS if any(r["config"]["preset"] == p for r in ok)] or ["none"]
    heights = [max(1, sum(1 for r in ok if r["config"]["preset"] == p)) for p in presets]
    fig, axes = plt.subplots(len(presets), 1, figsize=(12.5, 1.6 * len(presets) + 0.26 * sum(heights)),
                             gridspec_kw={"height_ratios": [h + 2 for h in heights]}, squeeze=False)
    for ax, preset in zip(axes[:, 0], presets):
        sel = [r for r in ok if r["config"]["preset"] == preset]
        if not sel:
            ax.text(0.5, 0.5, "no measured configuration", ha="center", va="center")
            ax.set_axis_off()
            continue
        y = np.arange(len(sel))[::-1]
        left = np.zeros(len(sel))
        for label, key, color in BAR_STAGES:
            vals = np.array([r["bars_p50_ms"].get(key) or 0.0 for r in sel])
            if not vals.any():
                continue
            ax.barh(y, vals, left=left, color=color, label=label, height=0.75)
            left += vals
        tot = [r["latency_ms"]["p50"] or 0.0 for r in sel]
        ax.plot(tot, y, "k|", markersize=12, markeredgewidth=2, label="end-to-end p50")
        for yi, t in zip(y, tot):
            ax.text(t, yi, f"  {_num(t)}", va="center", fontsize=7)
        ax.set_yticks(y)
        ax.set_yticklabels([_short(r["config"]).split(" ", 1)[1] for r in sel], fontsize=7)
        ax.set_xlabel("ms per frame (p50 of each stage, stacked)")
        sizes = sorted({r["config"]["image_size"] for r in sel})
        ax.set_title(f"{preset} (input {', '.join(map(str, sizes))})", fontsize=10)
        ax.set_xlim(0, max(max(tot), float(left.max())) * 1.15 or 1)
        ax.grid(axis="x", alpha=0.3)
        ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1.0), borderaxespad=0)
    fig.suptitle("TextSAM-EUS per-stage latency (p50); reference: encoder recomputed per refinement pass",
                 fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=80)
    plt.close(fig)


# ============================================================================================ CLI
def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="benchmarks/run.py", description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--quick", action="store_true",
                   help="short run (< 3 min on 2 CPU cores): tiny full matrix with few frames; vit_b on the CPU only "
                        "at 512, torch engine, iterations 2, modes model+reference, 3 frames")
    p.add_argument("--out", default=None, help="output folder (default benchmarks/results/<timestamp>)")
    p.add_argument("--engines", default=",".join(ALL_ENGINES), help="comma list of torch,onnxruntime,tensorrt")
    p.add_argument("--presets", default=",".join(ALL_PRESETS), help="comma list of tiny,vit_b")
    p.add_argument("--sizes", default=None,
                   help="vit_b encoder input sizes (default 1024,512; --quick on CPU: 512); tiny is always 256")
    p.add_argument("--iterations", default=None, help="refinement iterations (default 0,1,2)")
    p.add_argument("--modes", default=None, help="comma list of model,stream,reference (default all)")
    p.add_argument("--frames", type=int, default=None, help="measured frames per configuration (after warm-up)")
    p.add_argument("--warmup", type=int, default=None, help="warm-up frames per configuration (excluded)")
    p.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"],
                   help="auto: cpu, plus cuda when torch sees a GPU")
    p.add_argument("--precisions", default=None,
                   help="comma list of fp32,fp16,bf16 (default: fp32 on cpu; fp32,fp16,bf16 on cuda)")
    p.add_argument("--cuda-graphs", default="both", choices=["off", "on", "both"],
                   help="torch engine on cuda: without/with CUDA graphs (default both)")
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


def make_plans(args: argparse.Namespace, devices: list[str]) -> tuple[list[dict[str, Any]], list[str]]:
    notes = []
    plans = []
    user_its = _csv(args.iterations, int)
    user_modes = _csv(args.modes)
    user_sizes = _csv(args.sizes, int)
    user_prec = _csv(args.precisions)
    graphs = {"off": [False], "on": [True], "both": [False, True]}[args.cuda_graphs]
    for m in user_modes or []:
        if m not in ALL_MODES:
            raise ValueError(f"unknown mode {m!r}: choose from {', '.join(ALL_MODES)}")
    for preset in args.presets:
        if preset not in ALL_PRESETS:
            raise ValueError(f"unknown preset {preset!r}: choose from {', '.join(ALL_PRESETS)}")
        plan: dict[str, Any] = {"preset": preset, "quick_limits": {}, "frames": {}, "warmup": {}, "precisions": {},
                                "graphs": {}}
        if preset == "tiny":
            plan["sizes"] = [TINY_SIZE]
        else:  # only the CPU would run vit_b: --quick does not even list 1024
            plan["sizes"] = user_sizes or ([512] if args.quick and devices == ["cpu"] else [1024, 512])
        plan["iterations"] = user_its if user_its is not None else [0, 1, 2]
        plan["modes"] = user_modes or list(ALL_MODES)
        if preset == "vit_b" and args.quick:
            # ViT-B takes seconds per frame on a small CPU: --quick keeps one size, one iteration count, torch
            limit: dict[str, Any] = {"why": "--quick on CPU: vit_b runs at 512 only, on the torch engine only (ONNX "
                                            "export + session setup of ViT-B take ~25 s at 512 on 2 cores, more "
                                            "at 1024), iterations 2, modes model+reference; run without --quick "
                                            "for the rest"}
            if user_sizes is None:
                limit["sizes"] = [512]
            if user_its is None:
                limit["iterations"] = [2]
            if user_modes is None:
                limit["modes"] = ["model", "reference"]
            if args.engines_default:
                limit["engines"] = ["torch"]
            if "cpu" in devices:
                plan["quick_limits"]["cpu"] = limit
                notes.append("--quick on CPU: vit_b at 512 only, torch engine, iterations 2, modes model+reference, "
                             "3 frames (ViT-B takes seconds per frame on a small CPU); the full run adds 1024, "
                             "onnxruntime, iterations 0/1 and stream")
            if "cuda" in devices and args.engines_default:
                plan["quick_limits"]["cuda"] = {
                    "engines": ["torch"], "why": "--quick: vit_b runs on the torch engine only (exporting ViT-B and "
                                                 "building its TensorRT plans would use up the quick time budget)"}
                notes.append("--quick on CUDA: vit_b on the torch engine only")
        for d in devices:
            if args.frames is not None:
                plan["frames"][d] = args.frames
            elif preset == "tiny":
                plan["frames"][d] = 12 if args.quick else 50
            elif d == "cpu":
                plan["frames"][d] = 3 if args.quick else 5
            else:
                plan["frames"][d] = 10 if args.quick else 30
            if args.warmup is not None:
                plan["warmup"][d] = args.warmup
            elif preset == "vit_b" and d == "cpu":
                plan["warmup"][d] = 1
            else:
                plan["warmup"][d] = 3 if args.quick else 5
            plan["precisions"][d] = user_prec or (["fp32"] if d == "cpu" else ["fp32", "fp16", "bf16"])
            plan["graphs"][d] = graphs if d == "cuda" else [False]
        plans.append(plan)
    return plans, notes


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    args.engines_default = args.engines == ",".join(ALL_ENGINES)
    args.engines = _csv(args.engines)
    args.presets = _csv(args.presets)
    for e in args.engines:
        if e not in ALL_ENGINES:
            parser.error(f"unknown engine {e!r}: choose from {', '.join(ALL_ENGINES)}")
    if args.threads is None:
        args.threads = os.cpu_count() or 1
    if args.quick and args.time_budget is None:
        args.time_budget = 170.0
    started = _dt.datetime.now()
    out = Path(args.out) if args.out else REPO / "benchmarks" / "results" / started.strftime("%Y%m%d-%H%M%S")
    out.mkdir(parents=True, exist_ok=True)

    import torch

    old_threads = torch.get_num_threads()
    torch.set_num_threads(args.threads)
    try:
        return _run(args, out, started)
    finally:
        torch.set_num_threads(old_threads)


def _run(args: argparse.Namespace, out: Path, started: _dt.datetime) -> int:
    import torch

    cuda = torch.cuda.is_available()
    devices = {"auto": ["cpu"] + (["cuda"] if cuda else []), "cpu": ["cpu"], "cuda": ["cuda"]}[args.device]
    try:
        plans, plan_notes = make_plans(args, devices)
    except ValueError as exc:
        print(f"benchmarks/run.py: error: {exc}", file=sys.stderr)
        return 2
    bench = Bench(args, out)
    machine = machine_info(args.threads)
    bench.meta = {"started": started.isoformat(timespec="seconds"), "command": " ".join(
        ["python benchmarks/run.py"] + (sys.argv[1:] if Path(sys.argv[0]).name == "run.py" else ["(in-process)"])),
        "args": {k: v for k, v in vars(args).items()}, "machine": machine, "devices": devices}
    bench.notes += plan_notes
    load = machine["loadavg_at_start"]
    if load and load[0] > 0.5 * (os.cpu_count() or 1):
        bench.notes.append(
            f"the CPU was busy when the run started (1-min load average {load[0]:.2f} on {os.cpu_count()} logical "
            "CPUs): timings are pessimistic and noisy. With other processes on every core, torch's OpenMP threads "
            "can be slowed down many times over; compare with --threads 1.")
    if args.device == "auto" and not cuda:
        bench.notes.append("no CUDA GPU visible: CPU only (cuda rows are not part of the matrix; --device cuda lists "
                           "them as skipped)")
    # frames
    clip = args.clip
    if clip is None:
        clip = str(DEFAULT_CLIP) if DEFAULT_CLIP.is_file() else "synthetic"
        if clip == "synthetic":
            bench.notes.append(f"{DEFAULT_CLIP} is absent: frames come from a synthetic phantom clip")
    need = max([p["warmup"][d] + p["frames"][d] for p in plans for d in devices] + [1])
    try:
        frames, clip_info = load_frames(clip, min(need, 60), args.seed)
    except Exception as exc:  # noqa: BLE001
        print(f"benchmarks/run.py: error: cannot read frames from {clip}: {exc}", file=sys.stderr)
        return 2
    bench.meta["clip"] = clip_info["desc"]
    bench.meta["clip_info"] = clip_info
    print(f"benchmark -> {out}\n  machine: {machine['cpu_model']}, {machine['logical_cpus']} CPUs, GPU "
          f"{', '.join(g['name'] for g in machine['gpus']) or 'none'}; threads {args.threads}; frames: "
          f"{clip_info['desc']}", flush=True)
    for n in bench.notes:
        print("NOTE: " + n, flush=True)
    bench.save_json()
    try:
        bench.run(plans, devices, frames, clip_info)
    finally:
        shutil.rmtree(bench.tmp, ignore_errors=True)
        bench.meta["finished"] = _dt.datetime.now().isoformat(timespec="seconds")
        bench.meta["loadavg_at_end"] = list(os.getloadavg()) if hasattr(os, "getloadavg") else None
        bench.save_json()
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
