#!/usr/bin/env python
"""Many rooms, one model server: ``stream --engine triton`` rooms against one ``textsam-eus serve``.

    python benchmarks/triton_rooms.py                          # 1, 2 and 4 rooms, 600 frames each at 15 fps
    python benchmarks/triton_rooms.py --rooms 2 --frames 2000  # the 2,000-frame zero-error run

Each room is its own process (as a room's PC would be): ``textsam-eus stream --source REC.mp4 --realtime
--max-frames N --engine triton --server grpc://...`` (a live source: the newest frame wins, drops are counted), where
REC.mp4 is ``--clip`` (default: ``../shared/data/eus_clips/cancer_v1.mp4``, 800x600 at 15 fps) remuxed end to end to
N frames; ``--clip phantom`` renders the phantom in each room instead (``phantom:N --fps F``), which costs each
room ~60 ms of CPU per 480x360 frame on this 2-core machine: on one machine that rendering, not the model server,
decides how many rooms keep up, so the clip is the default. The server is
``textsam-eus serve --checkpoint C`` started from the server environment (``--serve-python``, default
``.venv-serve/bin/python``; PyTriton needs numpy < 2) with the default batching flags unless ``--server-args``.
The baseline is one room's single-process ``stream`` with the local ``--baseline-engine`` (onnxruntime) at the
same settings.

Per configuration: per-room p50/p99 capture-to-overlay latency, drops, errors (a run that did not complete),
frames out and fps, the aggregate fps (all rooms' frames / the longest wall time), the client's request round trip
and the server's time per request (p50, from ``stages_ms``), and the batches Triton formed: from its metrics
(``nv_inference_count`` / ``nv_inference_exec_count``: frames per encoder run) and from the clients' per-request
batch sizes. Targets (issue 18): 2 rooms' aggregate fps >= 0.9x the baseline's; per-room p99 <= 2 frame periods
+ one server time (p50); no errors. The one-request overhead (client + protocol) is the triton engine's
``engine_total`` minus the local engine's, both at batch size 1 (1 room).

Writes ``results.json`` and ``results.md`` to ``--out`` (default ``benchmarks/results/triton-rooms/``).
A benchmark, not a test: the numbers depend on the machine and its load (``meta`` records both).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import signal
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

if not __package__:  # run by path: the benchmarks package from this checkout
    _HERE = Path(__file__).resolve().parent
    sys.path[:] = [str(_HERE.parent)] + [p for p in sys.path if Path(p or ".").resolve() != _HERE]

from benchmarks.machine import REPO, free_ports, loadavg, machine_info  # noqa: E402

DEFAULT_OUT = REPO / "benchmarks" / "results" / "triton-rooms"
DEFAULT_CLIP = REPO.parent / "shared" / "data" / "eus_clips" / "cancer_v1.mp4"


def _metrics(port: int) -> dict[str, float]:
    text = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5).read().decode()
    out = {}
    for name in ("nv_inference_count", "nv_inference_exec_count", "nv_inference_request_success",
                 "nv_inference_request_failure", "nv_inference_queue_duration_us", "nv_inference_compute_infer_duration_us"):
        m = re.search(rf'^{name}{{[^}}]*model="textsam_eus"[^}}]*}} (\S+)$', text, re.M)
        out[name] = float(m.group(1)) if m else 0.0
    return out


def _room_cmd(args, out: Path, engine: list[str]) -> list[str]:
    if args.recording:  # a real EUS recording replayed at its own timestamps, as from a capture card
        source = ["--source", str(args.recording), "--realtime", "--max-frames", str(args.frames)]
    else:  # the phantom, rendered by the room itself (its rendering costs the room's CPU, not the model's)
        source = ["--source", f"phantom:{args.frames}", "--realtime", "--fps", str(args.fps), "--width",
                  str(args.width), "--height", str(args.height)]
    return [sys.executable, "-m", "textsam_eus.cli", "stream", *source, "--out", str(out), "--overwrite",
            "--roi", args.roi, "--no-report", "--no-progress", "--checkpoint", args.checkpoint,
            "--threads", str(args.client_threads), *engine]


def _prepare_recording(args, work: Path) -> dict | None:
    """``--clip``: remux the clip end to end into one recording of >= ``--frames`` frames (no re-encode)."""
    if args.clip in ("", "phantom"):
        args.recording = None
        return None
    clip = Path(args.clip)
    if not clip.is_file():
        raise SystemExit(f"--clip {clip}: no such file; pass a recording, or --clip phantom")
    from benchmarks.recording import build_long_recording

    info = build_long_recording(clip, work / f"rooms-{clip.stem}.mp4", args.frames)
    args.recording = Path(info["path"])
    if info.get("fps"):
        args.fps = float(info["fps"])
    return info


def _run_rooms(args, n: int, work: Path, engine: list[str], tag: str) -> list[dict]:
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": str(args.client_threads)}
    procs = []
    for i in range(n):
        out = work / f"{tag}-room{i}"
        log = open(work / f"{tag}-room{i}.log", "w")
        procs.append((out, subprocess.Popen(_room_cmd(args, out, engine), stdout=log, stderr=subprocess.STDOUT,
                                            env=env, cwd=REPO)))
    rooms = []
    for out, p in procs:
        rc = p.wait()
        try:
            s = json.loads((out / "summary.json").read_text())
        except (OSError, ValueError):
            s = {"complete": False, "stop_reason": f"no summary.json (exit {rc})"}
        lat = s.get("latency_ms") or {}
        st = s.get("stages_ms") or {}
        eng = s.get("engine") or {}
        rooms.append({"exit": rc, "complete": s.get("complete"), "stop_reason": s.get("stop_reason"),
                      "frames_in": s.get("frames_in"), "frames_out": s.get("frames_out"),
                      "dropped": s.get("frames_dropped"), "wall_s": s.get("wall_s"), "fps": s.get("fps"),
                      "latency_p50_ms": lat.get("p50"), "latency_p99_ms": lat.get("p99"),
                      "engine_total_p50_ms": (st.get("engine_total") or {}).get("p50"),
                      "request_p50_ms": (st.get("request") or {}).get("p50"),
                      "server_p50_ms": (st.get("server") or {}).get("p50"),
                      "network_p50_ms": (st.get("network") or {}).get("p50"),
                      "batch_sizes": eng.get("batch_sizes")})
    return rooms


def _aggregate(rooms: list[dict]) -> dict:
    walls = [r["wall_s"] for r in rooms if r.get("wall_s")]
    frames = sum(r.get("frames_out") or 0 for r in rooms)
    return {"frames_out": frames, "aggregate_fps": frames / max(walls) if walls else 0.0,
            "errors": sum(1 for r in rooms if not r.get("complete")),
            "worst_p99_ms": max((r["latency_p99_ms"] or 0) for r in rooms) if rooms else None}


def _start_server(args, work: Path) -> tuple[subprocess.Popen, int, int]:
    grpc, http, metrics = free_ports(3)
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": str(args.server_threads)}
    log = open(work / "server.log", "w")
    p = subprocess.Popen([args.serve_python, "-m", "textsam_eus.cli", "serve", "--checkpoint", args.checkpoint,
                          "--grpc-port", str(grpc), "--http-port", str(http), "--metrics-port", str(metrics),
                          "--threads", str(args.server_threads), "--log-file", str(work / "triton.log"),
                          *args.server_args.split()], stdout=log, stderr=subprocess.STDOUT, env=env, cwd=REPO)
    t0 = time.monotonic()
    while time.monotonic() - t0 < 600:
        if p.poll() is not None:
            raise SystemExit(f"the server exited: {(work / 'server.log').read_text()[-2000:]}")
        if "serving textsam_eus" in (work / "server.log").read_text():
            return p, grpc, metrics
        time.sleep(0.5)
    p.send_signal(signal.SIGINT)
    raise SystemExit("the server was not ready within 600 s")


def _md(res: dict) -> str:
    lines = ["# Triton rooms", "", f"machine: {res['meta']['machine'].get('cpu_model', '')}, load before "
             f"{res['meta']['load_before']}; {res['meta']['frames']} frames per room at {res['meta']['fps']} fps "
             f"({res['meta']['source']}, --realtime, --roi {res['meta']['roi']})", "",
             "| config | rooms | aggregate fps | errors | per-room p50 / p99 ms | drops | request / server p50 ms | "
             "mean batch (metrics) | client batch sizes |", "|---|---|---|---|---|---|---|---|---|"]
    for row in res["rows"]:
        rooms = row["rooms"]
        lat = ", ".join(f"{r['latency_p50_ms'] or 0:.0f}/{r['latency_p99_ms'] or 0:.0f}" for r in rooms)
        drops = ", ".join(str(r["dropped"]) for r in rooms)
        req = ", ".join(f"{r['request_p50_ms'] or 0:.0f}/{r['server_p50_ms'] or 0:.0f}" if r["request_p50_ms"]
                        else "-" for r in rooms)
        sizes = "; ".join(json.dumps(r["batch_sizes"]) if r["batch_sizes"] else "-" for r in rooms)
        lines.append(f"| {row['config']} | {len(rooms)} | {row['aggregate']['aggregate_fps']:.2f} | "
                     f"{row['aggregate']['errors']} | {lat} | {drops} | {req} | {row.get('mean_batch', '-')} | "
                     f"{sizes} |")
    lines += ["", "## Targets", ""] + [f"- {k}: {v}" for k, v in res["targets"].items()]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--checkpoint", default="demo")
    ap.add_argument("--rooms", default="1,2,4")
    ap.add_argument("--frames", type=int, default=600)
    ap.add_argument("--clip", default=str(DEFAULT_CLIP) if DEFAULT_CLIP.is_file() else "phantom",
                    help="the recording every room replays (--realtime, looped by remuxing to --frames), or 'phantom'"
                         " (rendered by each room at --fps, --width x --height); default: cancer_v1 of "
                         "../shared/data/eus_clips when present")
    ap.add_argument("--roi", default="auto", help="stream --roi for every room and the baseline (default auto)")
    ap.add_argument("--fps", type=float, default=15.0, help="phantom rooms' frame rate (a clip keeps its own)")
    ap.add_argument("--width", type=int, default=480)
    ap.add_argument("--height", type=int, default=360)
    ap.add_argument("--serve-python", default=str(REPO / ".venv-serve" / "bin" / "python"))
    ap.add_argument("--server-args", default="", help="extra 'textsam-eus serve' flags, e.g. '--max-batch-size 4'")
    ap.add_argument("--server-threads", type=int, default=2)
    ap.add_argument("--client-threads", type=int, default=1)
    ap.add_argument("--baseline-engine", default="onnxruntime")
    ap.add_argument("--no-baseline", action="store_true")
    ap.add_argument("--out", default=str(DEFAULT_OUT))
    args = ap.parse_args(argv)
    counts = [int(x) for x in args.rooms.split(",") if x.strip()]
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix="triton-rooms-"))
    recording = _prepare_recording(args, work)
    source = (f"{Path(args.clip).name} looped to {recording['frames']} frames, {recording['size'][0]}x"
              f"{recording['size'][1]} at {args.fps:.1f} fps" if recording else
              f"{args.width}x{args.height} phantom at {args.fps:.1f} fps")
    res = {"meta": {"command": " ".join(sys.argv), "machine": machine_info(args.client_threads), "load_before": loadavg(),
                    "frames": args.frames, "fps": args.fps, "width": args.width, "height": args.height,
                    "source": source, "recording": recording, "roi": args.roi,
                    "checkpoint": args.checkpoint, "server_args": args.server_args, "work": str(work)},
           "rows": [], "targets": {}}
    base = None
    if not args.no_baseline:
        rooms = _run_rooms(args, 1, work, ["--engine", args.baseline_engine], "baseline")
        base = {"config": f"single-process {args.baseline_engine}", "rooms": rooms, "aggregate": _aggregate(rooms)}
        res["rows"].append(base)
        print(json.dumps(base["aggregate"]), flush=True)
    server, grpc, mport = _start_server(args, work)
    try:
        for n in counts:
            m0 = _metrics(mport)
            rooms = _run_rooms(args, n, work, ["--engine", "triton", "--server", f"grpc://127.0.0.1:{grpc}"],
                               f"triton{n}")
            m1 = _metrics(mport)
            d = {k: m1[k] - m0[k] for k in m0}
            row = {"config": "triton", "rooms": rooms, "aggregate": _aggregate(rooms), "metrics_delta": d,
                   "mean_batch": round(d["nv_inference_count"] / d["nv_inference_exec_count"], 3)
                   if d["nv_inference_exec_count"] else None,
                   "queue_us_per_request": d["nv_inference_queue_duration_us"] / d["nv_inference_request_success"]
                   if d["nv_inference_request_success"] else None}
            res["rows"].append(row)
            print(json.dumps({"rooms": n, **row["aggregate"], "mean_batch": row["mean_batch"]}), flush=True)
    finally:
        server.send_signal(signal.SIGINT)
        try:
            server.wait(timeout=60)
        except subprocess.TimeoutExpired:
            server.kill()
    rows = {len(r["rooms"]): r for r in res["rows"] if r["config"] == "triton"}
    period = 1e3 / args.fps
    if base and 2 in rows:
        ratio = rows[2]["aggregate"]["aggregate_fps"] / max(base["aggregate"]["aggregate_fps"], 1e-9)
        res["targets"]["2 rooms aggregate fps / single-process fps >= 0.9"] = f"{ratio:.3f}"
    for n, row in rows.items():
        ok = all((r["latency_p99_ms"] or 1e9) <= 2 * period + (r["server_p50_ms"] or 0) for r in row["rooms"])
        res["targets"][f"{n} rooms: every room's p99 <= 2 frame periods + server p50"] = ok
        res["targets"][f"{n} rooms: errors"] = row["aggregate"]["errors"]
    if base and 1 in rows:
        local = base["rooms"][0]["engine_total_p50_ms"] or 0
        remote = rows[1]["rooms"][0]["engine_total_p50_ms"] or 0
        res["targets"]["one-request overhead at batch 1 (triton engine_total p50 - local)"] = \
            f"{remote - local:.1f} ms ({remote:.1f} vs {local:.1f})"
    res["meta"]["load_after"] = loadavg()
    (out / "results.json").write_text(json.dumps(res, indent=2))
    (out / "results.md").write_text(_md(res))
    print(_md(res))
    return 0


if __name__ == "__main__":
    sys.exit(main())
