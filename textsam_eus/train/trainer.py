"""The training loop: AdamW, a cosine schedule stepped every step, Dice + BCE, best by validation loss.

Works on CPU and CUDA (AMP on CUDA), single process or under ``torchrun`` (DistributedDataParallel; gloo on CPU).
Writes to ``out``: ``best.safetensors`` (lowest validation loss), ``last.safetensors``, ``train_state.pt``
(optimizer/scheduler/epoch for ``resume``), ``log.csv`` and ``log.json`` (per-epoch train/val loss).
"""

from __future__ import annotations

import csv
import json
import math
import os
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Sequence

import numpy as np
import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch.utils.data import DataLoader, DistributedSampler

from ..model.checkpoint import CheckpointError, save_checkpoint
from ..model.config import ConfigError
from ..model.textsam import TextSam
from .data import DatasetError
from .dataset import AugmentConfig, SegmentationTorchDataset, gt_prompts
from .losses import dice_bce_loss, dice_bce_per_sample


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
        self.world, self.rank, local_rank = _dist_info()
        self.device = _device(cfg.device, local_rank)
        if self.world > 1 and not dist.is_initialized():
            dist.init_process_group("nccl" if self.device.type == "cuda" else "gloo")
        torch.manual_seed(cfg.seed)
        self.model = model.to(self.device).train()
        mcfg = model.cfg
        aug = AugmentConfig() if cfg.augment else None
        self.train_ds = SegmentationTorchDataset(train_pairs, mcfg.image_size, mcfg.pixel_mean, mcfg.pixel_std,
                                                 aug, cfg.seed)
        self.val_ds = SegmentationTorchDataset(val_pairs, mcfg.image_size, mcfg.pixel_mean, mcfg.pixel_std)
        self.sampler = (DistributedSampler(self.train_ds, self.world, self.rank, shuffle=True, seed=cfg.seed)
                        if self.world > 1 else None)
        gen = torch.Generator().manual_seed(cfg.seed)
        self.loader = DataLoader(self.train_ds, batch_size=cfg.batch_size, shuffle=self.sampler is None,
                                 sampler=self.sampler, num_workers=cfg.num_workers, collate_fn=_collate,
                                 drop_last=False, generator=gen)
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
        self.out = Path(cfg.out)
        self.history: list[dict] = []
        self.start_epoch = 0
        self.best = float("inf")
        self.rng = np.random.default_rng((cfg.seed, self.rank))
        if cfg.resume:
            self._resume()

    # ------------------------------------------------------------------ steps
    def _loss(self, batch, prompts=None) -> tuple[torch.Tensor, torch.Tensor]:
        s = self.model.cfg.image_size
        with torch.autocast(self.device.type, dtype=self.amp_dtype, enabled=self.use_amp):
            low, iou = self.ddp(batch["image"], prompts=prompts)
        logits = F.interpolate(low.float(), size=(s, s), mode="bilinear", align_corners=False)
        weak = batch["weak"] > 0 if "weak" in batch else torch.zeros(len(logits), dtype=torch.bool,
                                                                         device=logits.device)
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
        """Mean validation loss and Dice (text-only pass; images with an outline) over the validation set."""
        self.model.eval()
        losses, dices = [], []
        for i in range(len(self.val_ds)):
            batch = {k: v.unsqueeze(0).to(self.device) for k, v in self.val_ds[i].items()}
            loss, dice = self._loss(batch)
            losses.append(float(loss))
            dices.append(float(dice.mean()))
        scored = [d for d in dices if not math.isnan(d)]  # weak positives have no Dice
        return float(np.mean(losses)), float(np.mean(scored)) if scored else float("nan")

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
                improved = val_loss < self.best
                if improved:
                    self.best = val_loss
                    self._save("best.safetensors", row)
                self._save("last.safetensors", row)
                self._save_state(epoch)
                self._write_logs()
                print(f"epoch {epoch + 1}/{self.cfg.epochs}: train_loss {train_loss:.4f} val_loss {val_loss:.4f} "
                      f"val_dice {val_dice:.4f} ({row['seconds']:.0f} s){' *best*' if improved else ''}",
                      flush=True)
        if self.world > 1:
            dist.barrier()
        return self.history

    # ------------------------------------------------------------------ files
    def _save(self, name: str, row: dict) -> None:
        extra = {"epoch": row["epoch"], "val_loss": row["val_loss"], "val_dice": row["val_dice"],
                 "train": {k: v for k, v in asdict(self.cfg).items() if k != "extra"}, **self.cfg.extra}
        save_checkpoint(self.model, self.out / name, extra=extra, half_frozen=self.cfg.half_frozen)

    def _save_state(self, epoch: int) -> None:
        torch.save({"epoch": epoch, "best": self.best, "optimizer": self.optimizer.state_dict(),
                    "scheduler": self.scheduler.state_dict(), "history": json.dumps(self.history)},
                   self.out / "train_state.pt")

    def _write_logs(self) -> None:
        self.out.mkdir(parents=True, exist_ok=True)
        (self.out / "log.json").write_text(json.dumps({"history": self.history, "config": asdict(self.cfg),
                                                       "model": self.model.cfg.to_dict()}, indent=2))
        with open(self.out / "log.csv", "w", newline="") as f:
            w = csv.DictWriter(f, fieldnames=list(self.history[0]))
            w.writeheader()
            w.writerows(self.history)

    def _resume(self) -> None:
        from safetensors.torch import load_file

        state_file, last = self.out / "train_state.pt", self.out / "last.safetensors"
        if not state_file.is_file() or not last.is_file():
            raise CheckpointError(f"cannot resume: {state_file} or {last} is missing (train without --resume "
                                  "first, with the same --out)")
        tensors = load_file(str(last))
        own = self.model.state_dict()
        self.model.load_state_dict({k: v.to(own[k].dtype) for k, v in tensors.items()}, strict=False)
        state = torch.load(state_file, map_location=self.device, weights_only=True)
        self.optimizer.load_state_dict(state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])
        self.start_epoch = int(state["epoch"]) + 1
        self.best = float(state["best"])
        self.history = json.loads(state["history"])
