"""Reading one or more datasets and splitting them patient-wise (case-wise), never image-wise."""

from __future__ import annotations

from .data import DatasetError, Sample, paper_split, read_dataset, split_by_case


def split_samples(paths: list[str], mode: str = "auto", val_fraction: float = 0.15, test_fraction: float = 0.0,
                  seed: int = 0) -> dict[str, list[Sample]]:
    """Samples of every dataset in ``paths``, split by case into train/val/test.

    ``auto``: the layout's own splits when every sample has one, else :func:`split_by_case`; ``existing``: the
    layout's splits (error when missing); ``paper``: the paper's 12/2/4 split of the cancer patients.
    """
    samples: list[Sample] = []
    for i, path in enumerate(paths):
        for s in read_dataset(path):
            # cases of different datasets never merge, even when their ids collide
            samples.append(Sample(s.image, s.mask, f"{i}:{s.case}", s.split, s.source, s.crop))
    if not samples:
        return {"train": [], "val": [], "test": []}
    if mode == "paper":
        return paper_split(samples, seed=seed)
    has_split = all(s.split for s in samples)
    if mode == "existing" and not has_split:
        raise DatasetError("--split existing needs a layout with train/val/test folders or a 'split' column")
    if has_split and mode in ("auto", "existing"):
        out = {"train": [], "val": [], "test": []}
        for s in samples:
            out[s.split].append(s)
        return out
    fractions = (1.0 - val_fraction - test_fraction, val_fraction, test_fraction)
    return split_by_case(samples, fractions, seed=seed)
