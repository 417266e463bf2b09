"""The training loop: AdamW, a cosine schedule stepped every step, Dice + BCE, best by validation loss.

Works on CPU and CUDA (AMP on CUDA), single process or under ``torchrun`` (DistributedDataParallel; gloo on CPU).
Writes to ``out``: ``best.safetensors`` (lowest validation loss), ``last.safetensors``, ``train_state.pt``
(optimizer/scheduler/epoch and every random generator's state for ``resume``), ``log.csv`` and ``log.json``
(per-epoch train/val loss), each written whole and renamed into place. A folder that already holds a run is
refused unless ``resume`` (continue it: a resumed CPU run equals an uninterrupted one) or ``overwrite`` (start
over: the earlier run's files are removed when the first new one is written).

``val_dice`` is the mean Dice over the validation images with a lesion (NaN when there are none): a lesion-free
image predicted empty scores 1 by the Dice convention, which says nothing about outlining.
"""

from __future__ import annotations

import csv
import json
import math
import os
import random
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Sequence

import numpy as np
import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch.utils.data import DataLoader, DistributedSampler

from ..core.config import ConfigError
from ..core.files import atomic_open, write_text_atomic
from ..model.checkpoint import CheckpointError, check_state_dict, save_checkpoint, torch_load_problem
from ..model.textsam import TextSam
from .readers import DatasetError
from .training_set import AugmentConfig, SegmentationTorchDataset, gt_prompts
from .losses import dice_bce_loss, dice_bce_per_sample
from .outputs import check_run_dir, clear_run

STATE_VERSION = 2  # train_state.pt: 2 adds "rng" (every generator) and "scaler"
# config fields that may differ between a run and its resumption (inference settings, base-weight paths)
_RESUME_FREE_FIELDS = ("presence_threshold", "presence_show_frames", "presence_hide_frames", "refine_iterations",
                       "mask_threshold", "sam_checkpoint", "biomedclip_dir")


@dataclass
class TrainConfig:
    out: str = "runs/textsam"
    epochs: int = 5
    batch_size: int = 1
    lr: float = 1e-3
    weight_decay: float = 0.01
    warmup_steps: int = 0
    min_lr_ratio: float = 0.0
    seed: int = 0
    augment: bool = False
    train_refinement: float = 0.0  # probability of a step with GT box/centroid prompts (0 = the paper)
    iou_loss_weight: float = 0.0  # MSE of the IoU head vs the real IoU (SAM's recipe); 0 = the paper's Dice + BCE
    negative_mask_weight: float = 1.0  # weight of the mask loss on lesion-free images (the IoU head's target is 0)
    weak_presence_target: float = 0.5  # frames of tumour-labelled videos: the IoU head is pushed up to at least this
    amp: bool = True  # on CUDA only
    device: str = "auto"
    num_workers: int = 0
    max_steps_per_epoch: int | None = None
    resume: bool = False
    overwrite: bool = False  # out holds an earlier run: start over (its files are removed, no other files)
    progress: bool = True
    half_frozen: bool = False  # store frozen tensors as fp16 (shipped demo)
    extra: dict = field(default_factory=dict)

    def __post_init__(self) -> None:
        checks = {"epochs": self.epochs >= 1, "batch_size": self.batch_size >= 1, "lr": self.lr > 0,
                  "weight_decay": self.weight_decay >= 0, "train_refinement": 0 <= self.train_refinement <= 1,
                  "warmup_steps": self.warmup_steps >= 0, "iou_loss_weight": self.iou_loss_weight >= 0,
                  "negative_mask_weight": self.negative_mask_weight >= 0,
                  "weak_presence_target": 0 < self.weak_presence_target <= 1}
        for name, ok in checks.items():
            if not ok:
                raise ConfigError(f"{name}={getattr(self, name)!r} is invalid")


def _dist_info() -> tuple[int, int, int]:
    world = int(os.environ.get("WORLD_SIZE", "1"))
    return world, int(os.environ.get("RANK", "0")), int(os.environ.get("LOCAL_RANK", "0"))


def _device(name: str, local_rank: int) -> torch.device:
    if name == "auto":
        return torch.device(f"cuda:{local_rank}") if torch.cuda.is_available() else torch.device("cpu")
    return torch.device(name)


def _lr_lambda(total: int, warmup: int, min_ratio: float):
    def f(step: int) -> float:
        if step < warmup:
            return (step + 1) / warmup
        progress = min(1.0, (step - warmup) / max(1, total - warmup))
        return min_ratio + (1 - min_ratio) * 0.5 * (1 + math.cos(math.pi * progress))
    return f


def _collate(batch):
    return {k: torch.stack([b[k] for b in batch]) for k in batch[0]}


def _warn(message: str) -> None:
    print(f"warning: {message}", file=sys.stderr, flush=True)


def _one_line(exc: BaseException) -> str:
    return " ".join(f"{type(exc).__name__}: {exc}".split())[:300]


def _damaged(path: Path, why: str) -> CheckpointError:
    return CheckpointError(f"{path} is damaged ({why}): start over with --overwrite, or restore it (e.g. from a "
                           "backup) and resume again")


def _plain(value):
    return value.item() if hasattr(value, "item") else value


def _format_dice(value: float) -> str:
    return "n/a" if math.isnan(value) else f"{value:.4f}"


class Trainer:
    def __init__(self, model: TextSam, train_pairs: Sequence, val_pairs: Sequence, cfg: TrainConfig) -> None:
        if len(train_pairs) == 0:
            raise DatasetError("the training split is empty: give --data with training images or --phantom N")
        if len(val_pairs) == 0:
            raise DatasetError("the validation split is empty: give more cases, a larger --val-fraction, or "
                               "--phantom-val N")
        n_weak = sum(1 for _, m in train_pairs if m is None)
        if n_weak and cfg.iou_loss_weight <= 0:
            raise ConfigError(f"{n_weak} training frames come from tumour-labelled videos, which train only the "
                              "presence score: give --iou-loss-weight > 0 (e.g. 1)")
        self.cfg = cfg
        self.out = check_run_dir(cfg.out, cfg.resume, cfg.overwrite)  # before any work
        self.world, self.rank, local_rank = _dist_info()
        self.device = _device(cfg.device, local_rank)
        if self.world > 1 and not dist.is_initialized():
            dist.init_process_group("nccl" if self.device.type == "cuda" else "gloo")
        torch.manual_seed(cfg.seed)
        self.model = model.to(self.device).train()
        mcfg = model.cfg
        aug = AugmentConfig() if cfg.augment else None
        self.train_ds = SegmentationTorchDataset(train_pairs, mcfg.image_size, mcfg.pixel_mean, mcfg.pixel_std,
                                                 aug, cfg.seed, resize=mcfg.resize)
        self.val_ds = SegmentationTorchDataset(val_pairs, mcfg.image_size, mcfg.pixel_mean, mcfg.pixel_std,
                                               resize=mcfg.resize)
        if self.rank == 0:
            self._check_lesions()
        self.sampler = (DistributedSampler(self.train_ds, self.world, self.rank, shuffle=True, seed=cfg.seed)
                        if self.world > 1 else None)
        self.loader_generator = torch.Generator().manual_seed(cfg.seed)  # the shuffle order (saved for resume)
        self.loader = DataLoader(self.train_ds, batch_size=cfg.batch_size, shuffle=self.sampler is None,
                                 sampler=self.sampler, num_workers=cfg.num_workers, collate_fn=_collate,
                                 drop_last=False, generator=self.loader_generator)
        steps = len(self.loader) if cfg.max_steps_per_epoch is None else min(len(self.loader),
                                                                                cfg.max_steps_per_epoch)
        self.steps_per_epoch = steps
        self.total_steps = steps * cfg.epochs
        params = [p for p in model.parameters() if p.requires_grad]
        self.optimizer = torch.optim.AdamW(params, lr=cfg.lr, weight_decay=cfg.weight_decay)
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(
            self.optimizer, _lr_lambda(self.total_steps, cfg.warmup_steps, cfg.min_lr_ratio))
        self.ddp = (torch.nn.parallel.DistributedDataParallel(
            self.model, device_ids=[self.device.index] if self.device.type == "cuda" else None,
            find_unused_parameters=True) if self.world > 1 else self.model)
        self.use_amp = cfg.amp and self.device.type == "cuda"
        self.amp_dtype = torch.bfloat16 if self.use_amp and torch.cuda.is_bf16_supported() else torch.float16
        self.scaler = torch.amp.GradScaler("cuda", enabled=self.use_amp and self.amp_dtype == torch.float16)
        self.history: list[dict] = []
        self._cleared = not cfg.overwrite  # with overwrite, the earlier run's files go when the first new one comes
        self.start_epoch = 0
        self.best = float("inf")
        self.rng = np.random.default_rng((cfg.seed, self.rank))
        if cfg.resume:
            self._resume()

    def _check_lesions(self) -> None:
        """Warn when the data hold no lesion at all (e.g. masks saved 0/1 read as empty, or the wrong folder)."""
        def count(ds):
            return sum(1 for (_, m), weak in zip(ds.items, ds.weak) if not weak and m.any())
        n_train, n_val = count(self.train_ds), count(self.val_ds)
        if n_train == 0:
            n_weak = sum(self.train_ds.weak)
            _warn(f"no training mask holds a lesion pixel ({len(self.train_ds) - n_weak} lesion-free"
                  + (f", {n_weak} tumour-video frames without an outline" if n_weak else "")
                  + "): nothing teaches an outline; check the mask files (lesion pixels must be nonzero) or add "
                  "images with a lesion")
        if n_val == 0:
            _warn(f"no validation image has a lesion ({len(self.val_ds)} images): val_dice is n/a and the best "
                  "epoch is chosen on lesion-free images only; add validation images with a lesion (e.g. more "
                  "cases, --phantom-val N)")

    # ------------------------------------------------------------------ steps
    def _loss(self, batch, prompts=None) -> tuple[torch.Tensor, torch.Tensor]:
        s = self.model.cfg.image_size
        with torch.autocast(self.device.type, dtype=self.amp_dtype, enabled=self.use_amp):
            low, iou = self.ddp(batch["image"], prompts=prompts)
        logits = F.interpolate(low.float(), size=(s, s), mode="bilinear", align_corners=False)
        weak = batch["weak"] > 0  # frames of tumour-labelled videos: no outline to learn from
        has_lesion = batch["mask"].sum((1, 2, 3)) > 0
        if self.cfg.negative_mask_weight == 1.0 and not weak.any():
            loss = dice_bce_loss(logits, batch["mask"], batch["valid"])  # the paper's loss
        else:  # per image: lesion-free images weighted, weak positives (outline unknown) without a mask loss
            weights = torch.where(has_lesion, 1.0, self.cfg.negative_mask_weight)
            weights = torch.where(weak, 0.0, weights).to(logits)
            per = dice_bce_per_sample(logits, batch["mask"], batch["valid"])
            loss = (weights * per).sum() / weights.sum().clamp_min(1e-6)
        with torch.no_grad():
            pred = (logits > 0).float() * batch["valid"]
            inter = (pred * batch["mask"]).sum((1, 2, 3))
            union = ((pred + batch["mask"]) > 0).float().sum((1, 2, 3))
            # the IoU head is the presence score: on a lesion-free image no outline overlaps a tumour, so 0
            real_iou = torch.where(has_lesion, inter / union.clamp_min(1), torch.zeros_like(union))
        if self.cfg.iou_loss_weight > 0:
            iou = iou.float().reshape(-1)
            # a weak positive's IoU is unknown: only a score below the target is penalised
            err = torch.where(weak, torch.relu(self.cfg.weak_presence_target - iou), iou - real_iou)
            loss = loss + self.cfg.iou_loss_weight * (err ** 2).mean()
        dice = torch.where(union > 0, 2 * inter / (pred.sum((1, 2, 3)) + batch["mask"].sum((1, 2, 3))).clamp_min(1),
                           torch.ones_like(union))
        dice = torch.where(weak, torch.full_like(dice, float("nan")), dice)  # no outline to compare with
        return loss, dice

    def _prompts(self, batch):
        if self.cfg.train_refinement <= 0:
            return None
        return [gt_prompts(m[0], self.rng) if self.rng.random() < self.cfg.train_refinement else None
                for m in batch["mask"]]

    def train_epoch(self, epoch: int) -> float:
        self.model.train()
        self.train_ds.set_epoch(epoch)
        if self.sampler is not None:
            self.sampler.set_epoch(epoch)
        bar = None
        if self.cfg.progress and self.rank == 0:
            from tqdm import tqdm

            bar = tqdm(total=self.steps_per_epoch, desc=f"epoch {epoch + 1}/{self.cfg.epochs}", leave=False)
        total, n = 0.0, 0
        for step, batch in enumerate(self.loader):
            if step >= self.steps_per_epoch:
                break
            batch = {k: v.to(self.device, non_blocking=True) for k, v in batch.items()}
            prompts = self._prompts(batch)
            if prompts is not None:
                prompts = [None if p is None else (p[0].to(self.device), p[1].to(self.device)) for p in prompts]
            loss, _ = self._loss(batch, prompts)
            self.optimizer.zero_grad(set_to_none=True)
            self.scaler.scale(loss).backward()
            self.scaler.step(self.optimizer)
            self.scaler.update()
            self.scheduler.step()
            total += loss.item()
            n += 1
            if bar is not None:
                bar.update(1)
                bar.set_postfix(loss=f"{total / n:.4f}", lr=f"{self.scheduler.get_last_lr()[0]:.2e}")
        if bar is not None:
            bar.close()
        return total / max(1, n)

    @torch.no_grad()
    def validate(self) -> tuple[float, float]:
        """Mean validation loss over the validation set, and mean Dice (text-only pass) over its images with a
        lesion outline (NaN without any): lesion-free images and tumour-video frames have no outline to score."""
        self.model.eval()
        losses, dices = [], []
        for i in range(len(self.val_ds)):
            batch = {k: v.unsqueeze(0).to(self.device) for k, v in self.val_ds[i].items()}
            loss, dice = self._loss(batch)
            losses.append(float(loss))
            if float(batch["mask"].sum()) > 0:
                dices.append(float(dice.mean()))
        return float(np.mean(losses)), float(np.mean(dices)) if dices else float("nan")

    # ------------------------------------------------------------------ loop
    def fit(self) -> list[dict]:
        for epoch in range(self.start_epoch, self.cfg.epochs):
            t0 = time.perf_counter()
            train_loss = self.train_epoch(epoch)
            val_loss, val_dice = self.validate()
            row = {"epoch": epoch + 1, "train_loss": train_loss, "val_loss": val_loss, "val_dice": val_dice,
                   "lr": self.scheduler.get_last_lr()[0], "seconds": time.perf_counter() - t0}
            self.history.append(row)
            if self.rank == 0:
                if not self._cleared:  # --overwrite: the earlier run goes now that the new one has a result
                    clear_run(self.out)
                    self._cleared = True
                improved = val_loss < self.best
                if improved:
                    self.best = val_loss
                    self._save("best.safetensors", row)
                self._save("last.safetensors", row)
                self._save_state(epoch)
                self._write_logs()
                print(f"epoch {epoch + 1}/{self.cfg.epochs}: train_loss {train_loss:.4f} val_loss {val_loss:.4f} "
                      f"val_dice {_format_dice(val_dice)} ({row['seconds']:.0f} s){' *best*' if improved else ''}",
                      flush=True)
        if self.world > 1:
            dist.barrier()
        return self.history

    # ------------------------------------------------------------------ files
    def _save(self, name: str, row: dict) -> None:
        extra = {"epoch": row["epoch"], "val_loss": row["val_loss"], "val_dice": row["val_dice"],
                 "train": {k: v for k, v in asdict(self.cfg).items() if k != "extra"}, **self.cfg.extra}
        save_checkpoint(self.model, self.out / name, extra=extra, half_frozen=self.cfg.half_frozen)

    def _rng_state(self) -> dict:
        """Every random generator the run draws from, as weights_only-loadable values (tensors, ints, strings)."""
        np_global = np.random.get_state()
        py = random.getstate()
        state = {"torch": torch.get_rng_state(), "loader": self.loader_generator.get_state(),
                 "numpy": json.dumps(self.rng.bit_generator.state),
                 "numpy_global": json.dumps([np_global[0], np_global[1].tolist(), *map(_plain, np_global[2:])]),
                 "python": json.dumps([py[0], list(py[1]), py[2]]),
                 "dataset_epoch": int(self.train_ds.epoch), "rank": self.rank, "world": self.world}
        if self.device.type == "cuda" and torch.cuda.is_initialized():
            state["cuda"] = torch.cuda.get_rng_state(self.device)
        return state

    def _set_rng_state(self, state: dict) -> None:
        torch.set_rng_state(state["torch"])
        self.loader_generator.set_state(state["loader"])
        if self.rank == int(state.get("rank", 0)):
            self.rng.bit_generator.state = json.loads(state["numpy"])
        else:  # DistributedDataParallel: only rank 0's generator was saved; the others restart theirs per epoch
            self.rng = np.random.default_rng((self.cfg.seed, self.rank, self.start_epoch))
        name, keys, *rest = json.loads(state["numpy_global"])
        np.random.set_state((name, np.asarray(keys, dtype=np.uint32), *rest))
        version, internal, gauss = json.loads(state["python"])
        random.setstate((version, tuple(internal), gauss))
        self.train_ds.set_epoch(int(state["dataset_epoch"]))
        if "cuda" in state and self.device.type == "cuda":
            torch.cuda.set_rng_state(state["cuda"], self.device)

    def _save_state(self, epoch: int) -> None:
        state = {"version": STATE_VERSION, "epoch": epoch, "best": self.best,
                 "optimizer": self.optimizer.state_dict(), "scheduler": self.scheduler.state_dict(),
                 "scaler": self.scaler.state_dict(), "history": json.dumps(self.history), "rng": self._rng_state()}
        with atomic_open(self.out / "train_state.pt", "wb", parents=True) as f:
            torch.save(state, f)

    def _write_logs(self) -> None:
        self.out.mkdir(parents=True, exist_ok=True)
        write_text_atomic(self.out / "log.json", json.dumps({"history": self.history, "config": asdict(self.cfg),
                                                             "model": self.model.cfg.to_dict()}, indent=2),
                          parents=True)
        with atomic_open(self.out / "log.csv", "w", newline="", parents=True) as f:
            w = csv.DictWriter(f, fieldnames=list(self.history[0]))
            w.writeheader()
            w.writerows(self.history)

    def _resume(self) -> None:
        """Continue the run in ``out``: weights from last.safetensors, the rest from train_state.pt."""
        run = read_resume_files(self.out)
        state, tensors, last, state_file = run["state"], run["tensors"], run["last"], run["state_file"]
        saved_cfg, own_cfg = run["config"].to_dict(), self.model.cfg.to_dict()
        changed = [f"{k}={saved_cfg.get(k)!r} (now {v!r})" for k, v in own_cfg.items()
                   if k not in _RESUME_FREE_FIELDS and saved_cfg.get(k) != v]
        if changed:
            raise CheckpointError(f"cannot resume the run in {self.out} with another model: it was trained with "
                                  f"{', '.join(changed[:3])}; resume with the run's model flags, or start over "
                                  "with --overwrite")
        own = self.model.state_dict()
        expected = own if run["contents"] == "full" else self.model.trainable_state_dict()
        check_state_dict(expected, tensors, file=last, what="the model being resumed")
        saved_epochs = run["extra"].get("train", {}).get("epochs")
        if saved_epochs is not None and saved_epochs != self.cfg.epochs and self.rank == 0:
            print(f"notice: the run was planned for {saved_epochs} epochs, now {self.cfg.epochs}: its learning-rate "
                  f"schedule is stretched to {self.cfg.epochs} epochs from here on", file=sys.stderr, flush=True)
        self.model.load_state_dict({k: v.to(own[k].dtype) for k, v in tensors.items()}, strict=False)
        try:
            self.optimizer.load_state_dict(state["optimizer"])
            self.scheduler.load_state_dict(state["scheduler"])
            # the step's learning rate from this run's schedule (equal to the saved one unless --epochs changed)
            lrs = [base * f(self.scheduler.last_epoch) for f, base in zip(self.scheduler.lr_lambdas,
                                                                            self.scheduler.base_lrs)]
            for group, lr in zip(self.optimizer.param_groups, lrs):
                group["lr"] = lr
            self.scheduler._last_lr = lrs
            if state.get("scaler") and self.scaler.is_enabled():
                self.scaler.load_state_dict(state["scaler"])
        except (ValueError, KeyError, RuntimeError, TypeError) as exc:
            raise CheckpointError(f"{state_file} does not match this training setup ({_one_line(exc)}): resume "
                                  "with the run's flags, or start over with --overwrite") from None
        self.start_epoch = run["epoch"] + 1
        self.best = float(state["best"])
        self.history = run["history"]
        if "rng" in state:
            try:
                self._set_rng_state(state["rng"])
            except Exception as exc:
                raise _damaged(state_file, f"its random-generator state: {_one_line(exc)}") from None
        elif self.rank == 0:
            _warn(f"{state_file} was written by an older textsam-eus without the random generators' state: the run "
                  "continues, but not exactly as an uninterrupted one would")
        if self.start_epoch >= self.cfg.epochs and self.rank == 0:
            _warn(f"the run in {self.out} already trained {self.start_epoch} epochs (--epochs {self.cfg.epochs}): "
                  "nothing to continue; give a larger --epochs")


def read_resume_files(out: str | Path) -> dict:
    """Read and check the run in ``out`` for resuming (``train --resume`` calls it before reading any data):
    last.safetensors (config, tensors) and train_state.pt, from the same epoch. Damage is a one-line
    CheckpointError naming the file and the fix."""
    from safetensors import safe_open
    from safetensors.torch import load_file

    from ..core.config import TextSamConfig

    out = Path(out)
    state_file, last = out / "train_state.pt", out / "last.safetensors"
    try:
        with safe_open(str(last), framework="pt") as f:
            meta = f.metadata() or {}
        config = TextSamConfig.from_dict(json.loads(meta["config"]))
        extra = json.loads(meta.get("extra", "{}"))
        tensors = load_file(str(last))
    except Exception as exc:  # truncated/corrupt safetensors, metadata that is not ours
        raise _damaged(last, _one_line(exc)) from None
    try:
        state = torch.load(state_file, map_location="cpu", weights_only=True)
        if not isinstance(state, dict):
            raise TypeError(f"it holds a {type(state).__name__}, not a training state")
        missing = [k for k in ("epoch", "best", "optimizer", "scheduler", "history") if k not in state]
        if missing:
            raise KeyError(f"no {', '.join(missing)}")
        epoch, history = int(state["epoch"]), json.loads(state["history"])
        float(state["best"])
    except Exception as exc:  # unpickling errors, truncated zip archives, foreign files
        raise _damaged(state_file, torch_load_problem(exc)) from None
    if extra.get("epoch") != epoch + 1:
        raise CheckpointError(f"{last} (epoch {extra.get('epoch')}) and {state_file} (epoch {epoch + 1}) are from "
                              "different epochs (the run stopped while saving): start over with --overwrite")
    return {"state": state, "tensors": tensors, "config": config, "extra": extra,
            "contents": meta.get("contents", "trainable"), "epoch": epoch, "history": history, "last": last,
            "state_file": state_file}
