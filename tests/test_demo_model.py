"""The demo model shipped inside the package: present, small, loadable, and actually segments."""

from __future__ import annotations

import json

import pytest

from textsam_eus.cli import main
from textsam_eus.model.checkpoint import demo_checkpoint_path, load_checkpoint, read_checkpoint_meta


def test_demo_weights_are_shipped_and_small():
    path = demo_checkpoint_path()
    assert path.is_file(), f"the demo model is missing: {path}"
    assert path.stat().st_size < 10 * 2**20
    meta = read_checkpoint_meta("demo")
    assert meta["config"]["preset"] == "tiny" and meta["contents"] == "full"
    model, extra = load_checkpoint("demo")
    assert model.cfg.preset == "tiny" and "val_loss" in extra


@pytest.mark.slow
def test_demo_model_segments_held_out_synthetic_clips(tmp_path):
    out = tmp_path / "eval.json"
    assert main(["eval", "--checkpoint", "demo", "--phantom-clips", "5", "--clip-frames", "4", "--seed", "123",
                 "--mode", "auto+refine", "--json", str(out), "--no-progress"]) == 0
    result = json.loads(out.read_text())
    assert result["n"] == 20
    assert result["dice"]["mean"] >= 0.85, result["dice"]


def test_info_describes_the_demo_checkpoint(capsys):
    assert main(["info", "--checkpoint", "demo", "--json"]) == 0
    info = json.loads(capsys.readouterr().out)
    assert info["preset"] == "tiny" and info["checkpoint"]["epoch"] >= 1
