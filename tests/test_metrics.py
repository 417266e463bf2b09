import math

import numpy as np
import pytest
from scipy import stats

from textsam_eus.train.metrics import (
    boundary,
    dice,
    paired_ttest,
    per_case_table,
    summarize,
    surface_dice,
    surface_dice_reference_convention,
)


def disc(shape=(96, 96), center=(48, 48), r=15.0):
    yy, xx = np.mgrid[: shape[0], : shape[1]]
    return ((yy - center[0]) ** 2 + (xx - center[1]) ** 2 <= r * r).astype(np.uint8)


# ----------------------------------------------------------------- dice
def test_dice_hand_count():
    p = np.zeros((5, 5), np.uint8)
    g = np.zeros((5, 5), np.uint8)
    p[0:2, 0:3] = 1  # 6 px
    g[1:3, 1:4] = 1  # 6 px, overlap row 1 cols 1-2 -> 2 px
    assert dice(p, g) == pytest.approx(2 * 2 / 12)
    assert dice(p, p) == 1.0


def test_dice_nonbinary_values_and_bool():
    p = np.zeros((4, 4), np.uint8)
    p[0, :] = 255
    g = np.zeros((4, 4), bool)
    g[0, :2] = True
    assert dice(p, g) == pytest.approx(2 * 2 / 6)


def test_dice_empty_conventions():
    z = np.zeros((8, 8), np.uint8)
    o = z.copy()
    o[2, 2] = 1
    assert dice(z, z) == 1.0
    assert dice(o, z) == 0.0
    assert dice(z, o) == 0.0


def test_dice_shape_errors():
    with pytest.raises(ValueError):
        dice(np.zeros((3, 3)), np.zeros((3, 4)))
    with pytest.raises(ValueError):
        dice(np.zeros((3, 3, 1)), np.zeros((3, 3, 1)))


# ----------------------------------------------------------------- boundary
def test_boundary_of_square_is_ring():
    m = np.zeros((7, 7), np.uint8)
    m[1:6, 1:6] = 1
    b = boundary(m)
    assert b.sum() == 16  # 5x5 square -> 25 - 9 interior
    assert not b[2:5, 2:5].any()
    # touching the image border counts as boundary
    full = np.ones((4, 4), np.uint8)
    assert boundary(full).sum() == 12


# ----------------------------------------------------------------- NSD
def test_nsd_identical_discs():
    d = disc()
    assert surface_dice(d, d) == 1.0
    assert dice(d, d) == 1.0


def test_nsd_shift_2px_depends_on_tolerance():
    a = disc()
    b = np.roll(a, 2, axis=1)
    assert surface_dice(a, b, tolerance_px=3) == 1.0
    assert surface_dice(a, b, tolerance_px=2) == 1.0
    v1 = surface_dice(a, b, tolerance_px=1)
    assert 0.3 < v1 < 1.0


def test_nsd_shift_10px_small():
    a = disc()
    b = np.roll(a, 10, axis=1)
    v = surface_dice(a, b, tolerance_px=3)
    assert v < 0.4
    # monotone in tolerance
    assert surface_dice(a, b, tolerance_px=1) <= v <= surface_dice(a, b, tolerance_px=6)
    assert surface_dice(a, b, tolerance_px=10) == 1.0


def test_nsd_hand_count():
    # pred: single pixel at the centre of a 3x3 gt square.
    # d(pred, ring) = 1; ring pixels: 4 at distance 1, 4 at sqrt(2).
    p = np.zeros((7, 7), np.uint8)
    p[3, 3] = 1
    g = np.zeros((7, 7), np.uint8)
    g[2:5, 2:5] = 1
    assert surface_dice(p, g, tolerance_px=1.0) == pytest.approx((1 + 4) / (1 + 8))
    assert surface_dice(p, g, tolerance_px=1.5) == 1.0
    assert surface_dice(p, g, tolerance_px=0.5) == 0.0


def test_nsd_spacing():
    p = np.zeros((5, 5), np.uint8)
    g = np.zeros((5, 5), np.uint8)
    p[2, 0] = 1
    g[2, 2] = 1  # 2 columns apart
    assert surface_dice(p, g, tolerance_px=1.0) == 0.0
    assert surface_dice(p, g, tolerance_px=1.0, spacing=(1.0, 0.5)) == 1.0
    assert surface_dice(p, g, tolerance_px=1.0, spacing=(0.5, 1.0)) == 0.0


def test_nsd_empty_conventions():
    z = np.zeros((16, 16), np.uint8)
    d = disc((16, 16), (8, 8), 4)
    assert surface_dice(z, z) == 1.0
    assert surface_dice(d, z) == 0.0
    assert surface_dice(z, d) == 0.0
    assert surface_dice_reference_convention(z, z) == 1.0
    assert surface_dice_reference_convention(z, d) == 0.0
    assert surface_dice_reference_convention(d, z) == 0.0


def test_nsd_errors():
    with pytest.raises(ValueError):
        surface_dice(np.zeros((3, 3)), np.zeros((4, 3)))
    with pytest.raises(ValueError):
        surface_dice(np.zeros((3, 3)), np.zeros((3, 3)), tolerance_px=-1)
    with pytest.raises(ValueError):
        surface_dice(np.zeros((3, 3)), np.zeros((3, 3)), spacing=(1.0, 0.0))


def test_reference_convention_differs_from_standard():
    a = disc()
    assert surface_dice_reference_convention(a, a) == 1.0
    b = np.roll(a, 10, axis=1)
    std = surface_dice(a, b, tolerance_px=3)
    ref = surface_dice_reference_convention(a, b, tolerance_px=3)
    # interior overlap counts in the reference convention -> much more lenient
    assert ref > std + 0.3
    # hand count: centre pixel vs 3x3 square, all 9 square pixels are "surface"
    p = np.zeros((7, 7), np.uint8)
    p[3, 3] = 1
    g = np.zeros((7, 7), np.uint8)
    g[2:5, 2:5] = 1
    assert surface_dice_reference_convention(p, g, tolerance_px=1.0) == pytest.approx((1 + 5) / (1 + 9))
    assert surface_dice(p, g, tolerance_px=1.0) != pytest.approx(0.6)


# ----------------------------------------------------------------- statistics
def test_summarize():
    s = summarize([1.0, 2.0, 3.0, 10.0])
    assert s["n"] == 4
    assert s["mean"] == pytest.approx(4.0)
    assert s["median"] == pytest.approx(2.5)
    assert s["std"] == pytest.approx(np.std([1, 2, 3, 10], ddof=0))
    assert s["std"] != pytest.approx(np.std([1, 2, 3, 10], ddof=1))
    e = summarize([])
    assert e["n"] == 0 and math.isnan(e["mean"])


def test_paired_ttest_matches_scipy():
    a = [0.81, 0.77, 0.90, 0.65, 0.72, 0.88]
    b = [0.79, 0.70, 0.86, 0.66, 0.61, 0.80]
    r = paired_ttest(a, b)
    ref = stats.ttest_rel(a, b)
    assert r["t"] == pytest.approx(ref.statistic)
    assert r["p"] == pytest.approx(ref.pvalue)
    assert r["n"] == 6
    assert r["mean_diff"] == pytest.approx(np.mean(np.subtract(a, b)))
    # hand-computed t for differences (1, 2, 3): mean 2, sd 1 -> t = 2 / (1/sqrt 3)
    h = paired_ttest([2, 4, 6], [1, 2, 3])
    assert h["t"] == pytest.approx(2 * math.sqrt(3))
    assert 0 < h["p"] < 1


def test_paired_ttest_errors():
    with pytest.raises(ValueError, match="equally long"):
        paired_ttest([1, 2, 3], [1, 2])
    with pytest.raises(ValueError, match="at least 2"):
        paired_ttest([1], [2])


def test_per_case_table():
    recs = [
        {"case": "C01", "dice": 0.8, "nsd": 0.6, "image": "a.png"},
        {"case": "C02", "dice": 0.5, "nsd": 0.5},
        {"case": "C01", "dice": 0.6, "nsd": 1.0, "flag": True},
    ]
    t = per_case_table(recs)
    assert [r["case"] for r in t] == ["C01", "C02"]
    assert t[0]["n_images"] == 2
    assert t[0]["dice"] == pytest.approx(0.7)
    assert t[0]["nsd"] == pytest.approx(0.8)
    assert "image" not in t[0] and "flag" not in t[0]
    assert t[1] == {"case": "C02", "n_images": 1, "dice": 0.5, "nsd": 0.5}
    with pytest.raises(ValueError):
        per_case_table([{"dice": 1.0}])


def test_mask_iou_and_dice_have_one_home():
    from textsam_eus.core.mask_metrics import mask_dice, mask_iou
    from textsam_eus.train import metrics

    a = np.zeros((4, 6), np.uint8)
    b = np.zeros((4, 6), bool)
    assert mask_iou(a, b) == 1.0 and mask_dice(a, b) == 1.0  # both empty: they agree
    a[0, :4] = 255  # any nonzero value is foreground (255 & 1 would be 1, 2 & 1 would be 0)
    assert mask_iou(a, b) == 0.0 and mask_dice(a, b) == 0.0
    b[0, 2:6] = True
    assert mask_iou(a, b) == pytest.approx(2 / 6) and mask_dice(a, b) == pytest.approx(2 * 2 / 8)
    c = np.where(a > 0, 2, 0).astype(np.uint8)
    assert mask_iou(c, b.astype(np.uint8)) == pytest.approx(2 / 6)
    assert metrics.dice(a, b) == mask_dice(a, b) and metrics.mask_iou is mask_iou
    with pytest.raises(ValueError, match="shapes differ"):
        mask_iou(a, b.T)
