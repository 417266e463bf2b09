"""The fused (SDPA) image-encoder attention against segment-anything's, on one device, with a timing ratio.

Builds SAM's ViT image encoder of a preset at ``--size`` with random weights (the relative position tables made
non-zero, as trained ones are), runs one image through both attention implementations and reports the max
absolute difference of the embeddings (the issue's bar: < 1e-4 in fp32) and the median time of each.
Exit status 1 when the difference is over ``--tol``.

    python benchmarks/attention_parity.py --preset vit_b --size 1024 --device cuda [--dtype bf16] [--out x.json]
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

if __package__ in (None, ""):  # run by path: the checkout first on sys.path
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch  # noqa: E402

DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}


def measure(preset: str, size: int, device: str, dtype: str, repeats: int, seed: int = 0) -> dict:
    from textsam_eus.model.attention import set_encoder_attention
    from textsam_eus.model.registry import get_config
    from textsam_eus.model.textsam import build_sam

    torch.manual_seed(seed)
    enc = build_sam(get_config(preset, image_size=size)).image_encoder.eval()
    for block in enc.blocks:
        torch.nn.init.normal_(block.attn.rel_pos_h, std=0.5)
        torch.nn.init.normal_(block.attn.rel_pos_w, std=0.5)
    enc = enc.to(device=device, dtype=DTYPES[dtype])
    x = torch.randn(1, 3, size, size, device=device, dtype=DTYPES[dtype])
    sync = torch.cuda.synchronize if torch.device(device).type == "cuda" else (lambda: None)
    out, times = {}, {"reference": [], "sdpa": []}
    with torch.inference_mode():
        for impl in ("reference", "sdpa"):
            set_encoder_attention(enc, impl)
            out[impl] = enc(x).float()  # also the warm-up
        for _ in range(repeats):  # interleaved, so both see the same machine
            for impl in ("reference", "sdpa"):
                set_encoder_attention(enc, impl)
                sync()
                t0 = time.perf_counter()
                enc(x)
                sync()
                times[impl].append((time.perf_counter() - t0) * 1e3)
    ref = statistics.median(times["reference"])
    fast = statistics.median(times["sdpa"])
    return {"preset": preset, "size": size, "device": device, "dtype": dtype, "repeats": repeats,
            "max_abs_diff": float((out["sdpa"] - out["reference"]).abs().max()),
            "max_abs_reference": float(out["reference"].abs().max()),
            "reference_ms": round(ref, 2), "sdpa_ms": round(fast, 2), "speedup": round(ref / fast, 3)}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--preset", default="vit_b")
    p.add_argument("--size", type=int, default=1024)
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--dtype", choices=sorted(DTYPES), default="fp32")
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    p.add_argument("--tol", type=float, default=1e-4, help="max |diff| allowed (fp32; lower precisions need more)")
    p.add_argument("--out", default=None, help="write the result as JSON here")
    args = p.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    if torch.device(args.device).type == "cuda" and not torch.cuda.is_available():
        print("attention_parity: error: --device cuda but torch sees no CUDA GPU; use --device cpu", file=sys.stderr)
        return 2
    r = measure(args.preset, args.size, args.device, args.dtype, args.repeats)
    r["tol"], r["pass"] = args.tol, r["max_abs_diff"] < args.tol
    print(json.dumps(r))
    if args.out:
        Path(args.out).write_text(json.dumps(r, indent=2))
    return 0 if r["pass"] else 1


if __name__ == "__main__":
    sys.exit(main())
