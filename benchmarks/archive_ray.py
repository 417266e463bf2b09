#!/usr/bin/env python
"""An archive of recordings on Ray (``textsam-eus annotate``) against the plain sequential ``stream --source FOLDER``.

    python benchmarks/archive_ray.py                 # 24 recordings, three configurations and a killed worker
    python benchmarks/archive_ray.py --copies 1 --configs seq,2x1 --no-kill --out /tmp/archive-smoke   # a smoke run

The archive: each of the real clips in ``../shared/data/eus_clips`` (800x600, 15 fps, 50 frames, H.264) remuxed
(no re-encode) ``--copies`` times into .mp4, .mkv and .ts files in turn (4 clips x 6 = 24 recordings). Every
configuration is the command a user runs, in its own process, on the shipped demo model with ``--engine``
(default onnxruntime), all outputs on (overlay, PNG masks, report.html):

* ``seq``: ``textsam-eus stream --source FOLDER`` (one process, the files one after another; on a 2-core CPU it
  segments two frames at a time with one thread each).
* ``NxT``: ``textsam-eus annotate --workers N --threads-per-worker T`` (a local Ray instance started by the
  command; N long-lived workers, one engine each). ``1x2`` segments two frames at a time inside its one worker,
  as ``seq`` does; ``2x1`` runs two files at a time.

For each: the command's wall time, frames, throughput over the wall time and over the time after the model(s)
were loaded; for Ray also its start-up (``ray.init``) and the time until the first worker had loaded the model,
each worker's own throughput (frames / its seconds on files: the figure to extrapolate a cluster from) and its
RSS after every file. ``--kill``: the 2-worker run again, one worker process killed (SIGKILL) mid-archive; every
recording must still end ``done``.

Writes ``results.json`` and ``results.md`` to ``--out`` (default ``benchmarks/results/archive-ray/``). A missing
clip folder is a skip (message, status 0). This is a benchmark: it measures, it does not pass or fail a target.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

if not __package__:  # run by path: the benchmarks package from this checkout
    _HERE = Path(__file__).resolve().parent
    sys.path[:] = [str(_HERE.parent)] + [p for p in sys.path if Path(p or ".").resolve() != _HERE]

from benchmarks.machine import git_commit, loadavg, versions  # noqa: E402
from benchmarks.recording import build_long_recording  # noqa: E402

BENCH_DIR = Path(__file__).resolve().parent
REPO = BENCH_DIR.parent
DEFAULT_CLIPS = REPO.parent / "shared" / "data" / "eus_clips"
DEFAULT_OUT = BENCH_DIR / "results" / "archive-ray"
CONTAINERS = (".mp4", ".mkv", ".ts")


def build_archive(clips: list[Path], copies: int, dest: Path) -> list[dict[str, Any]]:
    dest.mkdir(parents=True, exist_ok=True)
    made = []
    for k in range(copies):
        for j, clip in enumerate(clips):
            ext = CONTAINERS[(k * len(clips) + j) % len(CONTAINERS)]
            made.append(build_long_recording(clip, dest / f"{clip.stem}_{k:02d}{ext}", min_frames=1))
    return made


def _cli(*args: str) -> list[str]:
    return [sys.executable, "-m", "textsam_eus.cli", *args]


def _run(cmd: list[str], kill_after_done: int | None = None, out: Path | None = None) -> dict[str, Any]:
    """Run ``cmd``; with ``kill_after_done``, SIGKILL one annotate worker once that many files are done."""
    env = {**os.environ, "PYTHONPATH": str(REPO) + os.pathsep + os.environ.get("PYTHONPATH", "")}
    killed: list[int] = []
    load0 = loadavg()
    t = time.perf_counter()
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    if kill_after_done is not None:
        threading.Thread(target=_killer, args=(proc, out, kill_after_done, killed), daemon=True).start()
    text, _ = proc.communicate()
    wall = time.perf_counter() - t
    return {"cmd": cmd[2:], "rc": proc.returncode, "wall_s": round(wall, 2), "loadavg_before": load0,
            "loadavg_after": loadavg(), "killed_pids": killed, "output_tail": text[-3000:]}


def _killer(proc, out: Path, after: int, killed: list[int]) -> None:
    while proc.poll() is None:
        try:
            rows = json.loads((out / "archive.json").read_text())["examinations"]
        except (OSError, ValueError):
            rows = []
        done = [r for r in rows if r["status"] == "done"]
        if len(done) >= after:
            # a worker that finished a file is busy with the next one now: kill it mid-file
            pid = int(str(done[-1]["worker"]).split("@")[0])
            try:
                os.kill(pid, signal.SIGKILL)
                killed.append(pid)
            except ProcessLookupError:
                pass
            return
        time.sleep(0.2)


def _seq_stats(out: Path, wall: float) -> dict[str, Any]:
    summaries = [json.loads(p.read_text()) for p in sorted(out.glob("*/summary.json"))]
    frames = sum(s["frames_out"] for s in summaries)
    files_s = sum(s["wall_s"] for s in summaries)
    return {"files": len(summaries), "done": sum(1 for s in summaries if s["complete"]), "frames": frames,
            "fps_wall": round(frames / wall, 2), "fps_after_start": round(frames / files_s, 2) if files_s else None,
            "seconds_on_files": round(files_s, 2)}


def _ray_stats(out: Path, wall: float) -> dict[str, Any]:
    data = json.loads((out / "archive.json").read_text())
    rows, run = data["examinations"], data["run"]
    frames = sum(int(r["frames"] or 0) for r in rows if r["status"] == "done")
    after = (run.get("wall_s") or 0) - (run.get("workers_ready_s") or 0)
    per_worker: dict[str, dict[str, float]] = {}
    for r in rows:
        if r.get("worker") and r["status"] == "done":
            w = per_worker.setdefault(r["worker"], {"files": 0, "frames": 0, "seconds": 0.0})
            w["files"] += 1
            w["frames"] += int(r["frames"] or 0)
            w["seconds"] += float(r["wall_s"] or 0)
    for w in per_worker.values():
        w["fps"] = round(w["frames"] / w["seconds"], 2) if w["seconds"] else None
        w["seconds"] = round(w["seconds"], 2)
    rss = {k: [v for _, v in seq] for k, seq in (run.get("worker_rss_mb") or {}).items()}
    return {"files": len(rows), "counts": data["counts"], "frames": frames, "fps_wall": round(frames / wall, 2),
            "fps_after_start": round(frames / after, 2) if after > 0 else None,
            "ray_start_s": run.get("ray_start_s"), "first_worker_ready_s": run.get("workers_ready_s"),
            "driver_wall_s": run.get("wall_s"), "per_worker": per_worker, "worker_rss_mb": rss,
            "rss_growth_mb": {k: round(v[-1] - v[1], 1) for k, v in rss.items() if len(v) > 2 and None not in v},
            "notes": sorted({r["notes"] for r in rows if r.get("notes") and "died" in r["notes"]})}


def _markdown(data: dict[str, Any]) -> str:
    lines = [f"# Archive on Ray vs sequential stream ({data['archive']['recordings']} recordings, "
             f"{data['archive']['frames']} frames)", "",
             f"Machine: {data['machine']}; engine {data['engine']}; load average at the start "
             f"{data['loadavg_at_start']}. Commit {data['git'].get('commit', '?')[:12]}.", "",
             "| config | rc | wall s | frames | frames/s (wall) | frames/s (after model load) | Ray start s | "
             "first worker ready s | per-worker frames/s | worker RSS MiB after each file |",
             "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |"]
    for name, r in data["runs"].items():
        s = r.get("stats", {})
        pw = ", ".join(f"{w['fps']}" for w in (s.get("per_worker") or {}).values())
        rss = "; ".join(" ".join(f"{x:.0f}" for x in v if x is not None)
                        for v in (s.get("worker_rss_mb") or {}).values())
        lines.append(f"| {name} | {r['rc']} | {r['wall_s']} | {s.get('frames')} | {s.get('fps_wall')} | "
                     f"{s.get('fps_after_start')} | {s.get('ray_start_s', '')} | {s.get('first_worker_ready_s', '')} "
                     f"| {pw} | {rss} |")
    lines += ["", "Load averages per run (before -> after): " + "; ".join(
        f"{n} {r['loadavg_before'][0] if r['loadavg_before'] else '?'} -> "
        f"{r['loadavg_after'][0] if r['loadavg_after'] else '?'}" for n, r in data["runs"].items())]
    for name, ratio in data.get("ratios", {}).items():
        lines.append(f"- {name}: {ratio}")
    kill = data["runs"].get("kill")
    if kill:
        lines.append(f"- kill: worker pid(s) {kill['killed_pids']} killed mid-archive; counts "
                     f"{kill.get('stats', {}).get('counts')}; notes: {kill.get('stats', {}).get('notes')}")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--clips", default=str(DEFAULT_CLIPS))
    ap.add_argument("--copies", type=int, default=6, help="remuxed copies of each clip (default 6: 24 recordings)")
    ap.add_argument("--configs", default="seq,1x2,2x1", help="seq and/or NxT (workers x threads per worker)")
    ap.add_argument("--engine", default="onnxruntime")
    ap.add_argument("--no-kill", action="store_true", help="leave out the killed-worker run")
    ap.add_argument("--out", default=str(DEFAULT_OUT))
    ap.add_argument("--work", default=None, help="work folder (default: a temporary one, removed)")
    args = ap.parse_args(argv)
    clips = sorted(Path(args.clips).glob("*.mp4"))
    if not clips:
        print(f"skip: no clips in {args.clips}")
        return 0
    tmp = None if args.work else tempfile.TemporaryDirectory(prefix="archive-ray-")
    work = Path(args.work or tmp.name)
    try:
        made = build_archive(clips, args.copies, work / "archive")
        data: dict[str, Any] = {
            "machine": f"{os.cpu_count()} logical CPUs", "engine": args.engine, "loadavg_at_start": loadavg(),
            "versions": versions(), "git": git_commit(),
            "archive": {"recordings": len(made), "frames": sum(m["frames"] for m in made),
                        "clips": [c.name for c in clips], "copies": args.copies}, "runs": {}}
        common = ["--engine", args.engine, "--no-progress"]
        for cfg in [c.strip() for c in args.configs.split(",") if c.strip()]:
            out = work / f"out-{cfg}"
            if cfg == "seq":
                r = _run(_cli("stream", "--source", str(work / "archive"), "--out", str(out), *common))
                r["stats"] = _seq_stats(out, r["wall_s"])
            else:
                n, t = (int(x) for x in cfg.split("x"))
                r = _run(_cli("annotate", "--source", str(work / "archive"), "--out", str(out), "--workers", str(n),
                              "--threads-per-worker", str(t), *common))
                r["stats"] = _ray_stats(out, r["wall_s"])
            data["runs"][cfg] = r
            print(f"{cfg}: rc {r['rc']}, {r['wall_s']} s, {r['stats'].get('frames')} frames, "
                  f"{r['stats'].get('fps_wall')} frames/s (wall), {r['stats'].get('fps_after_start')} after start",
                  flush=True)
        if not args.no_kill:
            out = work / "out-kill"
            r = _run(_cli("annotate", "--source", str(work / "archive"), "--out", str(out), "--workers", "2",
                          "--threads-per-worker", "1", *common), kill_after_done=2, out=out)
            r["stats"] = _ray_stats(out, r["wall_s"])
            data["runs"]["kill"] = r
            print(f"kill: rc {r['rc']}, killed {r['killed_pids']}, counts {r['stats']['counts']}", flush=True)
        seq = data["runs"].get("seq", {}).get("stats")
        rays = {k: v["stats"] for k, v in data["runs"].items() if k not in ("seq", "kill")}
        if seq and rays:
            for basis in ("fps_wall", "fps_after_start"):
                best = max(rays, key=lambda k: rays[k][basis] or 0)
                if seq[basis] and rays[best][basis]:
                    data.setdefault("ratios", {})[f"best Ray ({best}) / seq, {basis}"] = round(
                        rays[best][basis] / seq[basis], 3)
        out_dir = Path(args.out)
        out_dir.mkdir(parents=True, exist_ok=True)
        (out_dir / "results.json").write_text(json.dumps(data, indent=2, default=str))
        md = _markdown(data)
        (out_dir / "results.md").write_text(md)
        print(md)
        return 0
    finally:
        if tmp is not None:
            tmp.cleanup()


if __name__ == "__main__":
    sys.exit(main())
