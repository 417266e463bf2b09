"""Tumour presence: the score, hysteresis over frames, what is drawn and written, and where the threshold lives."""

from __future__ import annotations

import csv
import json

import numpy as np
import pytest
from fakes import FakeEngine, SyntheticSource

from textsam_eus.core.config import ConfigError, TextSamConfig
from textsam_eus.stream.pipeline import PipelineConfig, StreamPipeline
from textsam_eus.common.presence import PresenceGate


def test_gate_shows_after_k_and_hides_after_m():
    gate = PresenceGate(0.5, show_frames=3, hide_frames=2)
    scores = [0.9, 0.9, 0.1, 0.9, 0.9, 0.9, 0.9, 0.2, 0.9, 0.2, 0.2, 0.2]
    shown = [gate.update(s).shown for s in scores]
    assert shown == [False, False, False, False, False, True, True, True, True, True, False, False]
    assert gate.describe()["frames_shown"] == 5


def test_gate_off_shows_everything_and_nan_counts_as_absent():
    assert all(PresenceGate(None).update(s).shown for s in (0.0, float("nan"), None))
    gate = PresenceGate(0.5, show_frames=1, hide_frames=1)
    assert gate.update(0.8).shown and not gate.update(float("nan")).shown and not gate.update(None).shown
    with pytest.raises(ValueError, match="presence threshold"):
        PresenceGate(float("nan"))


class _ScoredEngine(FakeEngine):
    """A disc with a presence score per frame from ``scores``; presence calibrated at 0.5."""

    presence = {"threshold": 0.5, "show_frames": 2, "hide_frames": 2}

    def __init__(self, scores, iou=0.9):
        super().__init__(iou=iou)
        self.scores = list(scores)

    def segment(self, frame, **kw):
        r = super().segment(frame, **kw)
        r.presence = self.scores[len(self.calls) - 1]
        return r


def test_stream_writes_empty_masks_while_no_tumour_is_shown(tmp_path):
    scores = [0.1, 0.9, 0.9, 0.9, 0.2, 0.9, 0.1, 0.1, 0.1, 0.1]
    summary = StreamPipeline(_ScoredEngine(scores), SyntheticSource(10, lambda i: np.full((60, 80, 3), 90, np.uint8)),
                             tmp_path).run()
    rows = list(csv.DictReader((tmp_path / "outputs.csv").open()))
    shown = [int(r["mask_area"]) > 0 for r in rows]
    assert shown == [False, False, True, True, True, True, True, False, False, False]
    assert [r["decision"] for r in rows][:4] == ["hidden", "showing", "shown", "shown"]
    assert [float(r["presence"]) for r in rows] == scores
    assert summary["presence"]["threshold"] == 0.5 and summary["presence"]["frames_shown"] == 5
    lat = json.loads((tmp_path / "latency.json").read_text())["frames"]
    assert lat[0]["decision"] == "hidden" and lat[0]["presence"] == 0.1


def test_low_confidence_outline_is_faded(tmp_path, monkeypatch):
    import textsam_eus.stream.stages.draw as pl

    calls = []
    real = pl.draw_overlay
    monkeypatch.setattr(pl, "draw_overlay", lambda *a, **k: calls.append(k.get("faded")) or real(*a, **k))
    StreamPipeline(_ScoredEngine([0.9] * 4, iou=0.4), SyntheticSource(4, lambda i: np.full((60, 80, 3), 90, np.uint8)),
                   tmp_path, PipelineConfig(show_frames=1)).run()
    assert calls == [True] * 4  # shown, but the predicted IoU 0.4 is below the confident 0.7


def test_presence_settings_are_validated_config_fields():
    cfg = TextSamConfig(presence_threshold=0.42)
    assert TextSamConfig.from_dict(cfg.to_dict()).presence_threshold == 0.42
    old = cfg.to_dict()
    for k in ("presence_threshold", "presence_show_frames", "presence_hide_frames"):
        old.pop(k)
    assert TextSamConfig.from_dict(old).presence_threshold is None  # an old checkpoint: presence off
    # the score's own scale: the IoU head's raw output may be negative or above 1
    assert TextSamConfig(presence_threshold=-0.4).presence_threshold == -0.4
    assert TextSamConfig.from_dict(TextSamConfig(presence_threshold=2.0).to_dict()).presence_threshold == 2.0
    for bad in (float("nan"), float("inf"), 1e7, True, "0.5"):
        with pytest.raises(ConfigError, match="presence_threshold=.* is invalid: must be a finite number"):
            TextSamConfig(presence_threshold=bad)
    with pytest.raises(ConfigError, match="presence_show_frames"):
        TextSamConfig(presence_show_frames=0)


def test_presence_score_is_the_text_only_pass_iou(tiny_model):
    from textsam_eus.engines import create_engine

    eng = create_engine("torch", model=tiny_model, device="cpu")
    frame = np.random.default_rng(0).integers(0, 255, (96, 128, 3), dtype=np.uint8)
    text_only = eng.segment(frame, iterations=0)
    assert text_only.presence == pytest.approx(text_only.iou)
    seeded = eng.segment(frame, seed_prompt=(np.array([10, 10, 60, 60]), np.array([35, 35])), iterations=0)
    assert "decode_presence" in seeded.timings
    assert seeded.presence == pytest.approx(text_only.presence, abs=1e-5)  # not biased by the seed box
    assert eng.presence["threshold"] is None  # an untrained checkpoint: presence off


@pytest.mark.slow
def test_export_carries_the_presence_settings(tiny_model, tmp_path):
    from textsam_eus.engines import create_engine
    from textsam_eus.export.onnx_export import export_bundle
    from textsam_eus.model.bundle import read_bundle

    tiny_model.cfg = tiny_model.cfg.replace(presence_threshold=0.37, presence_show_frames=4)
    export_bundle(tiny_model, tmp_path / "b", verify=False)
    b = read_bundle(tmp_path / "b")
    assert (b.presence_threshold, b.presence_show_frames, b.presence_hide_frames) == (0.37, 4, 5)
    eng = create_engine("onnxruntime", bundle=tmp_path / "b")
    assert eng.presence == {"threshold": 0.37, "show_frames": 4, "hide_frames": 5}
    assert eng.info()["presence_threshold"] == 0.37


@pytest.mark.slow
def test_training_with_negatives_learns_and_calibrates_presence(tmp_path, capsys):
    import torch

    from textsam_eus.cli import main
    from textsam_eus.model.checkpoint import load_checkpoint
    from textsam_eus.train.calibrate import presence_scores
    from textsam_eus.train.video_labels import phantom_negatives

    torch.manual_seed(0)
    out = tmp_path / "run"
    # fine-tune the shipped demo model (it already outlines phantom lesions) on a few lesion-free frames
    assert main(["train", "--init", "demo", "--phantom", "4", "--phantom-negatives", "4", "--phantom-val", "4",
                 "--phantom-val-negatives", "4", "--phantom-size", "256", "--epochs", "2", "--batch-size", "4",
                 "--lr", "5e-4", "--iou-loss-weight", "1", "--out", str(out), "--no-progress", "--threads", "1"]) == 0
    printed = capsys.readouterr().out
    assert "lesion-free images: train 4 / val 4" in printed
    model, extra = load_checkpoint(out / "best.safetensors")
    cal = extra["presence_calibration"]
    assert model.cfg.presence_threshold == pytest.approx(cal["threshold"], abs=1e-4)
    assert cal["n_positive"] == 4 and cal["n_negative"] == 4 and 0 <= cal["auc"] <= 1
    # the IoU head learnt that lesion-free frames get no outline: their presence scores are lower
    from textsam_eus.common.phantom import PhantomConfig, make_phantom_dataset

    pos = make_phantom_dataset(6, seed=77, config=PhantomConfig(height=256, width=256))
    neg = phantom_negatives(6, seed=78, size=256)
    scores, labels = presence_scores(model, pos + neg)
    assert np.mean(scores[:6]) > np.mean(scores[6:]) + 0.05, scores

    # eval reports presence on mixed data
    assert main(["eval", "--checkpoint", str(out / "best.safetensors"), "--phantom", "3", "--phantom-size", "256",
                 "--mode", "auto", "--json", str(tmp_path / "e.json"), "--no-progress"]) == 0


def test_negatives_manifest_without_mask_column(tmp_path):
    import cv2

    from textsam_eus.train.readers import SegmentationDataset, read_manifest

    cv2.imwrite(str(tmp_path / "n1.png"), np.full((20, 30), 90, np.uint8))
    (tmp_path / "m.csv").write_text("image,case\nn1.png,c1\n")
    ds = SegmentationDataset(read_manifest(tmp_path / "m.csv"))
    image, mask = ds[0]
    assert image.shape == (20, 30, 3) and mask.shape == (20, 30) and mask.max() == 0


def test_summary_reports_presence_auc_and_positive_only_dice():
    from textsam_eus.train.evaluate import summarize

    def rec(i, dice, presence, empty):
        return {"id": str(i), "case": str(i), "dice": dice, "nsd": dice, "nsd_reference_convention": dice,
                "iou_pred": 0.5, "presence": presence, "gt_empty": empty, "pred_empty": False}

    records = [rec(0, 0.8, 0.9, False), rec(1, 0.6, 0.7, False), rec(2, 0.0, 0.2, True), rec(3, 1.0, 0.8, True)]
    s = summarize(records, presence_threshold=0.75)
    assert s["n_positive"] == 2 and s["dice_positive"]["mean"] == pytest.approx(0.7)
    assert s["presence_auc"] == pytest.approx(0.75)
    assert s["presence"]["sensitivity"] == 0.5 and s["presence"]["specificity"] == 0.5
    assert s["dice_positive_gated"]["mean"] == pytest.approx(0.4)


def test_negative_video_frames_are_cut_to_the_sector(tmp_path):
    from textsam_eus.common.phantom import PhantomClip, PhantomConfig
    from textsam_eus.stream.sinks.encoders import VideoEncoder
    from textsam_eus.train.readers import DatasetError
    from textsam_eus.train.video_labels import video_negatives

    clip = PhantomClip(6, 0, config=PhantomConfig(height=240, width=320, p_lesion=0.0))
    with VideoEncoder(tmp_path / "healthy.mp4", 15.0) as enc:
        for i in range(6):
            enc.write(clip[i][0], i / 15)
    pairs = video_negatives(tmp_path / "healthy.mp4", every=2)
    assert len(pairs) == 3
    for image, mask in pairs:
        assert mask.max() == 0 and mask.shape == image.shape[:2]
        assert image.shape[0] < 240 and image.shape[1] <= 320  # the sector's box, not the screen
        assert image[0, 0].max() == 0  # outside the fan: black
    with pytest.raises(DatasetError, match="does not exist"):
        video_negatives(tmp_path / "missing.mp4")


@pytest.mark.slow
def test_stream_says_when_a_checkpoint_has_no_presence_threshold(tmp_path, capsys):
    from textsam_eus.cli import main
    from textsam_eus.model.checkpoint import save_checkpoint
    from textsam_eus.model.registry import build_textsam

    ckpt = save_checkpoint(build_textsam("tiny"), tmp_path / "old.safetensors")  # as checkpoints before presence
    assert main(["stream", "--source", "phantom:2", "--out", str(tmp_path / "o"), "--checkpoint", str(ckpt),
                 "--engine", "torch", "--no-progress"]) == 0
    assert "no calibrated presence threshold" in capsys.readouterr().err
    s = json.loads((tmp_path / "o" / "summary.json").read_text())
    assert s["presence"]["threshold"] is None and s["presence"]["frames_shown"] == 2


def test_image_folders_decide_each_still_on_its_own(tmp_path):
    import cv2

    from textsam_eus.stream.sources import ImageFolderSource

    folder = tmp_path / "stills"
    folder.mkdir()
    for i in range(4):
        cv2.imwrite(str(folder / f"s{i}.png"), np.full((40, 50), 90, np.uint8))
    summary = StreamPipeline(_ScoredEngine([0.9, 0.1, 0.9, 0.9]), ImageFolderSource(folder), tmp_path / "o").run()
    rows = list(csv.DictReader((tmp_path / "o" / "outputs.csv").open()))
    assert [int(r["mask_area"]) > 0 for r in rows] == [True, False, True, True]  # no hysteresis across stills
    assert summary["presence"]["show_frames"] == 1


def _write_clip(path, n, p_lesion=0.0, seed=0):
    from textsam_eus.common.phantom import PhantomClip, PhantomConfig
    from textsam_eus.stream.sinks.encoders import VideoEncoder

    clip = PhantomClip(n, seed, config=PhantomConfig(height=240, width=320, p_lesion=p_lesion))
    with VideoEncoder(path, 15.0) as enc:
        for i in range(n):
            enc.write(clip[i][0], i / 15)
    return path


def test_weak_positive_gets_no_mask_loss_only_the_presence_hinge(tiny_model):
    import torch

    from textsam_eus.train.trainer import TrainConfig, Trainer

    rng = np.random.default_rng(0)
    image = rng.integers(0, 255, (64, 64, 3), np.uint8)
    lesion = np.zeros((64, 64), np.uint8)
    lesion[20:40, 20:40] = 1
    cfg = TrainConfig(out="unused", iou_loss_weight=2.0, weak_presence_target=0.9, device="cpu", progress=False)
    trainer = Trainer(tiny_model, [(image, None), (image, lesion)], [(image, lesion)], cfg)
    batch = {k: v.unsqueeze(0) for k, v in trainer.train_ds[0].items()}
    assert float(batch["weak"][0]) == 1.0
    with torch.no_grad():
        _, iou = tiny_model(batch["image"])
        loss, dice = trainer._loss(batch)
    expected = 2.0 * torch.relu(0.9 - iou.reshape(-1)) ** 2
    assert float(loss) == pytest.approx(float(expected[0]), rel=1e-4, abs=1e-6)
    assert torch.isnan(dice).all()  # no outline to score
    with pytest.raises(ValueError, match="iou-loss-weight"):
        Trainer(tiny_model, [(image, None)], [(image, lesion)], TrainConfig(out="unused", device="cpu"))


@pytest.mark.slow
def test_positive_video_raises_the_presence_score_and_counts_in_calibration(tmp_path, capsys):
    import torch

    from textsam_eus.cli import main
    from textsam_eus.model.checkpoint import load_checkpoint
    from textsam_eus.train.calibrate import presence_scores
    from textsam_eus.train.video_labels import video_positives

    torch.manual_seed(0)
    # a recording labelled "tumour" whose frames the demo model scores low (it shows no phantom lesion)
    clip = _write_clip(tmp_path / "tumour.mp4", 8, p_lesion=0.0, seed=3)
    frames = video_positives(clip)
    assert len(frames) == 8 and all(m is None for _, m in frames)
    before, labels = presence_scores(load_checkpoint("demo")[0], frames)
    assert all(labels)
    out = tmp_path / "run"
    assert main(["train", "--init", "demo", "--phantom", "4", "--phantom-val", "2", "--phantom-val-negatives", "2",
                 "--phantom-size", "256", "--positive-video", str(clip), "--val-positive-video", str(clip),
                 "--video-every", "2", "--epochs", "3", "--batch-size", "4", "--lr", "1e-3", "--iou-loss-weight", "1",
                 "--weak-presence-target", "0.8", "--out", str(out), "--no-progress", "--threads", "1"]) == 0
    assert "tumour-video frames (no outline): train 4 / val 4" in capsys.readouterr().out
    model, extra = load_checkpoint(out / "best.safetensors")
    assert extra["presence_calibration"]["n_positive"] == 2 + 4  # phantom lesions + the video's frames
    assert extra["positive_video"] == ["tumour.mp4"]
    after, _ = presence_scores(model, frames)
    assert np.mean(after) > np.mean(before) + 0.1, (before, after)


def test_hysteresis_frame_counts_come_from_validation_recordings():
    from textsam_eus.train.calibrate import calibrate_hysteresis

    # a healthy recording with runs of 2 frames above the threshold; a tumour recording that drops out for 3 frames
    healthy = [0.1, 0.9, 0.9, 0.1, 0.1, 0.1] * 10
    tumour = ([0.9] * 7 + [0.1] * 3) * 6
    r = calibrate_hysteresis({"video:h.mp4": (healthy, False), "video:t.mp4": (tumour, True)}, 0.5)
    assert r["show_frames"] == 3  # 2-frame runs never show; 3 is the fewest that keeps them off
    assert r["hide_frames"] == 4  # bridges the 3-frame dropouts, the fewest frames that does
    assert r["feasible"] and r["shown"]["video:h.mp4"] == 0.0 and r["shown"]["video:t.mp4"] > 0.9
    # without tumour recordings hide_frames keeps its default; without any recordings both do
    r = calibrate_hysteresis({"video:h.mp4": (healthy, False)}, 0.5)
    assert (r["show_frames"], r["hide_frames"]) == (3, 5)
    # nor does a healthy recording that never reaches the threshold make it show sooner (no tumour recording says
    # that would help); runs of 3 bright frames need 4
    assert calibrate_hysteresis({"video:h.mp4": ([0.1] * 30, False)}, 0.5)["show_frames"] == 3
    assert calibrate_hysteresis({"video:h.mp4": ([0.1, 0.9, 0.9, 0.9] * 8, False)}, 0.5)["show_frames"] == 4
    assert calibrate_hysteresis({"video:h.mp4": ([0.1] * 30, False)}, 0.5, show_range=range(1, 3))["show_frames"] == 2
    assert (calibrate_hysteresis({}, 0.5)["show_frames"], calibrate_hysteresis({}, 0.5)["hide_frames"]) == (3, 5)


# ------------------------------------------------------------------------------ calibration on the score's scale
def _synthetic_scores(monkeypatch, offset, n=40, seed=0):
    """Validation presence scores without a model: positives around offset + 0.6, negatives around offset."""
    from textsam_eus.train import calibrate

    rng = np.random.default_rng(seed)
    pos = offset + 0.6 + 0.15 * rng.standard_normal(n)
    neg = offset + 0.15 * rng.standard_normal(n)
    scores = [float(v) for v in np.concatenate([pos, neg])]
    labels = [True] * n + [False] * n
    monkeypatch.setattr(calibrate, "presence_scores", lambda model, pairs: (scores, labels))
    return [None] * (2 * n)


@pytest.mark.parametrize("offset", [-1.5, 2.0])  # every score below 0 / above 1
def test_calibration_follows_the_scores_own_range(monkeypatch, offset):
    from textsam_eus.train.calibrate import calibrate_presence

    r = calibrate_presence(None, _synthetic_scores(monkeypatch, offset), min_specificity=0.9)
    assert r["auc"] > 0.95
    assert offset < r["threshold"] < offset + 0.6  # between the groups, on their scale (was clipped to [0, 1])
    assert r["specificity"] >= 0.9 and r["sensitivity"] > 0.8
    gate = PresenceGate(r["threshold"])  # the stream takes it as it is
    assert [gate.update(offset + 0.6).shown for _ in range(3)] == [False, False, True]


def test_a_negative_threshold_is_stored_in_the_checkpoint_and_used(monkeypatch, tmp_path, tiny_model):
    from textsam_eus.commands.train import calibrate_best
    from textsam_eus.engines import create_engine
    from textsam_eus.model.checkpoint import load_checkpoint, save_checkpoint

    path = save_checkpoint(tiny_model, tmp_path / "best.safetensors")
    result = calibrate_best(path, _synthetic_scores(monkeypatch, -1.5), 0.9)
    model, extra = load_checkpoint(path)
    assert model.cfg.presence_threshold < -0.9 and result["sensitivity"] > 0.8
    assert extra["presence_calibration"]["threshold"] == pytest.approx(model.cfg.presence_threshold, abs=1e-4)
    assert create_engine("torch", model=model, device="cpu").presence["threshold"] == model.cfg.presence_threshold


def test_scores_that_are_not_finite_leave_presence_off_with_the_reason(monkeypatch):
    from textsam_eus.train import calibrate

    monkeypatch.setattr(calibrate, "presence_scores",
                        lambda model, pairs: ([0.5, float("nan"), 0.1, 0.2], [True, True, False, False]))
    r = calibrate.calibrate_presence(None, [None] * 4)
    assert r["threshold"] is None and "1 of 4 validation presence scores are NaN/Inf" in r["note"]
    monkeypatch.setattr(calibrate, "presence_scores", lambda model, pairs: ([5e6, 0.4, 0.1], [True, True, False]))
    r = calibrate.calibrate_presence(None, [None] * 3)
    assert r["threshold"] is None and "beyond the threshold's bound" in r["note"]


def test_the_gate_takes_any_finite_threshold():
    assert PresenceGate(-0.4).update(-0.1).shown is False  # not yet 3 frames
    gate = PresenceGate(-0.4, show_frames=1)
    assert gate.update(-0.1).shown and not PresenceGate(-0.4, 1, 1).update(-0.5).shown
    for bad in (float("nan"), float("inf"), "high"):
        with pytest.raises(Exception, match="presence threshold .* is invalid"):
            PresenceGate(bad)
