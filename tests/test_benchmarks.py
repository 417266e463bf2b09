"""The benchmarks package: run.py in-process on a tiny subset (outputs written, percentiles ordered, encoder calls
counted), the matrix as plans, the measured segmenter, and the scripts run by path."""

from __future__ import annotations

import argparse
import json
import math
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from benchmarks import run as bench_run
from benchmarks.plans import MatrixSpec, build_matrix
from benchmarks.timing import MeasuredEngine

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def results(tmp_path_factory):
    out = tmp_path_factory.mktemp("bench")
    threads = torch.get_num_threads()
    # a seeded random tiny model: its masks are not empty, so every refinement pass runs
    rc = bench_run.main(["--presets", "tiny", "--engines", "torch,onnxruntime,tensorrt", "--iterations", "0,2",
                         "--modes", "model,reference", "--frames", "3", "--warmup", "1", "--device", "cpu",
                         "--threads", "1", "--checkpoint", "random", "--out", str(out)])
    assert rc == 0
    assert torch.get_num_threads() == threads  # main() restores the caller's thread count
    return out, json.loads((out / "results.json").read_text())


@pytest.mark.slow
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
    assert data["meta"]["weights"] == {"tiny@256": "random init (seeded)"}


@pytest.mark.slow
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
        assert len(r["per_frame_ms"]["latency"]) == 3


@pytest.mark.slow
def test_encoder_calls_per_frame(results):
    _, data = results
    by_id = {r["id"]: r for r in data["rows"]}
    for r in data["rows"]:
        if r["status"] != "ok":
            continue
        it, mode = r["config"]["iterations"], r["config"]["mode"]
        assert r["passes_per_frame"] == it + 1, r["id"]  # no early stop: the masks are not empty
        assert r["decoder_calls_per_frame"] == it + 1
        assert r["encoder_calls_per_frame"] == (it + 1 if mode == "reference" else 1), r["id"]
        assert r["encoder_call_ms"]["count"] == 3 * r["encoder_calls_per_frame"]
        if mode == "reference":  # the ratio is measured against the matching model row, not assumed
            ours = by_id[r["ours_id"]]
            assert ours["config"] == {**r["config"], "mode": "model"}
            for stat in ("p50", "mean"):
                ratio = r["reference_over_ours"][stat]
                assert math.isfinite(ratio) and ratio > 0
                assert ratio == pytest.approx(r["latency_ms"][stat] / ours["latency_ms"][stat])


@pytest.mark.slow
def test_unavailable_engine_is_a_skipped_row(results):
    _, data = results
    trt = [r for r in data["rows"] if r["config"]["engine"] == "tensorrt"]
    assert trt, "tensorrt should appear as a row"
    for r in trt:
        assert r["status"] == "skipped" and r["reason"]
        assert "TensorRT" in r["reason"] or "tensorrt" in r["reason"]


def _plans(argv, devices, cuda_ok=False):
    args = bench_run.build_parser().parse_args(argv)
    avail = {"torch": (True, "ok"), "onnxruntime": (True, "ok"),
             "tensorrt": (cuda_ok, "ok" if cuda_ok else "no CUDA GPU visible")}
    return build_matrix(MatrixSpec.from_args(args), devices, avail)


def test_quick_matrix_on_cpu_as_plans():
    plans, notes = _plans(["--quick"], ["cpu"])
    run = [p for p in plans if not p.skip_kind]
    assert {(p.preset, p.image_size, p.engine) for p in run} == {
        ("tiny", 256, "torch"), ("tiny", 256, "onnxruntime"), ("vit_b", 512, "torch")}
    vit = next(p for p in run if p.preset == "vit_b")
    assert vit.iterations == (2,) and vit.modes == ("model", "reference") and (vit.frames, vit.warmup) == (3, 1)
    tiny = next(p for p in run if p.preset == "tiny")
    assert len(tiny.row_configs("clip", 2, "w")) == 3 * 3 and (tiny.frames, tiny.warmup) == (12, 3)
    skipped = {(p.preset, p.image_size, p.engine): p for p in plans if p.skip_kind}
    assert skipped[("vit_b", 512, "onnxruntime")].skip_kind == "quick"
    assert skipped[("tiny", 256, "tensorrt")].skip_kind == "unavailable"
    assert "NVIDIA" in skipped[("tiny", 256, "tensorrt")].reason
    assert not any(p.image_size == 1024 for p in plans)  # --quick on the CPU does not list vit_b at 1024
    assert any("--quick on CPU" in n for n in notes)


def test_cuda_rows_without_a_gpu_say_why():
    plans, _ = _plans(["--presets", "tiny", "--engines", "torch"], ["cuda"])
    assert plans and all(p.skip_kind == "unavailable" and "no CUDA GPU" in p.reason for p in plans)
    # CUDA graphs on and off, every precision: one plan each, each its own row
    assert {(p.precision, p.cuda_graphs) for p in plans} == {(pr, g) for pr in ("fp32", "fp16", "bf16")
                                                              for g in (False, True)}


def test_bad_matrix_flags_name_the_flag():
    for argv, flag in ((["--modes", "model,movie"], "--modes"), (["--engines", "tourch"], "--engines"),
                       (["--iterations", "two"], "--iterations")):
        with pytest.raises(ValueError, match=flag):
            MatrixSpec.from_args(bench_run.build_parser().parse_args(argv))


def test_measured_engine_times_calls_and_leaves_the_engine_alone(tiny_model):
    from textsam_eus.engines import create_engine

    engine = create_engine("torch", model=tiny_model, device="cpu")
    hooks = (engine.segmenter.encode, engine.segmenter.decode)
    frame = np.random.default_rng(0).integers(0, 256, (96, 128, 3), dtype=np.uint8)
    plain = engine.segment(frame, iterations=2)
    model = MeasuredEngine(engine, "model", cuda=False)
    same = model.segment(frame, iterations=2)
    np.testing.assert_array_equal(same.mask, plain.mask)
    ref = MeasuredEngine(engine, "reference", cuda=False)
    ref.segment(frame, iterations=2)
    assert (engine.segmenter.encode, engine.segmenter.decode) == hooks  # nothing patched
    for measured, encodes in ((model, 1), (ref, plain.passes)):
        f = measured.frames[0]
        assert f["enc_calls"] == encodes and f["dec_calls"] == plain.passes
        assert len(f["enc_ms"]) == encodes and all(math.isfinite(m) and m > 0 for m in f["enc_ms"] + f["dec_ms"])
    with pytest.raises(ValueError, match="mode"):
        MeasuredEngine(engine, "replay", cuda=False)


@pytest.mark.parametrize("script", ["run.py", "stream_soak.py", "eus_trust.py", "gpu_parity.py",
                                    pytest.param("attention_parity.py", marks=pytest.mark.slow), "int8_settings.py"])
def test_scripts_run_by_path(script):
    """``python benchmarks/X.py`` finds the benchmarks package without PYTHONPATH."""
    env = {k: v for k, v in __import__("os").environ.items() if k != "PYTHONPATH"}
    res = subprocess.run([sys.executable, str(REPO / "benchmarks" / script), "--help"], capture_output=True,
                         text=True, cwd=REPO.parent, env=env, timeout=120)
    assert res.returncode == 0, res.stderr
    assert "usage:" in res.stdout


def test_matrix_of_one_configuration():
    spec = MatrixSpec.from_args(argparse.Namespace(
        engines="torch", presets="tiny", sizes=None, iterations="1", modes="model", precisions=None,
        cuda_graphs="off", frames=2, warmup=0, quick=False))
    plans, _ = build_matrix(spec, ["cpu"], {"torch": (True, "ok")})
    assert [(p.engine, p.iterations, p.modes, p.frames) for p in plans] == [("torch", (1,), ("model",), 2)]


@pytest.mark.slow
def test_variant_rows_are_ratios_to_their_baseline(results):
    out, data = results
    rows = {r["id"]: r for r in data["rows"]}
    sdpa, int8 = rows["tiny@256/torch/cpu/fp32/sdpa/it2/model"], rows["tiny@256/onnxruntime/cpu/int8/it2/model"]
    measured = [(sdpa, "tiny@256/torch/cpu/fp32/it2/model")]
    if int8["status"] == "ok":  # int8 is kept only where its masks match fp32's (test_int8 checks that rule)
        measured.append((int8, "tiny@256/onnxruntime/cpu/fp32/it2/model"))
        assert int8["engine_info"]["precision"] == "int8" and int8["engine_info"]["int8_parity"]["frames"] > 0
    else:
        assert int8["skip_kind"] == "unavailable" and "int8 refused" in int8["reason"]
    for r, base in measured:
        assert r["status"] == "ok" and r["base_id"] == base
        want = r["latency_ms"]["p50"] / rows[base]["latency_ms"]["p50"]
        assert r["variant_over_base"]["total_p50"] == pytest.approx(want)
    assert sdpa["engine_info"]["attention"] == "sdpa" and rows[sdpa["base_id"]]["engine_info"]["attention"] == "reference"
    assert "## Variants" in (out / "results.md").read_text()


@pytest.mark.slow
def test_a_refused_int8_variant_is_a_skipped_row_not_a_failed_run(tmp_path, monkeypatch):
    from textsam_eus.export import quantize

    def low(bundle, paths, frames):
        return {"mean_mask_iou": 0.5, "min_mask_iou": 0.4, "frames": len(frames), "frames_compared": len(frames),
                "frames_with_mask": len(frames)}

    monkeypatch.setattr(quantize, "int8_parity", low)
    rc = bench_run.main(["--presets", "tiny", "--engines", "onnxruntime", "--iterations", "2", "--modes", "model",
                         "--frames", "1", "--warmup", "0", "--device", "cpu", "--threads", "1",
                         "--checkpoint", "random", "--out", str(tmp_path)])
    assert rc == 0
    rows = {r["id"]: r for r in json.loads((tmp_path / "results.json").read_text())["rows"]}
    int8 = rows["tiny@256/onnxruntime/cpu/int8/it2/model"]
    assert int8["status"] == "skipped" and int8["skip_kind"] == "unavailable"
    assert int8["reason"].startswith("int8 variant not measured: int8 refused") and "0.5000" in int8["reason"]
    assert rows["tiny@256/onnxruntime/cpu/fp32/it2/model"]["status"] == "ok"


def test_variant_plans_and_quick_leaves_compile_out():
    plans, _ = _plans(["--quick"], ["cpu"])
    variants = {(p.engine, p.precision, p.attention, p.compile): p for p in plans if p.variant_of}
    assert set(variants) == {("torch", "fp32", "sdpa", False), ("torch", "fp32", "reference", True),
                             ("onnxruntime", "int8", None, False)}
    assert variants[("torch", "fp32", "reference", True)].skip_kind == "quick"
    assert all(p.iterations == (2,) and p.modes == ("model",) for p in variants.values())
    assert not any(p.variant_of for p in plans if p.preset == "vit_b")
    plans, _ = _plans(["--quick", "--compile", "on", "--attention", "reference"], ["cpu"])
    assert [(p.engine, p.compile, p.skip_kind) for p in plans if p.variant_of and p.engine == "torch"] == [
        ("torch", True, None)]


def test_attention_parity_script_compares_both_implementations(tmp_path):
    from benchmarks import attention_parity

    assert attention_parity.main(["--preset", "tiny", "--size", "128", "--device", "cpu", "--repeats", "1",
                                  "--out", str(tmp_path / "a.json")]) == 0
    r = json.loads((tmp_path / "a.json").read_text())
    assert 0 < r["max_abs_diff"] < 1e-4 and r["pass"] and r["reference_ms"] > 0 and r["sdpa_ms"] > 0
    assert attention_parity.main(["--preset", "tiny", "--size", "128", "--device", "cpu", "--repeats", "1",
                                  "--tol", "1e-12"]) == 1  # the bar can fail
