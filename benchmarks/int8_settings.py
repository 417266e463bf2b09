"""int8 quantization settings side by side on this CPU: mask parity against fp32 and encoder speed.

    python benchmarks/int8_settings.py --threads 2 [--checkpoint demo|tiny-test] [--out DIR]

For each setting of ONNX Runtime's ``quantize_dynamic`` (full-range int8 weights, 7-bit int8 weights =
``reduce_range``, uint8 weights, per channel) it quantizes the bundle's encoder, runs ``int8_parity`` (the export's
own check: mask IoU over the frames with a mask) on the export's parity frames, and times the encoder alone,
interleaved with fp32 so that a busy machine slows every setting alike. The CPU's int8 flags are printed: the
full-range settings depend on them (``textsam_eus.model.cpu_features``), 7-bit and uint8 weights do not.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np

SETTINGS = {
    "int8 full range": {"weight_type": "QInt8", "reduce_range": False, "per_channel": False},
    "int8 7-bit (shipped)": {"weight_type": "QInt8", "reduce_range": True, "per_channel": False},
    "int8 7-bit per channel": {"weight_type": "QInt8", "reduce_range": True, "per_channel": True},
    "uint8": {"weight_type": "QUInt8", "reduce_range": False, "per_channel": False},
}


def _model(name: str):
    from textsam_eus.model.checkpoint import load_checkpoint, resolve_checkpoint

    if name == "tiny-test":  # the model the int8 tests quantize
        from benchmarks.models import trained_like_tiny

        return trained_like_tiny(0)
    return load_checkpoint(resolve_checkpoint(name))[0]


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--checkpoint", default="demo", help="demo (default), a checkpoint path, or tiny-test")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--repeats", type=int, default=15, help="timed encoder runs per setting (default 15)")
    ap.add_argument("--out", default=None, help="write results.json here")
    args = ap.parse_args(argv)

    import onnxruntime as ort
    import torch

    from textsam_eus.commands.export import int8_parity_frames
    from textsam_eus.export.onnx_export import export_bundle
    from textsam_eus.export.quantize import INT8_SETTINGS, int8_parity, quantize_graph
    from textsam_eus.model.cpu_features import cpu_features, int8_saturates

    torch.set_num_threads(args.threads)
    here = cpu_features()
    print(f"CPU: {here['model']} ({here['machine']}); int8 flags: {', '.join(here['flags']) or 'none'}; "
          f"VNNI: {here['vnni']}; onnxruntime {ort.__version__}; {args.threads} threads")
    tmp = Path(tempfile.mkdtemp(prefix="int8-settings-"))
    bundle = export_bundle(_model(args.checkpoint), tmp / "bundle", verify=False)
    frames, frames_source = int8_parity_frames(bundle.image_size)
    graphs = {"fp32": bundle.path("encoder")}
    rows = {}
    for name, s in SETTINGS.items():
        settings = {**INT8_SETTINGS, **s}
        graphs[name] = tmp / f"{name.replace(' ', '_')}.onnx"
        quantize_graph(bundle.path("encoder"), graphs[name], settings)
        rows[name] = {"settings": settings, "saturates_without_vnni": int8_saturates(settings),
                      **int8_parity(bundle, {"encoder": graphs[name]}, frames)}
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = args.threads
    opts.add_session_config_entry("session.intra_op.allow_spinning", "0")
    sessions = {k: ort.InferenceSession(str(p), opts, providers=["CPUExecutionProvider"]) for k, p in graphs.items()}
    x = np.random.default_rng(0).random((1, 3, bundle.image_size, bundle.image_size), dtype=np.float32)
    times = {k: [] for k in sessions}
    for s in sessions.values():
        s.run(None, {"image": x})
    for _ in range(args.repeats):  # interleaved: load on the machine hits every setting alike
        for k, s in sessions.items():
            t = time.perf_counter()
            s.run(None, {"image": x})
            times[k].append(time.perf_counter() - t)
    base = float(np.median(times["fp32"]))
    print(f"parity frames: {frames_source}; encoder fp32 {1000 * base:.1f} ms (median of {args.repeats})")
    print("| setting | saturates without VNNI | frames compared | mean IoU | min IoU | encoder ms | fp32 / this |")
    print("| --- | --- | --- | --- | --- | --- | --- |")
    for name, r in rows.items():
        ms = float(np.median(times[name]))
        r.update(encoder_ms=1000 * ms, speedup=base / ms)
        mean = "n/a" if r["mean_mask_iou"] is None else f"{r['mean_mask_iou']:.4f}"
        low = "n/a" if r["min_mask_iou"] is None else f"{r['min_mask_iou']:.4f}"
        print(f"| {name} | {'yes' if r['saturates_without_vnni'] else 'no'} | {r['frames_compared']} of "
              f"{r['frames']} | {mean} | {low} | {1000 * ms:.1f} | {base / ms:.2f}x |")
    if args.out:
        out = Path(args.out)
        out.mkdir(parents=True, exist_ok=True)
        (out / "results.json").write_text(json.dumps({"cpu": here, "onnxruntime": ort.__version__,
                                                      "frames": frames_source, "fp32_encoder_ms": 1000 * base,
                                                      "rows": rows}, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
