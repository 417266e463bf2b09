"""Reading one or more datasets and splitting them patient-wise (case-wise), never image-wise."""

from __future__ import annotations

import math
import warnings
from collections import OrderedDict
from typing import Iterable, Sequence

import numpy as np

from ..core.errors import OptionError
from .readers import _SPLIT_ALIASES, SPLITS, DatasetError, Sample, read_dataset

# --------------------------------------------------------------------------- #
# splitting
# --------------------------------------------------------------------------- #
def _group_by_case(samples: Iterable[Sample]) -> "OrderedDict[str, list[Sample]]":
    groups: OrderedDict[str, list[Sample]] = OrderedDict()
    for s in samples:
        groups.setdefault(s.case, []).append(s)
    return groups


def _empty_split_error(split: str, n_cases: int, detail: str) -> DatasetError:
    return DatasetError(
        f"split '{split}' would be empty: {detail}; only {n_cases} case(s) available. "
        f"Add more cases, lower the other splits' share (fractions=/counts=), or give "
        f"'{split}' a fraction/count of 0 to go without it on purpose"
    )


def _counts_from_fractions(fractions: Sequence[float], n: int) -> list[int]:
    if len(fractions) != 3 or any(f < 0 for f in fractions):
        raise OptionError(f"fractions must be three non-negative numbers (train, val, test), got {fractions!r}")
    total = float(sum(fractions))
    if not math.isclose(total, 1.0, abs_tol=1e-6):
        raise OptionError(f"fractions must sum to 1, got {fractions!r} (sum {total})")
    counts = [0, 0, 0]
    # val and test: rounded share, at least one case when their fraction is positive
    for i in (1, 2):
        if fractions[i] > 0:
            counts[i] = max(1, int(round(fractions[i] * n)))
    counts[0] = n - counts[1] - counts[2]
    for i, name in enumerate(SPLITS):
        if fractions[i] > 0 and counts[i] <= 0:
            raise _empty_split_error(
                name, n, f"fractions {tuple(fractions)} leave no case for it"
            )
    if fractions[0] == 0 and counts[0] > 0:  # all-zero train fraction: give rest to val
        counts[1] += counts[0]
        counts[0] = 0
    return counts


def split_by_case(
    samples: Sequence[Sample],
    fractions: Sequence[float] | None = (0.8, 0.1, 0.1),
    *,
    counts: Sequence[int | None] | None = None,
    seed: int = 0,
    respect_existing: bool = False,
) -> dict[str, list[Sample]]:
    """Split samples patient-wise into ``{"train", "val", "test"}``.

    Cases (``Sample.case``) are sorted, shuffled with
    ``numpy.random.default_rng(seed)`` and dealt out in order train, val,
    test, so the result is deterministic for a given seed and every case lands
    wholly in one split (never image-wise).  Within a split the samples keep
    their input order.

    ``fractions``: shares of *cases* (not images) for train/val/test; they must
    sum to 1.  Val and test get ``round(f * n_cases)`` cases, at least one when
    their fraction is positive; train gets the rest.
    ``counts``: exact numbers of cases ``(n_train, n_val, n_test)`` (overrides
    ``fractions``); they must add up to the number of cases, except that one
    entry may be ``None`` meaning "all remaining cases".
    ``respect_existing``: samples that already carry ``split`` keep it (and
    cases seen in an existing split send their other samples there); only the
    remaining cases are distributed.  A case found in several existing splits
    triggers a warning (possible leakage in the given split).

    A split that would end up empty (with a positive fraction/count, or, with
    ``respect_existing``, an empty existing split) raises :class:`DatasetError`
    naming the split and the number of cases available.
    """
    samples = list(samples)
    fixed: dict[str, str] = {}  # case -> split
    if respect_existing:
        per_case_splits: dict[str, set[str]] = {}
        for s in samples:
            if s.split is not None:
                sp = _SPLIT_ALIASES.get(str(s.split).lower())
                if sp is None:
                    raise DatasetError(f"sample {s.image} has unknown split {s.split!r}")
                per_case_splits.setdefault(s.case, set()).add(sp)
        leaky = sorted(c for c, sps in per_case_splits.items() if len(sps) > 1)
        if leaky:
            warnings.warn(
                f"{len(leaky)} case(s) appear in more than one existing split "
                f"(e.g. {', '.join(leaky[:5])}); the existing split is kept as given",
                stacklevel=2,
            )
        for c, sps in per_case_splits.items():
            fixed[c] = sorted(sps, key=SPLITS.index)[0]

    groups = _group_by_case(samples)
    free_cases = sorted(c for c in groups if c not in fixed)
    n_all = len(groups)
    n = len(free_cases)

    out: dict[str, list[Sample]] = {k: [] for k in SPLITS}
    assign: dict[str, str] = dict(fixed)

    if n:
        if counts is not None:
            cnt = list(counts)
            if len(cnt) != 3:
                raise ValueError(f"counts must be (n_train, n_val, n_test), got {counts!r}")
            if sum(c is None for c in cnt) > 1:
                raise ValueError("at most one entry of counts may be None ('the rest')")
            if any(c is not None and c < 0 for c in cnt):
                raise ValueError(f"counts must be non-negative, got {counts!r}")
            known = sum(c for c in cnt if c is not None)
            if None in cnt:
                rest = n - known
                if rest < 0:
                    raise DatasetError(
                        f"counts {tuple(counts)} need at least {known} cases but only {n} are available"
                    )
                cnt[cnt.index(None)] = rest
            elif known != n:
                raise DatasetError(
                    f"counts {tuple(counts)} add up to {known} cases but {n} case(s) are "
                    f"available; make them add up to {n} or use None for 'the rest'"
                )
            for i, name in enumerate(SPLITS):
                if counts[i] is None and cnt[i] == 0:
                    raise _empty_split_error(name, n, f"counts {tuple(counts)} leave no case for it")
        else:
            if fractions is None:
                raise ValueError("give fractions or counts")
            cnt = _counts_from_fractions(list(fractions), n)
        order = np.random.default_rng(seed).permutation(n)
        shuffled = [free_cases[i] for i in order]
        start = 0
        for name, k in zip(SPLITS, cnt):
            for c in shuffled[start : start + k]:
                assign[c] = name
            start += k

    for s in samples:
        if respect_existing and s.split is not None:
            out[_SPLIT_ALIASES[str(s.split).lower()]].append(s)
        else:
            out[assign[s.case]].append(s)

    # every requested split must hold something
    for i, name in enumerate(SPLITS):
        if out[name]:
            continue
        if counts is not None:
            wanted = counts[i] is None or counts[i] > 0
        elif fractions is not None:
            wanted = fractions[i] > 0
        else:
            wanted = True
        if respect_existing and fixed and not n:
            wanted = True  # a fully pre-split dataset must have all three splits
        if wanted:
            raise _empty_split_error(name, n_all, "no case was assigned to it")
    return out


def paper_split(samples: Sequence[Sample], seed: int = 0) -> dict[str, list[Sample]]:
    """The paper's patient-wise 12/2/4 split of the EUS database cancer patients.

    Only cancer samples are used (``source == "cancer"``; when no sample has a
    ``source`` every sample is taken to be a cancer frame).  At least 18
    cancer cases are required.  With exactly 18 the cases are split 12 train /
    2 val / 4 test with :func:`split_by_case`; with more, 18 cases are drawn
    (deterministically from ``seed``) and the others are left out with a
    warning.
    """
    samples = list(samples)
    if any(s.source is not None for s in samples):
        cancer = [s for s in samples if (s.source or "").lower() == "cancer"]
    else:
        cancer = samples
    cases = sorted({s.case for s in cancer})
    if len(cases) < 18:
        raise DatasetError(
            f"paper_split needs the 18 cancer patients of the EUS database (12 train / "
            f"2 val / 4 test) but found {len(cases)} cancer case(s); use split_by_case "
            f"for other datasets"
        )
    if len(cases) > 18:
        rng = np.random.default_rng(seed)
        keep = {cases[i] for i in sorted(rng.choice(len(cases), 18, replace=False))}
        warnings.warn(
            f"paper_split: {len(cases)} cancer cases found, using 18 and leaving out "
            f"{', '.join(c for c in cases if c not in keep)}",
            stacklevel=2,
        )
        cancer = [s for s in cancer if s.case in keep]
    plain = [s if s.split is None else _replace_split(s, None) for s in cancer]
    return split_by_case(plain, counts=(12, 2, 4), seed=seed)


def _replace_split(s: Sample, split: str | None) -> Sample:
    return Sample(image=s.image, mask=s.mask, case=s.case, split=split, source=s.source, crop=s.crop)





#: the split flags ``train`` records in a checkpoint when honest calibration is on (``eval`` and the trust benchmark
#: read them back to find its held-out part)
RECORDED_SPLIT_KEYS = ("negative_split", "lesion_free_crops", "split_seed", "val_fraction", "test_fraction")


def split_samples(paths: list[str], mode: str = "auto", val_fraction: float = 0.15, test_fraction: float = 0.0,
                  seed: int = 0, *, negative_split: Sequence[float] | str | None = None, lesion_free_crops: int = 0,
                  crop_min_side: float = 0.5) -> dict[str, list[Sample]]:
    """Samples of every dataset in ``paths``, split by case into train/val/test (and ``calibration``).

    ``auto``: the layout's own splits when every sample has one, else :func:`split_by_case`; ``existing``: the
    layout's splits (error when missing); ``paper``: the paper's 12/2/4 split of the cancer patients.

    ``negative_split`` (train, calibration, test shares, e.g. ``"0.6,0.2,0.2"``): the lesion-free images
    (:func:`~textsam_eus.train.negative_split.is_negative`) are taken out of that split and dealt into
    train / ``calibration`` / test by group (:func:`~textsam_eus.train.negative_split.split_negatives`, from
    ``seed``); the lesion images are split as above. Without it ``calibration`` is empty and nothing changes.
    ``lesion_free_crops`` K: up to K crops of each lesion image with no lesion pixel
    (:func:`~textsam_eus.train.lesion_free_crops.lesion_free_crops`) join their image's part as negatives: train
    -> train, val -> calibration with ``negative_split`` (else val), test -> test.
    """
    samples: list[Sample] = []
    for i, path in enumerate(paths):
        for s in read_dataset(path):
            # cases of different datasets never merge, even when their ids collide
            samples.append(Sample(s.image, s.mask, f"{i}:{s.case}", s.split, s.source, s.crop))
    negatives: list[Sample] = []
    if negative_split is not None:
        from .negative_split import is_negative, parse_fractions

        fractions = parse_fractions(negative_split)
        negatives = [s for s in samples if is_negative(s)]
        samples = [s for s in samples if not is_negative(s)]
    out = _split_lesion_samples(samples, mode, val_fraction, test_fraction, seed)
    out["calibration"] = []
    if negative_split is not None and negatives:
        from .negative_split import split_negatives

        parts = split_negatives(negatives, fractions, seed)
        for part in ("train", "calibration", "test"):
            out[part] += parts[part]
    if lesion_free_crops:
        from .lesion_free_crops import lesion_free_crops as make_crops

        held = "calibration" if negative_split is not None else "val"
        for split, part in (("train", "train"), ("val", held), ("test", "test")):
            out[part] += make_crops(out[split], lesion_free_crops, seed, crop_min_side)
    return {k: out[k] for k in ("train", "val", "calibration", "test")}


def _split_lesion_samples(samples: list[Sample], mode: str, val_fraction: float, test_fraction: float,
                          seed: int) -> dict[str, list[Sample]]:
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
