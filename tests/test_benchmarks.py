"""benchmarks/run.py in-process on a tiny subset: outputs written, percentiles ordered, encoder calls counted."""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path

import pytest
import torch

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def bench():
    path = REPO / "benchmarks" / "run.py"
    spec = importlib.util.spec_from_file_location("textsam_bench_run", path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    yield module
    sys.modules.pop(spec.name, None)


@pytest.fixture(scope="module")
def results(bench, tmp_path_factory):
    out = tmp_path_factory.mktemp("bench")
    threads = torch.get_num_threads()
    # a seeded random tiny model: its masks are not empty, so every refinement pass runs
    rc = bench.main(["--presets", "tiny", "--engines", "torch,onnxruntime,tensorrt", "--iterations", "0,2",
                     "--modes", "model,reference", "--frames", "3", "--warmup", "1", "--device", "cpu",
                     "--threads", "1", "--checkpoint", "random", "--out", str(out)])
    assert rc == 0
    assert torch.get_num_threads() == threads  # main() restores the caller's thread count
    return out, json.loads((out / "results.json").read_text())


def test_outputs_written(results):
    out, data = results
    for name in ("results.json", "results.md", "latency.png"):
        assert (out / name).is_file() and (out / name).stat().st_size > 0, name
    assert (out / "latency.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    md = (out / "results.md").read_text()
    assert "| preset | size | engine |" in md and "reference / ours" in md
    m = data["meta"]["machine"]
    assert m["threads"]["torch_intra_op"] == 1 and m["threads"]["onnxruntime_intra_op"] == 1
    assert m["cpu_model"] and m["versions"]["torch"] and "onnxruntime" in m["versions"]


def test_rows_and_percentiles(results):
    _, data = results
    ok = [r for r in data["rows"] if r["status"] == "ok"]
    got = {(r["config"]["engine"], r["config"]["iterations"], r["config"]["mode"]) for r in ok}
    assert got == {(e, i, m) for e in ("torch", "onnxruntime") for i in (0, 2) for m in ("model", "reference")}
    for r in ok:
        assert r["frames_measured"] == 3
        for key in ("latency_ms", "encoder_call_ms", "decoder_call_ms"):
            st = r[key]
            assert st["count"] >= 3 and 0 < st["p50"] <= st["p95"] <= st["p99"], (r["id"], key, st)
        assert r["fps"] > 0
        assert r["memory"]["rss_peak_mb"] is None or r["memory"]["rss_peak_mb"] > 0
        assert {"preprocess", "encode", "decode_0", "postprocess"} <= set(r["stages_ms"])


def test_encoder_calls_per_frame(results):
    _, data = results
    for r in data["rows"]:
        if r["status"] != "ok":
            continue
        it, mode = r["config"]["iterations"], r["config"]["mode"]
        assert r["passes_per_frame"] == it + 1, r["id"]  # no early stop: the masks are not empty
        assert r["decoder_calls_per_frame"] == it + 1
        assert r["encoder_calls_per_frame"] == (it + 1 if mode == "reference" else 1), r["id"]
        if mode == "reference":
            assert r["reference_over_ours"]["p50"] > 0
            if it == 2:  # two more encoder runs per frame cannot be free
                assert r["reference_over_ours"]["mean"] > 1.0


def test_unavailable_engine_is_a_skipped_row(results):
    _, data = results
    trt = [r for r in data["rows"] if r["config"]["engine"] == "tensorrt"]
    assert trt, "tensorrt should appear as a row"
    for r in trt:
        assert r["status"] == "skipped" and r["reason"]
        assert "TensorRT" in r["reason"] or "tensorrt" in r["reason"]
