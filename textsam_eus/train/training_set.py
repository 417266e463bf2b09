"""Torch dataset for training: frames resized into the model's input frame once, augmented on the fly.

Items: image (3, S, S) normalised float, mask (1, S, S) {0,1}, valid (1, S, S) {0,1} (1 inside the resized
image, 0 in the padding), weak () {0,1} and ``index``. Sources are any sequences of ``(image uint8 HxWx3, mask uint8
HxW)``: the readers of :mod:`textsam_eus.train.readers` or the synthetic phantom. A mask of ``None`` is a weak
positive (a frame of a recording labelled tumour, outline unknown: :mod:`textsam_eus.train.video_labels`); its
item has an all-zero mask and ``weak`` 1, and the trainer gives it no mask loss.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import cv2
import numpy as np
import torch
from torch.utils.data import Dataset

from ..model import transforms as T
from .negative_variants import tone_and_speckle


@dataclass
class AugmentConfig:
    """Ultrasound-suited augmentation (off by default for paper runs)."""

    gain: tuple[float, float] = (0.75, 1.3)  # overall brightness (receiver gain)
    gamma: tuple[float, float] = (0.8, 1.25)  # log-compression / dynamic-range changes
    speckle: float = 0.25  # strength of extra multiplicative speckle
    max_rotate_deg: float = 10.0
    scale: tuple[float, float] = (0.9, 1.1)
    max_shift: float = 0.05  # fraction of the side
    hflip: float = 0.5


def augment(image: np.ndarray, mask: np.ndarray, rng: np.random.Generator, cfg: AugmentConfig
            ) -> tuple[np.ndarray, np.ndarray]:
    h, w = mask.shape
    angle = rng.uniform(-cfg.max_rotate_deg, cfg.max_rotate_deg)
    scale = rng.uniform(*cfg.scale)
    m = cv2.getRotationMatrix2D((w / 2, h / 2), angle, scale)
    m[:, 2] += rng.uniform(-cfg.max_shift, cfg.max_shift, 2) * (w, h)
    image = cv2.warpAffine(image, m, (w, h), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_CONSTANT)
    mask = cv2.warpAffine(mask, m, (w, h), flags=cv2.INTER_NEAREST, borderMode=cv2.BORDER_CONSTANT)
    if rng.random() < cfg.hflip:
        image, mask = image[:, ::-1], mask[:, ::-1]
    return tone_and_speckle(image, rng, cfg.gamma, cfg.gain, cfg.speckle), np.ascontiguousarray(mask)


def gt_prompts(mask: torch.Tensor, rng: np.random.Generator, jitter: float = 0.1
               ) -> tuple[torch.Tensor, torch.Tensor] | None:
    """Centroid (label 1) + box corners (labels 2/3) from a ground-truth (S, S) mask, box jittered by up to
    ``jitter`` of its size per side; None for an empty mask. Used to train the refinement path."""
    bc = T.box_and_centroid(mask > 0.5)
    if bc is None:
        return None
    box, centroid = bc
    size = torch.stack([box[2] - box[0], box[3] - box[1], box[2] - box[0], box[3] - box[1]]) + 1
    box = box + torch.from_numpy(rng.uniform(-jitter, jitter, 4).astype(np.float32)) * size
    coords = torch.stack([centroid, box[:2], box[2:]])
    return coords, torch.tensor([1.0, 2.0, 3.0])


class SegmentationTorchDataset(Dataset):
    def __init__(self, pairs: Sequence, image_size: int, pixel_mean, pixel_std,
                 augment_cfg: AugmentConfig | None = None, seed: int = 0, resize: str = "area") -> None:
        self.image_size = image_size
        self.resize = resize
        self.pixel_mean, self.pixel_std = pixel_mean, pixel_std
        self.augment_cfg = augment_cfg
        self.seed = seed
        self.epoch = 0
        self.items: list[tuple[np.ndarray, np.ndarray]] = []
        self.weak: list[bool] = []
        for i in range(len(pairs)):  # resize once; full-size frames are not kept
            image, mask = pairs[i]
            rgb = T.to_rgb(image)
            self.weak.append(mask is None)
            if mask is None:
                mask = np.zeros(rgb.shape[:2], np.uint8)
            h, w = T.resized_shape(rgb.shape[0], rgb.shape[1], image_size)
            small = T.resize_image(rgb, (h, w), resize)
            self.items.append((small.copy() if small is rgb else small,  # never a view of the caller's frame
                               cv2.resize((mask > 0).astype(np.uint8), (w, h), interpolation=cv2.INTER_NEAREST)))

    def __len__(self) -> int:
        return len(self.items)

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __getitem__(self, index: int) -> dict[str, torch.Tensor]:
        image, mask = self.items[index]
        if self.augment_cfg is not None:
            rng = np.random.default_rng((self.seed, self.epoch, index))
            image, mask = augment(image, mask, rng, self.augment_cfg)
        x, (h, w) = T.preprocess(image, self.image_size, self.pixel_mean, self.pixel_std)
        m = T.preprocess_mask(mask, self.image_size)
        valid = torch.zeros_like(m)
        valid[..., :h, :w] = 1
        return {"image": x[0], "mask": m[0], "valid": valid[0], "weak": torch.tensor(float(self.weak[index])),
                "index": torch.tensor(index)}
