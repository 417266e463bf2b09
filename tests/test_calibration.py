"""Honest calibration: negatives split by group, lesion-free crops, 95% intervals, the warning and the note."""

from __future__ import annotations

import json

import cv2
import numpy as np
import pytest

from textsam_eus.core.errors import OptionError
from textsam_eus.train import metrics
from textsam_eus.train.lesion_free_crops import lesion_free_crops, lesion_free_windows
from textsam_eus.train.negative_split import (CROP_SOURCE, image_dhash, is_negative, negative_groups,
                                              parse_fractions, part_counts, split_negatives)
from textsam_eus.train.readers import DatasetError, Sample, load_pair
from textsam_eus.train.splits import split_samples


def _texture(seed: int, size: int = 48) -> np.ndarray:
    """A speckle-like grey image; different seeds give unrelated images (far apart by their hash)."""
    rng = np.random.default_rng(seed)
    coarse = rng.integers(0, 255, (6, 6)).astype(np.float32)
    return np.clip(cv2.resize(coarse, (size, size), interpolation=cv2.INTER_CUBIC), 0, 255).astype(np.uint8)


def _negatives_manifest(folder, n_cases=12, per_case=2, alias=None):
    """A manifest of lesion-free images: ``per_case`` near-duplicates per case; ``alias`` = (case a, case b) gives
    b's images a near-duplicate of a's (a duplicate the ids miss)."""
    folder.mkdir(parents=True, exist_ok=True)
    rows = ["image,source,case"]
    for c in range(n_cases):
        base = _texture(1000 + (alias[0] if alias and c == alias[1] else c))
        for k in range(per_case):
            noisy = np.clip(base.astype(int) + np.random.default_rng((c, k)).integers(-3, 4, base.shape), 0, 255)
            cv2.imwrite(str(folder / f"n{c}_{k}.png"), noisy.astype(np.uint8))
            rows.append(f"n{c}_{k}.png,normal,g{c}")
    (folder / "manifest.csv").write_text("\n".join(rows) + "\n")
    return folder / "manifest.csv"


def _lesions_manifest(folder, n_cases=10, size=48):
    """Lesion images with a small square lesion in the top-left corner (room for lesion-free crops)."""
    folder.mkdir(parents=True, exist_ok=True)
    rows = ["image,mask,source,case"]
    for c in range(n_cases):
        image = _texture(c, size)
        mask = np.zeros((size, size), np.uint8)
        mask[2:12, 3:13] = 255
        image[mask > 0] = 20
        cv2.imwrite(str(folder / f"l{c}.png"), image)
        cv2.imwrite(str(folder / f"l{c}_m.png"), mask)
        rows.append(f"l{c}.png,l{c}_m.png,lesion,p{c}")
    (folder / "manifest.csv").write_text("\n".join(rows) + "\n")
    return folder / "manifest.csv"


# ------------------------------------------------------------------------------------------- the negative split
def test_negative_split_keeps_groups_whole_and_is_deterministic(tmp_path):
    from textsam_eus.train.readers import read_manifest

    samples = read_manifest(_negatives_manifest(tmp_path, n_cases=20, per_case=3))
    parts = split_negatives(samples, (0.5, 0.25, 0.25), seed=3)
    assert sum(len(v) for v in parts.values()) == 60
    cases = {p: {s.case for s in v} for p, v in parts.items()}
    assert not (cases["train"] & cases["calibration"] or cases["train"] & cases["test"]
                or cases["calibration"] & cases["test"])  # no group in two parts
    assert (len(cases["train"]), len(cases["calibration"]), len(cases["test"])) == (10, 5, 5)
    again = split_negatives(samples, (0.5, 0.25, 0.25), seed=3)
    assert all([s.image for s in again[p]] == [s.image for s in parts[p]] for p in parts)
    other = split_negatives(samples, (0.5, 0.25, 0.25), seed=4)
    assert {s.case for s in other["test"]} != cases["test"]  # the seed decides
    counts = part_counts(parts)
    assert counts["calibration"] == {"images": 15, "negatives": 15, "negative_crops": 0, "negative_groups": 5,
                                     "positives": 0}


def test_near_duplicates_across_cases_are_one_group(tmp_path):
    from textsam_eus.train.readers import read_manifest

    samples = read_manifest(_negatives_manifest(tmp_path, n_cases=8, per_case=2, alias=(2, 5)))
    groups = negative_groups(samples)
    by_case = dict(zip((s.case for s in samples), groups))
    assert by_case["g5"] == by_case["g2"] == "g2"  # the ids miss the duplicate, the hash finds it
    assert len(set(groups)) == 7
    for seed in range(6):  # wherever the split puts g2, g5 goes with it
        parts = split_negatives(samples, (0.4, 0.3, 0.3), seed=seed)
        where = {s.case: p for p, v in parts.items() for s in v}
        assert where["g2"] == where["g5"]
    gain = np.clip(_texture(7).astype(np.float32) * 1.2, 0, 255).astype(np.uint8)
    assert bin(image_dhash(gain) ^ image_dhash(_texture(7))).count("1") <= 4  # robust to a gain change
    assert bin(image_dhash(_texture(7)) ^ image_dhash(_texture(8))).count("1") > 8


def test_a_given_split_is_kept_and_bad_fractions_are_one_line_errors(tmp_path):
    samples = [Sample(image=tmp_path / f"{i}.png", mask=None, case=f"c{i}", split=("val" if i == 0 else None))
               for i in range(6)]
    parts = split_negatives(samples, (0.5, 0.25, 0.25), groups=[s.case for s in samples])
    assert samples[0] in parts["calibration"]  # a validation image is a calibration negative, never trained on
    for bad in ("0.5,0.5", "0.5,0.6,0.2", "a,b,c", "1,0,0", "0.5,-0.1,0.6"):
        with pytest.raises(OptionError, match="--negative-split .* is invalid: give three"):
            parse_fractions(bad)
    with pytest.raises(DatasetError, match=r"cannot be dealt out: only 1 group\(s\) of lesion-free images"):
        split_negatives(samples[1:2], (0.5, 0.25, 0.25), groups=["c1"])
    with pytest.raises(DatasetError, match="the train part of the lesion-free images would be empty"):
        split_negatives(samples[:1], (0.5, 0.25, 0.25), groups=["c0"])  # its one group is given to calibration
    cancer_frame = Sample(image=tmp_path / "x.png", mask=None, case="C01", source="cancer")
    assert not is_negative(cancer_frame)  # a cancer frame without an outline is not lesion-free


def test_split_samples_puts_negatives_in_three_parts_and_lesions_as_before(tmp_path):
    lesions = str(_lesions_manifest(tmp_path / "l"))
    normal = str(_negatives_manifest(tmp_path / "n"))
    before = split_samples([lesions, normal], "auto", 0.2, 0.2, 0)
    assert before["calibration"] == []
    after = split_samples([lesions, normal], "auto", 0.2, 0.2, 0, negative_split="0.5,0.25,0.25")
    alone = split_samples([lesions], "auto", 0.2, 0.2, 0)
    for k in ("train", "val", "test"):  # the lesion images are split as they are without any negatives
        assert [s.image for s in after[k] if s.mask] == [s.image for s in alone[k]]
    assert not any(is_negative(s) for s in after["val"])  # no negative tunes the epoch choice
    assert all(is_negative(s) for s in after["calibration"]) and after["calibration"]
    seen = [s.case for k in after for s in after[k] if is_negative(s)]
    assert len(seen) == 24 == len(set(s.image for k in after for s in after[k] if is_negative(s)))


# ---------------------------------------------------------------------------------------- lesion-free crops
def test_lesion_free_windows_miss_the_lesion_and_are_large():
    mask = np.zeros((60, 80), np.uint8)
    mask[20:40, 30:50] = 1
    wins = lesion_free_windows(mask, 4, np.random.default_rng(0))
    assert wins and len(wins) <= 4
    for x, y, w, h in wins:
        assert min(w, h) >= 30 and x + w <= 80 and y + h <= 60  # at least half the shorter side, inside
        assert not mask[y:y + h, x:x + w].any()
    assert wins == lesion_free_windows(mask, 4, np.random.default_rng(0))
    assert lesion_free_windows(np.ones((60, 80), np.uint8), 3, np.random.default_rng(0)) == []
    with pytest.raises(OptionError, match="min_side"):
        lesion_free_windows(mask, 1, np.random.default_rng(0), min_side=0)


def test_crops_load_lesion_free_and_never_cross_the_split(tmp_path):
    lesions = str(_lesions_manifest(tmp_path / "l", n_cases=10))
    normal = str(_negatives_manifest(tmp_path / "n"))
    sp = split_samples([lesions, normal], "auto", 0.2, 0.2, 0, negative_split="0.5,0.25,0.25", lesion_free_crops=2)
    lesion_part = {s.case: k for k, v in sp.items() for s in v if s.mask is not None}
    expect = {"train": "train", "val": "calibration", "test": "test"}
    crops = [(k, s) for k, v in sp.items() for s in v if s.source == CROP_SOURCE]
    assert len(crops) >= 10
    for part, s in crops:
        assert part == expect[lesion_part[s.case]]  # with its own image's patient
        image, mask = load_pair(s)
        assert min(image.shape[:2]) >= 24 and mask.max() == 0
        full_mask = cv2.imread(str(tmp_path / "l" / (s.image.stem + "_m.png")), 0)
        x, y, w, h = s.crop
        assert not full_mask[y:y + h, x:x + w].any()  # truly no lesion pixel in the window
    again = split_samples([lesions, normal], "auto", 0.2, 0.2, 0, negative_split="0.5,0.25,0.25",
                          lesion_free_crops=2)
    assert [s.crop for s in again["calibration"]] == [s.crop for s in sp["calibration"]]
    assert part_counts(sp)["calibration"]["negative_crops"] == sum(1 for k, _ in crops if k == "calibration")
    # an EUS-database frame: the window is found in the cropped frame and stored in the file's pixels
    screen = np.zeros((600, 800), np.uint8)
    screen[100:200, 100:200] = 255
    cv2.imwrite(str(tmp_path / "screen.png"), np.full((600, 800), 80, np.uint8))
    cv2.imwrite(str(tmp_path / "screen_m.png"), screen)
    eus = Sample(tmp_path / "screen.png", tmp_path / "screen_m.png", "C01", source="cancer", crop="eus")
    (c,) = lesion_free_crops([eus], 1, seed=0)
    assert c.crop[0] >= 44 and c.crop[1] >= 56 and load_pair(c)[1].max() == 0
    assert not screen[c.crop[1]:c.crop[1] + c.crop[3], c.crop[0]:c.crop[0] + c.crop[2]].any()


# ---------------------------------------------------------------------------------------------- 95% intervals
def test_wilson_interval_known_values():
    lo, hi = metrics.wilson_interval(7, 25)  # the 7 of 25 lesion-free images outlined
    assert lo == pytest.approx(0.1428, abs=1e-3) and hi == pytest.approx(0.4758, abs=1e-3)
    assert metrics.wilson_interval(0, 25) == (0.0, pytest.approx(0.1332, abs=1e-3))
    assert metrics.wilson_interval(25, 25)[1] == 1.0 and metrics.wilson_interval(25, 25)[0] < 0.87
    assert all(np.isnan(metrics.wilson_interval(0, 0)))
    wide, narrow = metrics.wilson_interval(9, 10), metrics.wilson_interval(900, 1000)
    assert wide[1] - wide[0] > 5 * (narrow[1] - narrow[0])
    with pytest.raises(ValueError):
        metrics.wilson_interval(11, 10)


def test_bootstrap_auc_interval_is_seeded_and_covers_the_auc():
    rng = np.random.default_rng(0)
    scores = np.r_[rng.normal(1, 1, 60), rng.normal(0, 1, 60)]
    labels = [True] * 60 + [False] * 60
    auc = metrics.roc_auc(scores, labels)
    lo, hi = metrics.bootstrap_auc_interval(scores, labels, seed=1)
    assert lo < auc < hi and 0.05 < hi - lo < 0.4
    assert metrics.bootstrap_auc_interval(scores, labels, seed=1) == (lo, hi)
    assert metrics.bootstrap_auc_interval(scores, labels, seed=2) != (lo, hi)
    # resampling by case: 20 exact copies of each image do not make the interval 20 times sure
    many = np.repeat(scores, 20)
    cases = np.repeat(np.arange(120), 20)
    naive = metrics.bootstrap_auc_interval(many, np.repeat(labels, 20), n_boot=300)
    grouped = metrics.bootstrap_auc_interval(many, np.repeat(labels, 20), groups=cases, n_boot=300)
    assert grouped[1] - grouped[0] > 3 * (naive[1] - naive[0])
    assert all(np.isnan(metrics.bootstrap_auc_interval([0.1, 0.2], [False, False])))
    # the weighted AUC equals roc_auc on the resampled scores (ties counted half)
    s = np.round(scores, 1)
    idx = rng.integers(0, s.size, s.size)
    w = np.bincount(idx, minlength=s.size).astype(float)[None]
    assert metrics._weighted_aucs(s, np.asarray(labels), w)[0] == pytest.approx(
        metrics.roc_auc(s[idx], np.asarray(labels)[idx]))


def test_eval_summary_reports_intervals_and_negatives_only():
    from textsam_eus.train.evaluate import format_summary, summarize

    def rec(i, presence, empty):
        return {"id": str(i), "case": f"c{i // 2}", "dice": 1.0, "nsd": 1.0, "nsd_reference_convention": 1.0,
                "iou_pred": 0.5, "presence": presence, "gt_empty": empty, "pred_empty": False}

    rng = np.random.default_rng(0)
    records = [rec(i, float(rng.normal(1 if i < 30 else 0)), i >= 30) for i in range(60)]
    s = summarize(records, presence_threshold=0.5)
    lo, hi = s["presence_auc_ci95"]
    assert lo < s["presence_auc"] < hi
    p = s["presence"]
    k = round(p["specificity"] * 30)
    assert p["specificity_ci95"] == pytest.approx(list(metrics.wilson_interval(k, 30)))
    text = format_summary({**s, "mode": "auto"})
    assert f"specificity {100 * p['specificity']:.1f}% [{100 * p['specificity_ci95'][0]:.1f}, " in text
    assert f"presence AUC {s['presence_auc']:.3f} [{lo:.3f}, {hi:.3f}]" in text
    only_neg = summarize(records[30:], presence_threshold=0.5)  # a test part of lesion-free images alone
    assert only_neg["presence"]["n_negative"] == 30 and "presence_auc" not in only_neg
    assert f"of 30 lesion-free ({30 - k} shown as tumour)" in format_summary({**only_neg, "mode": "auto"})


# ------------------------------------------------------------------------------------ the warning and the note
def test_few_negatives_warning_names_the_count_and_the_fix():
    from textsam_eus.train.calibrate import few_negatives_warning

    line = few_negatives_warning(25, 19)
    assert "only 25 lesion-free image(s) in 19 group(s), fewer than 100" in line and "\n" not in line
    assert "up to 13%" in line and "--negative-split" in line and "--lesion-free-crops" in line
    assert few_negatives_warning(100) is None
    assert "presence stays off" in few_negatives_warning(0)


def test_calibration_note_records_the_parts(monkeypatch):
    from textsam_eus.train import calibrate

    rng = np.random.default_rng(0)
    scores = [float(v) for v in np.r_[rng.normal(0.6, 0.1, 20), rng.normal(0.0, 0.1, 30)]]
    labels = [True] * 20 + [False] * 30
    monkeypatch.setattr(calibrate, "presence_scores", lambda model, pairs: (scores, labels))
    parts = {"calibration": {"images": 30, "negatives": 30, "negative_crops": 10, "negative_groups": 12,
                             "positives": 0},
             "test": {"images": 40, "negatives": 25, "negative_crops": 5, "negative_groups": 11, "positives": 15}}
    r = calibrate.calibrate_presence(None, [None] * 50, 0.9, parts=parts)
    assert r["parts"] == parts and r["specificity"] >= 0.9
    assert "30 of the negatives from the calibration part (12 group(s))" in r["note"]
    assert "test part (25 lesion-free, 15 lesion image(s))" in r["note"]
    assert len(r["specificity_ci95"]) == 2
    plain = {"val": {"images": 50, "negatives": 30, "negative_crops": 0, "negative_groups": 20, "positives": 20},
             "calibration": {"images": 0, "negatives": 0, "negative_crops": 0, "negative_groups": 0, "positives": 0}}
    r = calibrate.calibrate_presence(None, [None] * 50, 0.9, parts=plain)  # no --negative-split: said so
    assert "fitted on the validation split (30 lesion-free, 20 lesion image(s))" in r["note"]
    assert "--negative-split" in r["note"]


@pytest.mark.slow
def test_train_calibrates_on_the_calibration_part_warns_and_eval_reports_the_test_part(tmp_path, capsys):
    from textsam_eus.cli import main
    from textsam_eus.model.checkpoint import load_checkpoint

    from test_presence import _write_clip

    lesions = str(_lesions_manifest(tmp_path / "l", n_cases=10, size=64))
    normal = str(_negatives_manifest(tmp_path / "n", n_cases=12))
    healthy_a = str(_write_clip(tmp_path / "healthy_a.mp4", 6, seed=1))
    healthy_b = str(_write_clip(tmp_path / "healthy_b.mp4", 4, seed=2))
    data = ["--data", lesions, "--data", normal, "--val-fraction", "0.2", "--test-fraction", "0.2",
            "--negative-split", "0.5,0.25,0.25", "--lesion-free-crops", "1", "--calibration-negative-video",
            healthy_a, "--test-negative-video", healthy_b, "--video-every", "2"]
    out = tmp_path / "run"
    # a recording that calibrates cannot judge: refused before any data is read
    assert main(["train", "--preset", "tiny", *data, "--test-negative-video", healthy_a, "--out", str(out)]) != 0
    assert "both a --test-negative-video and a --calibration-negative-video" in capsys.readouterr().err
    assert main(["train", "--preset", "tiny", "--image-size", "64", *data, "--epochs", "1",
                 "--max-steps-per-epoch", "2", "--out", str(out), "--no-progress", "--threads", "1"]) == 0
    captured = capsys.readouterr()
    warning = [line for line in captured.err.splitlines() if "calibrated on only" in line]
    assert len(warning) == 1 and warning[0].startswith("warning: ") and "fewer than 100" in warning[0]
    assert "/ calibration " in captured.out
    n_cal_data = part_counts(split_samples([lesions, normal], "auto", 0.2, 0.2, 0, negative_split="0.5,0.25,0.25",
                                           lesion_free_crops=1))["calibration"]["negatives"]
    assert f"presence calibration set: {n_cal_data + 3} lesion-free image(s) in " in captured.out
    log = json.loads((out / "log.json").read_text())
    assert log["warnings"] == [warning[0][len("warning: "):]] and log["history"]
    _, extra = load_checkpoint(out / "best.safetensors")
    cal = extra["presence_calibration"]
    sp = split_samples([lesions, normal], "auto", 0.2, 0.2, 0, negative_split="0.5,0.25,0.25", lesion_free_crops=1)
    assert cal["parts"]["calibration"] == part_counts(sp)["calibration"]
    assert cal["parts"]["negative_split"] == "0.5,0.25,0.25" and extra["negative_split"] == "0.5,0.25,0.25"
    n_cal = part_counts(sp)["calibration"]["negatives"]
    assert cal["n_negative"] == n_cal + 3  # the calibration part's negatives and healthy_a's 3 frames (val: none)
    assert cal["groups"]["video:healthy_a.mp4"]["n"] == 3 and "video:healthy_a.mp4" in cal["hysteresis"]["shown"]
    assert main(["eval", "--checkpoint", str(out / "best.safetensors"), *data, "--mode", "auto",
                 "--json", str(tmp_path / "e.json"), "--no-progress", "--threads", "1"]) == 0
    e = json.loads((tmp_path / "e.json").read_text())
    assert e["subset"] == "test" and e["n_negative"] == part_counts(sp)["test"]["negatives"] + 2  # + healthy_b
    assert sum(r["case"] == "video:healthy_b.mp4" for r in e["per_image"]) == 2
    assert len(e["presence_auc_ci95"]) == 2
    assert cal["threshold"] is not None and e["presence"]["threshold"] == pytest.approx(cal["threshold"], abs=1e-4)
    assert e["presence"]["n_negative"] == e["n_negative"] and len(e["presence"]["specificity_ci95"]) == 2
    ids = [r["id"] for r in e["per_image"]]
    assert len(ids) == len(set(ids)) and any("#crop=" in i for i in ids)
    # evaluating with other split flags than the threshold was fitted with: a warning
    assert main(["eval", "--checkpoint", str(out / "best.safetensors"), "--data", lesions, "--data", normal,
                 "--test-fraction", "0.2", "--mode", "auto", "--no-progress", "--threads", "1"]) == 0
    assert "calibrated with --negative-split 0.5,0.25,0.25 (now None)" in capsys.readouterr().err
    # synthetic clips alone have no split to repeat: no such warning
    assert main(["eval", "--checkpoint", str(out / "best.safetensors"), "--phantom-clips", "1", "--clip-frames", "2",
                 "--mode", "auto", "--no-progress", "--threads", "1"]) == 0
    assert "calibrated with" not in capsys.readouterr().err


def test_eval_warns_when_its_test_recording_picked_the_epoch(tmp_path, capsys):
    """A --val-negative-video is recorded in the checkpoint (it picked the epoch and set the threshold), so eval
    knows it is no held-out recording; a recording it never saw passes without a word."""
    import argparse

    from textsam_eus.commands.evaluate import _check_same_split

    extra = {"negative_video": ["a.mp4"], "val_negative_video": ["b.mp4"], "val_positive_video": ["c.mp4"]}
    for name, warned in (("b.mp4", True), ("c.mp4", True), ("a.mp4", True), ("d.mp4", False)):
        _check_same_split(argparse.Namespace(test_negative_video=[str(tmp_path / name)]), extra)
        err = capsys.readouterr().err
        assert (f"{name} trained or calibrated this checkpoint" in err) == warned, (name, err)


# ------------------------------------------------------------------------------- ultrasound-like variations
def test_ultrasound_variants_vary_like_scanners_and_stay_lesion_free():
    from textsam_eus.core.config import ConfigError
    from textsam_eus.train.negative_variants import VariantConfig, negative_variants, ultrasound_variant

    image = np.repeat(_texture(3, 96)[..., None], 3, axis=2)
    a = ultrasound_variant(image, np.random.default_rng(0))
    assert a.shape == image.shape and a.dtype == np.uint8 and not np.array_equal(a, image)
    assert np.array_equal(a, ultrasound_variant(image, np.random.default_rng(0)))
    fan = ultrasound_variant(image, np.random.default_rng(1), VariantConfig(sector=1.0, overlay=0.0, zoom=(1, 1)))
    assert (fan.max(axis=2) == 0).mean() > 0.05 and fan[0, 0].max() == 0  # outside the fan: black corners
    text = ultrasound_variant(image, np.random.default_rng(2), VariantConfig(sector=0.0, overlay=1.0, speckle=0.0,
                                                                             gain=(1, 1), gamma=(1, 1), zoom=(1, 1)))
    assert (np.abs(text.astype(int) - image).max(axis=2) > 40).sum() > 20  # drawn text/graphics
    deeper = ultrasound_variant(image, np.random.default_rng(3), VariantConfig(sector=0.0, overlay=0.0, speckle=0.0,
                                                                               gain=(1, 1), gamma=(1, 1),
                                                                               zoom=(1.5, 1.5)))
    assert deeper[-20:].max() == 0 and deeper[:40].max() > 0  # more depth: the anatomy shrinks to the top
    with pytest.raises(ConfigError, match=r"VariantConfig.zoom=\(1.3, 0.7\) is invalid"):
        VariantConfig(zoom=(1.3, 0.7))
    with pytest.raises(ConfigError, match="VariantConfig.sector=2 is invalid"):
        VariantConfig(sector=2)
    lesion = np.zeros((96, 96), np.uint8)
    lesion[10:20, 10:20] = 1
    pairs = [(image, np.zeros((96, 96), np.uint8)), (image, lesion)]
    out = negative_variants(pairs, 3, seed=0)
    assert len(out) == 3 and all(m.shape == (96, 96) and m.max() == 0 for _, m in out)  # lesion images skipped
    with pytest.raises(OptionError, match="--negative-variants -1 is invalid"):
        negative_variants(pairs, -1)


def test_train_adds_variants_to_train_and_calibration_but_never_counts_them(tmp_path):
    import argparse

    from textsam_eus.commands import train as cmd

    parser = argparse.ArgumentParser()
    cmd.add_arguments(parser)
    lesions = str(_lesions_manifest(tmp_path / "l", n_cases=10))
    normal = str(_negatives_manifest(tmp_path / "n"))
    base = ["--out", str(tmp_path / "o"), "--data", lesions, "--data", normal, "--val-fraction", "0.2",
            "--test-fraction", "0.2", "--negative-split", "0.5,0.25,0.25"]
    plain = cmd.load_splits(parser.parse_args(base))
    varied = cmd.load_splits(parser.parse_args(base + ["--negative-variants", "2"]))
    n_train_neg = plain["parts"]["train"]["negatives"]
    assert len(varied["train"]) == len(plain["train"]) + 2 * n_train_neg
    assert varied["parts"]["calibration"]["variants"] == 2 * plain["parts"]["calibration"]["negatives"]
    assert len(varied["val"]) == len(plain["val"])  # the epoch is still chosen on real images only
    pairs, groups = cmd.calibration_set(varied)
    assert groups.count(cmd.VARIANT_GROUP) == varied["parts"]["calibration"]["variants"] > 0
    (line,) = cmd._calibration_warnings(pairs, groups, varied["parts"])
    n_real = plain["parts"]["calibration"]["negatives"]
    assert f"only {n_real} lesion-free image(s)" in line  # the variants are no new evidence


# ---------------------------------------------------------------------------------- the trust benchmark's images
class _TopLeft:
    """A fake engine that outlines the top-left corner of every image (where the manifests' lesions are), presence
    1 on images with a dark square there, else 0.2."""

    def segment(self, image, iterations=0):
        from types import SimpleNamespace

        mask = np.zeros(image.shape[:2], bool)
        mask[2:12, 3:13] = True
        dark = image.shape[0] > 12 and image.shape[1] > 13 and image[2:12, 3:13].mean() < 40
        return SimpleNamespace(mask=mask, presence=1.0 if dark else 0.2)


def test_trust_benchmark_scores_the_held_out_part_with_intervals(tmp_path):
    """eus_trust's images: the test part of the split (lesion images, lesion-free images and crops apart), Wilson
    intervals, and how many of them the checkpoint trained on (its recorded split)."""
    from benchmarks import eus_trust as trust

    lesions = str(_lesions_manifest(tmp_path / "l", n_cases=10, size=64))
    normal = str(_negatives_manifest(tmp_path / "n", n_cases=12))
    given = {"test_fraction": 0.2, "negative_split": "0.5,0.25,0.25", "lesion_free_crops": 1}
    flags = trust.split_flags({}, given)
    assert flags["part"] == "test" and trust.split_flags({})["part"] == "val"  # an older checkpoint: validation
    assert trust.split_flags({"test_fraction": 0.2})["test_fraction"] == 0.2  # the checkpoint's record
    samples = trust.held_out_samples([lesions, normal], flags)
    sp = split_samples([lesions, normal], "auto", 0.15, 0.2, 0, negative_split="0.5,0.25,0.25", lesion_free_crops=1)
    assert len(samples) == len(sp["test"])
    # a checkpoint that trained on the whole lesion set (its record: no test part)
    seen = trust.seen_images({"data": [lesions], "val_fraction": 0.1})
    out = trust.image_runs(_TopLeft(), 0.5, samples, seen)
    n_les = sum(s.mask is not None and s.crop is None for s in sp["test"])
    n_img = sum(s.mask is None and s.crop is None for s in sp["test"])
    assert out["lesion"]["images"] == n_les and out["lesion"]["dice"] == pytest.approx(1.0)
    assert out["lesion"]["sensitivity"] == 1.0 and out["lesion"]["sensitivity_ci95"][1] == 1.0
    trained = {s.image for s in split_samples([lesions], "auto", 0.1, 0.0, 0)["train"]}
    expected = sum(s.image in trained for s in sp["test"] if s.mask is not None and s.crop is None)
    assert 0 < expected < n_les + 1 and out["lesion"]["seen"] == expected  # its train part, not its validation
    assert out["lesion_free_images"]["n"] == n_img and out["lesion_free_images"]["shown"] == 0
    assert out["lesion_free_images"]["ci95"][0] == 0.0 and 0 < out["lesion_free_images"]["ci95"][1] < 1
    assert out["lesion_free_images"]["seen"] == 0  # the normal images were not in its --data
    crops = out["lesion_free_crops"]
    assert crops["n"] > 0 and out["lesion_free_all"]["n"] == n_img + crops["n"]
    lo, hi = metrics.wilson_interval(crops["shown"], crops["n"])
    assert crops["ci95"] == [lo, hi]
