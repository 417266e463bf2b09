"""Training, evaluation and comparison: in-process smoke tests on the tiny preset and synthetic data."""

from __future__ import annotations

import json
import os
import socket

import cv2
import numpy as np
import pytest
import torch

from textsam_eus.cli import main
from textsam_eus.common.phantom import PhantomConfig, make_phantom_dataset
from textsam_eus.model.checkpoint import load_checkpoint
from textsam_eus.model.registry import build_textsam
from textsam_eus.train.readers import DatasetError
from textsam_eus.train.evaluate import EvalItem, compare, evaluate, make_predict_fn, perturbed_box
from textsam_eus.train.losses import bce_loss, dice_bce_loss, dice_loss
from textsam_eus.train.trainer import TrainConfig, Trainer

PCFG = PhantomConfig(height=128, width=128)


def _pairs(n, seed):
    return make_phantom_dataset(n, seed=seed, config=PCFG)


def test_losses():
    target = torch.zeros(1, 1, 8, 8)
    target[..., 2:6, 2:6] = 1
    perfect = (target * 2 - 1) * 20
    assert dice_loss(perfect, target) < 1e-3 and bce_loss(perfect, target) < 1e-6
    assert dice_bce_loss(-perfect, target) > 1.5
    valid = torch.zeros_like(target)
    valid[..., :4, :] = 1  # errors outside the valid area do not count
    wrong_outside = perfect.clone()
    wrong_outside[..., 6:, :] = 20
    assert dice_bce_loss(wrong_outside, target, valid) < 1e-3 < dice_bce_loss(wrong_outside, target)


@pytest.mark.slow
def test_training_smoke_overfits_and_writes_outputs(tmp_path):
    torch.manual_seed(0)
    model = build_textsam("tiny", image_size=128, patch_size=16)
    cfg = TrainConfig(out=str(tmp_path / "run"), epochs=3, batch_size=2, lr=1e-3, seed=0, progress=False,
                      train_refinement=0.5, max_steps_per_epoch=12)
    trainer = Trainer(model, _pairs(6, 1), _pairs(2, 2), cfg)
    lr0 = trainer.optimizer.param_groups[0]["lr"]
    history = trainer.fit()
    assert [r["epoch"] for r in history] == [1, 2, 3]
    assert history[-1]["train_loss"] < history[0]["train_loss"]
    assert trainer.optimizer.param_groups[0]["lr"] < 0.2 * lr0  # the cosine schedule was stepped
    for name in ("best.safetensors", "last.safetensors", "train_state.pt", "log.csv", "log.json"):
        assert (tmp_path / "run" / name).is_file(), name
    log = json.loads((tmp_path / "run" / "log.json").read_text())
    assert len(log["history"]) == 3 and {"train_loss", "val_loss"} <= set(log["history"][0])
    best_epoch = min(history, key=lambda r: r["val_loss"])["epoch"]
    loaded, extra = load_checkpoint(tmp_path / "run" / "best.safetensors")
    assert extra["epoch"] == best_epoch and loaded.cfg.image_size == 128

    # resume continues where it stopped
    cfg2 = TrainConfig(out=str(tmp_path / "run"), epochs=4, batch_size=2, seed=0, progress=False, resume=True,
                       max_steps_per_epoch=12)
    t2 = Trainer(build_textsam("tiny", image_size=128, patch_size=16), _pairs(6, 1), _pairs(2, 2), cfg2)
    assert t2.start_epoch == 3 and len(t2.history) == 3
    assert t2.scheduler.last_epoch == trainer.scheduler.last_epoch
    assert [r["epoch"] for r in t2.fit()] == [1, 2, 3, 4]


def test_empty_splits_are_clear_errors(tmp_path):
    model = build_textsam("tiny", image_size=128)
    with pytest.raises(ValueError, match="training split is empty"):
        Trainer(model, [], _pairs(1, 0), TrainConfig(out=str(tmp_path)))
    with pytest.raises(ValueError, match="validation split is empty"):
        Trainer(model, _pairs(1, 0), [], TrainConfig(out=str(tmp_path)))


def _ddp_worker(rank, world, port, out, result_dir):
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), WORLD_SIZE=str(world), RANK=str(rank),
                      LOCAL_RANK=str(rank))
    torch.set_num_threads(1)
    torch.manual_seed(0)
    model = build_textsam("tiny", image_size=128)
    cfg = TrainConfig(out=out, epochs=1, batch_size=2, seed=0, progress=False, device="cpu",
                      max_steps_per_epoch=3)
    trainer = Trainer(model, _pairs(8, 1), _pairs(2, 2), cfg)
    trainer.fit()
    torch.save({k: v.clone() for k, v in model.trainable_state_dict().items()},
               os.path.join(result_dir, f"rank{rank}.pt"))
    torch.distributed.destroy_process_group()


@pytest.mark.slow
def test_ddp_two_processes_gloo(tmp_path):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    torch.multiprocessing.spawn(_ddp_worker, args=(2, port, str(tmp_path / "run"), str(tmp_path)), nprocs=2)
    a = torch.load(tmp_path / "rank0.pt", weights_only=True)
    b = torch.load(tmp_path / "rank1.pt", weights_only=True)
    assert all(torch.allclose(a[k], b[k]) for k in a)  # gradients were all-reduced: replicas agree
    ref = build_textsam("tiny", image_size=128).trainable_state_dict()
    assert any(not torch.allclose(a[k], ref[k]) for k in a)  # and they did train
    assert (tmp_path / "run" / "best.safetensors").is_file()


@pytest.mark.slow
def test_eval_modes_and_compare_cli(tmp_path):
    torch.manual_seed(0)
    from textsam_eus.model.checkpoint import save_checkpoint

    ckpt = save_checkpoint(build_textsam("tiny", image_size=128), tmp_path / "m.safetensors")
    common = ["--checkpoint", str(ckpt), "--phantom", "3", "--phantom-size", "128", "--no-progress"]
    assert main(["eval", *common, "--mode", "auto", "--json", str(tmp_path / "a.json"),
                 "--csv", str(tmp_path / "a.csv")]) == 0
    assert main(["eval", *common, "--mode", "manual", "--json", str(tmp_path / "b.json")]) == 0
    a = json.loads((tmp_path / "a.json").read_text())
    assert a["n"] == 3 and set(a["dice"]) >= {"mean", "std"} and len(a["per_image"]) == 3
    assert "nsd_reference_convention" in a and (tmp_path / "a.csv").read_text().startswith("id,")
    assert main(["compare", str(tmp_path / "a.json"), str(tmp_path / "b.json"),
                 "--json", str(tmp_path / "t.json")]) == 0
    t = json.loads((tmp_path / "t.json").read_text())
    assert t["n"] == 3 and 0 <= t["dice"]["p"] <= 1 or np.isnan(t["dice"]["p"])
    assert main(["eval", "--mode", "auto", "--phantom", "1"]) == 1  # no checkpoint: a clear error


def test_predictions_mode_scores_external_masks(tmp_path):
    items = [EvalItem(id=f"img{i}.png", case=f"c{i}", image=img, mask=m) for i, (img, m) in enumerate(_pairs(3, 4))]
    (tmp_path / "pred").mkdir()
    for i, it in enumerate(items):
        m = it.mask.copy() if i < 2 else np.zeros_like(it.mask)
        cv2.imwrite(str(tmp_path / "pred" / f"img{i}.png"), m * 255)
    rec = evaluate(items, make_predict_fn("predictions", predictions_dir=tmp_path / "pred"))
    assert [r["dice"] for r in rec] == [1.0, 1.0, 0.0] and rec[0]["nsd"] == 1.0
    with pytest.raises(DatasetError, match="no predicted mask for img9.png"):  # a user error: one line
        make_predict_fn("predictions", predictions_dir=tmp_path / "pred")(
            EvalItem("img9.png", "c", items[0].image, items[0].mask))


def test_manual_box_perturbation_is_10_to_15_px():
    mask = np.zeros((200, 200), np.uint8)
    mask[50:120, 60:150] = 1
    for seed in range(20):
        box = perturbed_box(mask, np.random.default_rng(seed))
        d = np.abs(box - np.array([60, 50, 149, 119]))
        assert ((d >= 10) & (d <= 15)).all()


def test_compare_needs_the_same_images():
    a = {"per_image": [{"id": "x", "dice": 1, "nsd": 1}]}
    with pytest.raises(ValueError, match="share 1 images"):
        compare(a, a)
