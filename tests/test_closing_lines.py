"""What a run prints at its end: sentences, not raw dicts; the demo names every file it wrote."""

from __future__ import annotations

from textsam_eus.cli import main
from textsam_eus.commands._stream_run import print_summary, source_sentence


def test_source_counters_read_as_a_sentence(capsys, tmp_path):
    assert source_sentence({"decoded": 40, "late_frames": 0}) == ""
    line = source_sentence({"decoded": 40, "late_frames": 2, "decode_errors": 1, "new_counter": 3})
    assert "{" not in line and "'" not in line
    assert line.startswith("2 frame(s) decoded after their due time") and "1 frame(s) that could not be decoded" in line
    assert "new counter: 3" in line
    summary = {"latency_ms": None, "stages_ms": None, "engine": {"engine": "torch", "device": "cpu"},
               "frames_out": 4, "frames_dropped": 0, "fps": 10.0, "source_stats": {"late_frames": 2},
               "warnings": [], "complete": True}
    print_summary(summary, tmp_path)
    out = capsys.readouterr().out
    assert "source: 2 frame(s) decoded after their due time" in out and "{'late_frames'" not in out


def test_demo_writes_the_report_and_names_every_output(tmp_path, capsys):
    from textsam_eus.model.checkpoint import save_checkpoint
    from textsam_eus.model.registry import build_textsam

    ckpt = save_checkpoint(build_textsam("tiny"), tmp_path / "m.safetensors")
    out = tmp_path / "demo"
    assert main(["demo", "--checkpoint", str(ckpt), "--engine", "torch", "--frames", "4", "--size", "160x120",
                 "--out", str(out), "--no-progress"]) == 0
    assert (out / "report.html").is_file()
    wrote = [line for line in capsys.readouterr().out.splitlines() if line.strip().startswith("wrote ")]
    assert len(wrote) == 1
    for name in ("overlay.mp4", "masks/", "latency.json", "latency.csv", "outputs.csv", "summary.json",
                 "report.html"):
        assert f"{out}/{name}" in wrote[0], name  # a folder with its slash (Path would drop it)
