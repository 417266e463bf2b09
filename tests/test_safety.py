"""Train/eval data safety, tried as a new user would: outputs never replaced silently, exact resume, damaged
files, lesion-free data, ground truth in compare, checkpoint metadata, info flags, the authors' resize."""

from __future__ import annotations

import json
import os
import random
import re

import cv2
import numpy as np
import pytest
import torch

from textsam_eus.cli import main
from textsam_eus.common.phantom import PhantomConfig, make_phantom_dataset
from textsam_eus.model.checkpoint import CheckpointError, load_checkpoint, read_checkpoint_meta, save_checkpoint
from textsam_eus.model.registry import build_textsam
from textsam_eus.train.outputs import OutputPathError
from textsam_eus.train.trainer import TrainConfig, Trainer

PCFG = PhantomConfig(height=128, width=128)
TRAIN = ["train", "--preset", "tiny", "--image-size", "128", "--phantom", "2", "--phantom-val", "1",
         "--phantom-size", "128", "--epochs", "1", "--max-steps-per-epoch", "1", "--no-progress", "--threads", "1"]


def _pairs(n, seed):
    return make_phantom_dataset(n, seed=seed, config=PCFG)


def _tiny(seed=0):
    torch.manual_seed(seed)
    return build_textsam("tiny", image_size=128, patch_size=16)


def _one_line_error(capsys, command, *needles):
    """Run the CLI; it must fail with one line on stderr holding every needle (regex)."""
    assert main(command) == 1
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "Traceback" not in err, err
    for needle in needles:
        assert re.search(needle, err), (needle, err)
    return err


# ------------------------------------------------------------------------------------------- 1. train --out
def test_train_refuses_an_earlier_run_before_reading_data(tmp_path, capsys):
    out = tmp_path / "run"
    out.mkdir()
    (out / "best.safetensors").write_bytes(b"the earlier run's best model")
    (out / "notes.txt").write_text("mine")
    # --data names nothing: had the data been read first, the error would be about it
    err = _one_line_error(capsys, [*TRAIN, "--data", str(tmp_path / "missing"), "--out", str(out)],
                          "already holds a training run", "best.safetensors", "--resume", "--overwrite")
    assert "missing" not in err
    assert (out / "best.safetensors").read_bytes() == b"the earlier run's best model"
    _one_line_error(capsys, [*TRAIN, "--out", str(out), "--resume", "--overwrite"], "give one of them")
    _one_line_error(capsys, [*TRAIN, "--out", str(out), "--resume"], "cannot resume", "train_state.pt")
    with pytest.raises(OutputPathError, match="already holds a training run"):  # the library refuses too
        Trainer(_tiny(), _pairs(1, 1), _pairs(1, 2), TrainConfig(out=str(out), progress=False))
    # a file as --out
    (tmp_path / "afile").write_text("x")
    _one_line_error(capsys, [*TRAIN, "--out", str(tmp_path / "afile")], "is a file, not a folder")
    assert (tmp_path / "afile").read_text() == "x"


@pytest.mark.slow
def test_train_overwrite_removes_only_the_runs_files(tmp_path, capsys):
    out = tmp_path / "run"
    out.mkdir()
    for name in ("best.safetensors", "last.safetensors", "train_state.pt", "log.json", "log.csv"):
        (out / name).write_bytes(b"old")
    (out / ".best.safetensors.123.tmp").write_bytes(b"a torn write")
    (out / "notes.txt").write_text("mine")
    (out / "data").mkdir()
    assert main([*TRAIN, "--out", str(out), "--overwrite", "--resize", "bilinear"]) == 0
    capsys.readouterr()
    assert (out / "notes.txt").read_text() == "mine" and (out / "data").is_dir()
    assert not (out / ".best.safetensors.123.tmp").exists()
    model, extra = load_checkpoint(out / "best.safetensors")  # the new run's
    assert extra["epoch"] == 1 and model.cfg.resize == "bilinear"
    assert json.loads((out / "log.json").read_text())["history"][0]["epoch"] == 1
    assert torch.load(out / "train_state.pt", weights_only=True)["epoch"] == 0
    assert not [p.name for p in out.iterdir() if p.name.endswith(".tmp")]  # written whole, then renamed


def test_clear_run_removes_the_runs_temporaries_of_either_style(tmp_path):
    from textsam_eus.train.outputs import clear_run

    for name in ("log.json", "best.safetensors.part", "train_state.pt.part", ".log.csv.77.tmp", "notes.txt",
                 "notes.txt.part", ".x.1.tmp"):
        (tmp_path / name).write_text("x")
    assert sorted(clear_run(tmp_path)) == [".log.csv.77.tmp", "best.safetensors.part", "log.json",
                                           "train_state.pt.part"]
    assert sorted(p.name for p in tmp_path.iterdir()) == [".x.1.tmp", "notes.txt", "notes.txt.part"]


def test_checkpoints_and_logs_leave_no_temporary(tmp_path):
    path = save_checkpoint(_tiny(), tmp_path / "m.safetensors")
    assert [p.name for p in tmp_path.iterdir()] == ["m.safetensors"] and load_checkpoint(path)[0] is not None


def test_overwrite_keeps_the_earlier_run_until_the_new_one_has_a_result(tmp_path):
    out = tmp_path / "run"
    out.mkdir()
    (out / "best.safetensors").write_bytes(b"old")
    cfg = TrainConfig(out=str(out), epochs=1, progress=False, overwrite=True, max_steps_per_epoch=1)
    trainer = Trainer(_tiny(), _pairs(2, 1), _pairs(1, 2), cfg)

    def fail(epoch):
        raise KeyboardInterrupt
    trainer.train_epoch = fail
    with pytest.raises(KeyboardInterrupt):
        trainer.fit()
    assert (out / "best.safetensors").read_bytes() == b"old"  # nothing new to replace it with: it stays


# ------------------------------------------------------------------------------------------- 2. eval outputs
def _eval_cmd(ckpt, *extra):
    return ["eval", "--checkpoint", str(ckpt), "--phantom", "2", "--phantom-size", "128", "--mode", "auto",
            "--no-progress", "--threads", "1", *extra]


@pytest.fixture
def tiny_ckpt(tmp_path):
    return save_checkpoint(_tiny(), tmp_path / "m.safetensors")


def test_eval_checks_every_output_before_evaluating(tmp_path, tiny_ckpt, capsys, monkeypatch):
    from textsam_eus.train import evaluate as E

    def no_work(*a, **k):
        raise AssertionError("evaluated before the outputs were checked")
    monkeypatch.setattr(E, "evaluate", no_work)
    (tmp_path / "o").mkdir()
    _one_line_error(capsys, _eval_cmd(tiny_ckpt, "--json", str(tmp_path / "o")), "--json .* is a folder",
                    "results.json")
    _one_line_error(capsys, _eval_cmd(tiny_ckpt, "--json", str(tmp_path / "new") + "/"), "is a folder")
    (tmp_path / "afile").write_text("x")
    _one_line_error(capsys, _eval_cmd(tiny_ckpt, "--json", str(tmp_path / "afile" / "r.json")), "is a file")
    _one_line_error(capsys, _eval_cmd(tiny_ckpt, "--csv", str(tmp_path / "o")), "--csv .* is a folder")
    _one_line_error(capsys, _eval_cmd(tiny_ckpt, "--json", str(tmp_path / "r"), "--csv", str(tmp_path / "r")),
                    "both name")
    (tmp_path / "old.json").write_text("earlier results")
    _one_line_error(capsys, _eval_cmd(tiny_ckpt, "--json", str(tmp_path / "old.json")), "already exists",
                    "--overwrite")
    assert (tmp_path / "old.json").read_text() == "earlier results"
    if os.geteuid() != 0:  # root may write anywhere
        ro = tmp_path / "ro"
        ro.mkdir()
        ro.chmod(0o555)
        try:
            _one_line_error(capsys, _eval_cmd(tiny_ckpt, "--json", str(ro / "r.json")), "not writable")
        finally:
            ro.chmod(0o755)


def test_eval_writes_whole_files_and_overwrites_only_when_asked(tmp_path, tiny_ckpt, capsys):
    target = tmp_path / "res" / "r.json"  # a missing folder is created, as before
    assert main(_eval_cmd(tiny_ckpt, "--json", str(target), "--csv", str(tmp_path / "res" / "r.csv"))) == 0
    first = json.loads(target.read_text())
    assert first["n"] == 2 and not [p for p in target.parent.iterdir() if p.name.endswith(".tmp")]
    _one_line_error(capsys, _eval_cmd(tiny_ckpt, "--json", str(target)), "already exists")
    assert main(_eval_cmd(tiny_ckpt, "--json", str(target), "--overwrite", "--seed", "5")) == 0
    assert json.loads(target.read_text())["per_image"][0]["gt_sha256"] != first["per_image"][0]["gt_sha256"]


# ------------------------------------------------------------------------------------------- 3. exact resume
def _resume_cfg(out, **kw):
    return TrainConfig(**{"out": str(out), "epochs": 2, "batch_size": 2, "lr": 1e-3, "seed": 3, "progress": False,
                          "augment": True, "train_refinement": 0.5, "max_steps_per_epoch": 2, **kw})


def _drawing(trainer, draws, stop_at=None):
    """Make ``trainer`` draw from the global generators every epoch, as a model with dropout or an augmentation
    library would, and record the draws; raise KeyboardInterrupt (Ctrl-C) at the start of epoch ``stop_at``."""
    epoch_of = trainer.train_epoch

    def train_epoch(epoch):
        if epoch == stop_at:
            raise KeyboardInterrupt
        draws.append((epoch, float(torch.rand(())), random.random(), float(np.random.rand())))
        return epoch_of(epoch)
    trainer.train_epoch = train_epoch
    return trainer


@pytest.mark.slow
def test_a_resumed_run_equals_an_uninterrupted_one(tmp_path):
    train, val = _pairs(6, 1), _pairs(2, 2)
    whole_draws, cut_draws = [], []
    random.seed(0)
    np.random.seed(0)  # the trainer seeds torch; these two are the caller's
    whole = _drawing(Trainer(_tiny(), train, val, _resume_cfg(tmp_path / "whole")), whole_draws)
    whole.fit()
    random.seed(0)
    np.random.seed(0)
    cut = _drawing(Trainer(_tiny(), train, val, _resume_cfg(tmp_path / "cut")), cut_draws, stop_at=1)
    with pytest.raises(KeyboardInterrupt):  # Ctrl-C in the second epoch
        cut.fit()
    # a fresh process: other initial weights and generators, all replaced from the run's files
    torch.manual_seed(123)
    np.random.seed(123)
    random.seed(123)
    resumed = _drawing(Trainer(_tiny(seed=7), train, val, _resume_cfg(tmp_path / "cut", resume=True)), cut_draws)
    assert resumed.start_epoch == 1
    resumed.fit()
    assert cut_draws == whole_draws
    a, b = whole.model.trainable_state_dict(), resumed.model.trainable_state_dict()
    assert a.keys() == b.keys()
    assert all(torch.equal(a[k], b[k]) for k in a), [k for k in a if not torch.equal(a[k], b[k])][:3]
    log_a = json.loads((tmp_path / "whole" / "log.json").read_text())["history"]
    log_b = json.loads((tmp_path / "cut" / "log.json").read_text())["history"]
    assert [r["val_loss"] for r in log_a] == [r["val_loss"] for r in log_b]
    assert [r["train_loss"] for r in log_a] == [r["train_loss"] for r in log_b]


@pytest.mark.slow
def test_train_state_holds_only_weights_only_types(tmp_path):
    trainer = Trainer(_tiny(), _pairs(2, 1), _pairs(1, 2), _resume_cfg(tmp_path / "r", epochs=1))
    trainer.fit()
    state = torch.load(tmp_path / "r" / "train_state.pt", weights_only=True)
    assert {"torch", "loader", "numpy", "numpy_global", "python", "dataset_epoch"} <= set(state["rng"])


# ------------------------------------------------------------------------------------------- 4. damaged files
@pytest.fixture(scope="module")
def finished_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("finished") / "run"
    assert main([*TRAIN, "--out", str(out)]) == 0
    return out


def _copy_run(src, dst):
    dst.mkdir()
    for p in src.iterdir():
        (dst / p.name).write_bytes(p.read_bytes())
    return dst


def test_damaged_resume_files_are_one_line_errors(tmp_path, finished_run, capsys):
    capsys.readouterr()
    run = _copy_run(finished_run, tmp_path / "a")
    (run / "train_state.pt").write_bytes(b"\x80\x04not a zip archive")
    cmd = [*TRAIN, "--out", str(run), "--resume", "--epochs", "2"]
    err = _one_line_error(capsys, cmd, r"train_state\.pt is damaged", "--overwrite", "restore it")
    assert "weights_only" not in err
    import pickle  # a pickle that weights_only refuses: no advice to retry with weights_only=False

    with open(run / "train_state.pt", "wb") as f:
        pickle.dump({"epoch": 0, "best": 1.0, "optimizer": object()}, f)
    err = _one_line_error(capsys, cmd, r"train_state\.pt is damaged")
    assert "weights_only" not in err
    run = _copy_run(finished_run, tmp_path / "b")
    data = (run / "last.safetensors").read_bytes()
    (run / "last.safetensors").write_bytes(data[: len(data) // 2])
    _one_line_error(capsys, [*TRAIN, "--out", str(run), "--resume", "--epochs", "2"],
                    r"last\.safetensors is damaged", "--overwrite")
    with pytest.raises(CheckpointError, match=r"last\.safetensors.*truncated or damaged") as err:
        load_checkpoint(run / "last.safetensors")
    assert "\n" not in str(err.value)


def test_resuming_with_another_model_is_refused(tmp_path, finished_run):
    run = _copy_run(finished_run, tmp_path / "a")
    torch.manual_seed(0)
    other = build_textsam("tiny", image_size=128, patch_size=16, lora_rank=2)
    with pytest.raises(CheckpointError, match="lora_rank=.*--overwrite"):
        Trainer(other, _pairs(2, 1), _pairs(1, 2), _resume_cfg(run, resume=True))


@pytest.mark.slow
def test_resume_from_a_state_of_another_epoch_is_refused(tmp_path, finished_run):
    run = _copy_run(finished_run, tmp_path / "a")
    state = torch.load(run / "train_state.pt", weights_only=True)
    state["epoch"] = 5
    torch.save(state, run / "train_state.pt")
    with pytest.raises(CheckpointError, match="different epochs"):
        Trainer(_tiny(), _pairs(2, 1), _pairs(1, 2), _resume_cfg(run, resume=True, epochs=9))


# ------------------------------------------------------------------------------------------- 5. no lesions
def _empty(pairs):
    return [(image, np.zeros_like(mask)) for image, mask in pairs]


@pytest.mark.slow
def test_lesion_free_data_warn_and_have_no_dice(tmp_path, capsys):
    trainer = Trainer(_tiny(), _empty(_pairs(2, 1)), _empty(_pairs(2, 2)),
                      TrainConfig(out=str(tmp_path / "r"), epochs=1, progress=False, max_steps_per_epoch=1))
    err = capsys.readouterr().err
    assert re.search(r"warning: no training mask holds a lesion pixel", err)
    assert re.search(r"warning: no validation image has a lesion .*val_dice is n/a", err)
    assert len(err.strip().splitlines()) == 2
    history = trainer.fit()
    assert np.isnan(history[0]["val_dice"])
    assert "val_dice n/a" in capsys.readouterr().out


def test_val_dice_counts_only_images_with_a_lesion(tmp_path, capsys):
    val = _pairs(1, 2) + _empty(_pairs(1, 3))
    trainer = Trainer(_tiny(), _pairs(2, 1) + _empty(_pairs(1, 4)), val,
                      TrainConfig(out=str(tmp_path / "r"), epochs=1, progress=False, max_steps_per_epoch=1))
    assert "warning" not in capsys.readouterr().err  # negatives beside positives are normal
    _, val_dice = trainer.validate()
    with torch.no_grad():
        _, dice = trainer._loss({k: v.unsqueeze(0) for k, v in trainer.val_ds[0].items()})
    assert val_dice == pytest.approx(float(dice.mean()))


# ------------------------------------------------------------------------------------------- 6. compare
def test_eval_records_its_ground_truth(tmp_path, tiny_ckpt):
    assert main(_eval_cmd(tiny_ckpt, "--json", str(tmp_path / "a.json"))) == 0
    a = json.loads((tmp_path / "a.json").read_text())
    assert all(len(r["gt_sha256"]) == 16 for r in a["per_image"])
    assert a["ground_truth"]["n_images"] == 2 and len(a["ground_truth"]["sha256"]) == 16


def test_compare_refuses_different_ground_truth(tmp_path, tiny_ckpt, capsys):
    assert main(_eval_cmd(tiny_ckpt, "--json", str(tmp_path / "a.json"))) == 0
    assert main(_eval_cmd(tiny_ckpt, "--json", str(tmp_path / "b.json"), "--seed", "1")) == 0  # other phantoms
    capsys.readouterr()
    _one_line_error(capsys, ["compare", str(tmp_path / "a.json"), str(tmp_path / "b.json")],
                    "different ground-truth masks", "phantom_0000")


def test_compare_warns_about_different_image_sets_and_old_files(capsys, tmp_path):
    from textsam_eus.train.evaluate import compare

    def rec(i, slope):
        return {"id": f"img{i}", "case": "c", "dice": 0.5 + slope * i, "nsd": 0.4 + slope * i * i,
                "gt_sha256": f"g{i}"}
    a = {"per_image": [rec(i, 0.01) for i in range(4)], "tolerance_px": 3.0}
    b = {"per_image": [rec(i, -0.03) for i in range(1, 5)], "tolerance_px": 3.0}
    res = compare(a, b)
    assert res["n"] == 3 and res["ground_truth_checked"]
    assert len(res["warnings"]) == 1 and "1 only in A, 1 only in B" in res["warnings"][0]
    old = {"per_image": [{k: v for k, v in r.items() if k != "gt_sha256"} for r in a["per_image"]],
           "tolerance_px": 3.0}
    res = compare(old, a)
    assert not res["ground_truth_checked"] and "not checked" in res["warnings"][0]
    (tmp_path / "a.json").write_text(json.dumps(a))
    (tmp_path / "b.json").write_text(json.dumps(b))
    assert main(["compare", str(tmp_path / "a.json"), str(tmp_path / "b.json"), "--json", str(tmp_path / "t")]) == 0
    assert capsys.readouterr().err.startswith("warning: the evaluations cover different images")
    _one_line_error(capsys, ["compare", str(tmp_path / "a.json"), str(tmp_path / "b.json"), "--json",
                             str(tmp_path / "t")], "already exists")


# ------------------------------------------------------------------------------------------- 7. metadata
def _with_meta(tmp_path, **changes):
    from safetensors.torch import load_file, save_file

    src = save_checkpoint(_tiny(), tmp_path / "good.safetensors")
    meta = {k: v for k, v in read_raw_meta(src).items()}
    meta.update(changes)
    dst = tmp_path / "edited.safetensors"
    save_file(load_file(str(src)), str(dst), metadata=meta)
    return dst


def read_raw_meta(path):
    from safetensors import safe_open

    with safe_open(str(path), framework="pt") as f:
        return f.metadata()


def test_metadata_that_is_not_json_names_the_file(tmp_path):
    path = _with_meta(tmp_path, config='{"preset": "tiny", ')
    with pytest.raises(CheckpointError, match=r"edited\.safetensors .*'config' is not valid JSON") as err:
        load_checkpoint(path)
    assert "\n" not in str(err.value)
    path = _with_meta(tmp_path, extra="not json")
    with pytest.raises(CheckpointError, match=r"edited\.safetensors .*'extra' is not valid JSON"):
        read_checkpoint_meta(path)


def test_a_future_format_version_is_refused(tmp_path, capsys):
    path = _with_meta(tmp_path, format_version="2")
    with pytest.raises(CheckpointError, match="format version 2, newer .* upgrade textsam-eus"):
        load_checkpoint(path)
    _one_line_error(capsys, ["info", "--checkpoint", str(path)], "upgrade textsam-eus")
    assert read_checkpoint_meta(_with_meta(tmp_path, format_version="1"))["config"]["preset"] == "tiny"


def test_an_unknown_config_field_names_the_file(tmp_path):
    cfg = json.loads(read_raw_meta(save_checkpoint(_tiny(), tmp_path / "x.safetensors"))["config"])
    path = _with_meta(tmp_path, config=json.dumps({**cfg, "from_the_future": 1}))
    with pytest.raises(CheckpointError, match=r"edited\.safetensors: .*from_the_future"):
        load_checkpoint(path)


@pytest.mark.slow
# ------------------------------------------------------------------------------------------- 8. info
def test_info_prompt_depth_changes_the_learnt_context_count(capsys):
    assert main(["info", "--preset", "vit_b", "--lora-rank", "16"]) == 0
    text = capsys.readouterr().out
    assert re.search(r"trainable_parameters\s+1,685,092\b", text) and re.search(r"prompt_depth\s+12\b", text)
    assert main(["info", "--preset", "vit_b", "--lora-rank", "16", "--prompt-depth", "3", "--json"]) == 0
    info = json.loads(capsys.readouterr().out)
    # the deep prompts are prompt_depth sets of n_ctx learnt 768-wide token vectors; nothing else changes
    assert info["prompt_depth"] == 3 and info["n_ctx"] == 4
    assert info["trainable_parameters"] == 1_685_092 - (12 - 3) * 4 * 768


def test_info_refuses_preset_flags_with_a_checkpoint(capsys):
    _one_line_error(capsys, ["info", "--checkpoint", "demo", "--prompt-depth", "2"], "--prompt-depth describe a preset")


# ------------------------------------------------------------------------------------------- 9. resize
def _test_image():
    rng = np.random.default_rng(0)
    h, w = 300, 410
    img = (np.linspace(0, 200, w)[None, :, None] + rng.normal(0, 30, (h, w, 3))).clip(0, 255).astype(np.uint8)
    cv2.circle(img, (200, 150), 60, (20, 20, 20), -1)
    return img


def _unnormalise(x, hw, cfg):
    mean = torch.tensor(cfg.pixel_mean).view(3, 1, 1)
    std = torch.tensor(cfg.pixel_std).view(3, 1, 1)
    return (x[0] * std + mean)[:, : hw[0], : hw[1]].permute(1, 2, 0).numpy()


def test_bilinear_resize_matches_pil_and_the_default_is_unchanged():
    from PIL import Image

    from textsam_eus.model import transforms as T
    from textsam_eus.core.config import TextSamConfig

    cfg = TextSamConfig()
    img = _test_image()
    for size in (128, 1024):  # shrinking (PIL's antialiased filter) and enlarging
        x, hw = T.preprocess(img, size, cfg.pixel_mean, cfg.pixel_std, resize="bilinear")
        pil = np.asarray(Image.fromarray(img).resize((hw[1], hw[0]), Image.BILINEAR)).astype(np.float32)
        assert np.abs(_unnormalise(x, hw, cfg) - pil).max() < 1e-3
        xt, _ = T.preprocess(torch.from_numpy(img), size, cfg.pixel_mean, cfg.pixel_std, resize="bilinear")
        assert np.abs(_unnormalise(xt, hw, cfg) - pil).max() <= 1.0 + 1e-3  # the GPU path: within 1 grey level
        x0, _ = T.preprocess(img, size, cfg.pixel_mean, cfg.pixel_std)  # the default: OpenCV's area, as before
        area = cv2.resize(img, (hw[1], hw[0]), interpolation=cv2.INTER_AREA).astype(np.float32)
        assert np.abs(_unnormalise(x0, hw, cfg) - area).max() < 1e-3
        assert np.abs(area - pil).max() > 2  # the two really differ
    with pytest.raises(ValueError, match="resize='nearest' is invalid"):
        T.preprocess(img, 128, cfg.pixel_mean, cfg.pixel_std, resize="nearest")


def test_resize_is_stored_and_used_everywhere(tmp_path):
    from textsam_eus.engines.torch_engine import TorchEngine
    from textsam_eus.core.config import ConfigError
    from textsam_eus.model.predictor import TextSamPredictor
    from textsam_eus.train.training_set import SegmentationTorchDataset

    assert build_textsam("tiny").cfg.resize == "area"
    with pytest.raises(ConfigError, match="resize='cubic' is invalid"):
        build_textsam("tiny", resize="cubic")
    torch.manual_seed(0)
    model = build_textsam("tiny", image_size=128, resize="bilinear")
    path = save_checkpoint(model, tmp_path / "b.safetensors")
    loaded, _ = load_checkpoint(path)
    assert loaded.cfg.resize == "bilinear"
    assert TextSamPredictor(loaded).segmenter.resize == "bilinear"
    engine = TorchEngine(str(path), device="cpu")
    assert engine.resize == "bilinear" and engine.info()["resize"] == "bilinear"
    engine.resize = "area"  # the stream/eval override
    assert engine.segmenter.resize == "area"
    img = _test_image()
    ds = SegmentationTorchDataset([(img, np.zeros(img.shape[:2], np.uint8))], 128, model.cfg.pixel_mean,
                                  model.cfg.pixel_std, resize="bilinear")
    from PIL import Image

    assert np.array_equal(ds.items[0][0], np.asarray(Image.fromarray(img).resize((128, 94), Image.BILINEAR)))


def test_bundles_carry_the_resize(tmp_path):
    from textsam_eus.model.bundle import Bundle, BundleError, read_bundle, write_bundle

    out = tmp_path / "bundle"
    out.mkdir()
    (out / "encoder.onnx").write_bytes(b"graph")
    write_bundle(out, Bundle(preset="tiny", image_size=256, embedding_shape=[1, 8, 16, 16], lowres_size=64,
                             pixel_mean=[1.0, 2.0, 3.0], pixel_std=[1.0, 1.0, 1.0], mask_threshold=0.0,
                             refine_iterations=2, prompt_tokens=[[0.1] * 8], files={"encoder": "encoder.onnx"},
                             resize="bilinear"))
    assert read_bundle(out).resize == "bilinear"
    meta = json.loads((out / "bundle.json").read_text())
    del meta["resize"]  # a bundle exported before the field existed
    (out / "bundle.json").write_text(json.dumps(meta))
    assert read_bundle(out).resize == "area"
    meta["resize"] = "nearest"
    (out / "bundle.json").write_text(json.dumps(meta))
    with pytest.raises(BundleError, match="resize is 'nearest', expected 'area' or 'bilinear'"):
        read_bundle(out)
