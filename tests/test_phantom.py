"""Tests for the synthetic EUS phantom (textsam_eus.common.phantom)."""
from __future__ import annotations

import cv2
import numpy as np
import pytest

from textsam_eus.common.phantom import (
    PhantomClip,
    PhantomConfig,
    fan_geometry,
    fan_mask,
    make_phantom,
    make_phantom_dataset,
)

SEEDS = range(5)


def _iou(a: np.ndarray, b: np.ndarray) -> float:
    a, b = a.astype(bool), b.astype(bool)
    return float((a & b).sum() / max((a | b).sum(), 1))


def _corr(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.corrcoef(a.astype(np.float64).ravel(), b.astype(np.float64).ravel())[0, 1])


@pytest.mark.parametrize("hw", [(256, 256), (192, 320), (320, 224)])
def test_shapes_and_dtypes(hw):
    cfg = PhantomConfig(height=hw[0], width=hw[1])
    img, mask = make_phantom(0, cfg)
    assert img.shape == (*hw, 3) and img.dtype == np.uint8
    assert mask.shape == hw and mask.dtype == np.uint8
    fan = fan_mask(cfg)
    # grey inside the fan: the three channels agree there
    assert np.array_equal(img[..., 0][fan], img[..., 1][fan])
    assert np.array_equal(img[..., 0][fan], img[..., 2][fan])
    assert fan.mean() > 0.2 and mask.sum() > 0


@pytest.mark.parametrize("seed", SEEDS)
def test_mask_binary_nonempty_inside_fan(seed):
    img, mask, layers = make_phantom(seed, return_layers=True)
    assert set(np.unique(mask)) == {0, 1}
    assert mask.sum() > 0.005 * mask.size
    assert not (mask.astype(bool) & ~layers["fan"]).any()
    assert np.array_equal(mask.astype(bool), layers["lesion"])
    # the lesion is well inside the fan: the mask does not touch the fan border
    inner = cv2.erode(layers["fan"].astype(np.uint8), np.ones((5, 5), np.uint8)).astype(bool)
    assert not (mask.astype(bool) & ~inner).any()


@pytest.mark.parametrize("seed", SEEDS)
def test_lesion_darker_than_surrounding_ring(seed):
    img, mask, layers = make_phantom(seed, return_layers=True)
    grey = img[..., 0].astype(np.float64)
    ring = cv2.dilate(mask, np.ones((15, 15), np.uint8)).astype(bool) & ~mask.astype(bool) & layers["fan"]
    assert ring.sum() > 100
    assert grey[mask.astype(bool)].mean() < grey[ring].mean() - 10


@pytest.mark.parametrize("seed", SEEDS)
def test_posterior_shadow_below_lesion(seed):
    _, mask, layers = make_phantom(seed, PhantomConfig(p_cyst=0.0, p_vessel=0.0), return_layers=True)
    ys, xs = np.nonzero(mask)
    col = int(np.median(xs[ys == ys.max()]))
    below = layers["acoustic"][ys.max() + 2:, col][layers["fan"][ys.max() + 2:, col]]
    above = layers["acoustic"][: ys.min() - 2, col][layers["fan"][: ys.min() - 2, col]]
    assert below.size > 0 and below.max() < 0.8
    assert np.allclose(above, 1.0, atol=0.05)


@pytest.mark.parametrize("seed", SEEDS)
def test_outside_fan_black_except_overlays(seed):
    img, mask, layers = make_phantom(seed, return_layers=True)
    fan, ov = layers["fan"], layers["overlay"]
    assert ov.sum() > 50  # the screen annotations are drawn
    assert not (img[~fan & ~ov] > 0).any()
    assert not (ov & fan).any() and not (ov & mask.astype(bool)).any()
    assert (img[ov].max(-1) > 0).all()
    # some overlay text is coloured (not grey)
    assert (np.ptp(img[ov].astype(int), axis=-1) > 30).any()


def test_no_overlays_option():
    img, _, layers = make_phantom(1, PhantomConfig(overlays=False), return_layers=True)
    assert not layers["overlay"].any()
    assert not img[~layers["fan"]].any()


@pytest.mark.parametrize("seed", SEEDS)
def test_speckle_is_spatially_correlated_not_white(seed):
    cfg = PhantomConfig(p_vessel=0.0, p_cyst=0.0)
    img, mask, layers = make_phantom(seed, cfg, return_layers=True)
    g = img[..., 0].astype(np.float64)
    inner = cv2.erode(layers["fan"].astype(np.uint8), np.ones((21, 21), np.uint8)).astype(bool)
    hp = g - cv2.GaussianBlur(g, (0, 0), 3.0)  # remove anatomy / attenuation, keep speckle

    def neighbour_corr(a, dy, dx):
        m = inner[: a.shape[0] - dy, : a.shape[1] - dx] & inner[dy:, dx:]
        return _corr(a[: a.shape[0] - dy, : a.shape[1] - dx][m], a[dy:, dx:][m])

    assert neighbour_corr(g, 0, 1) > 0.3 and neighbour_corr(g, 1, 0) > 0.3
    # the speckle itself is correlated, and elongated laterally (~ horizontal) rather than axially
    lat, ax = neighbour_corr(hp, 0, 1), neighbour_corr(hp, 1, 0)
    assert ax > 0.25 and lat > 0.5 and lat > ax + 0.15
    # strong pixel-scale fluctuations that decorrelate within a few pixels (not a smooth field)
    assert hp[inner].std() > 10
    assert abs(neighbour_corr(hp, 8, 0)) < 0.2
    # white noise would fail: its high-passed neighbour correlation is ~0
    w = np.random.default_rng(seed).standard_normal(g.shape)
    w_hp = w - cv2.GaussianBlur(w, (0, 0), 3.0)
    assert abs(neighbour_corr(w_hp, 0, 1)) < 0.1


def test_depth_attenuation():
    cfg = PhantomConfig(p_lesion=0.0, p_vessel=0.0, p_cyst=0.0, overlays=False)
    geo = fan_geometry(cfg)
    (ax, ay), r0, r1 = geo["apex"], geo["r0"], geo["r1"]
    yy, xx = np.mgrid[0 : cfg.height, 0 : cfg.width]
    d = (np.hypot(xx - ax, yy - ay) - r0) / (r1 - r0)
    fan = fan_mask(cfg)
    shallow, deep = fan & (d > 0.2) & (d < 0.4), fan & (d > 0.75) & (d < 0.95)
    means = [(img[..., 0][shallow].mean(), img[..., 0][deep].mean())
             for img, _ in (make_phantom(s, cfg) for s in range(4))]
    assert np.mean([s - dp for s, dp in means]) > 10


def test_determinism():
    a_img, a_mask = make_phantom(7)
    b_img, b_mask = make_phantom(7)
    c_img, c_mask = make_phantom(8)
    assert np.array_equal(a_img, b_img) and np.array_equal(a_mask, b_mask)
    assert not np.array_equal(a_img, c_img) and not np.array_equal(a_mask, c_mask)
    g_img, g_mask = make_phantom(np.random.default_rng(7))
    assert np.array_equal(a_img, g_img) and np.array_equal(a_mask, g_mask)


@pytest.mark.parametrize("seed", SEEDS)
def test_vessels_and_cysts_dark_and_not_in_mask(seed):
    cfg = PhantomConfig(p_vessel=1.0, p_cyst=1.0)
    img, mask, layers = make_phantom(seed, cfg, return_layers=True)
    ves, cys = layers["vessels"], layers["cysts"]
    assert ves.sum() > 30
    assert not (ves & mask.astype(bool)).any() and not (cys & mask.astype(bool)).any()
    grey = img[..., 0].astype(np.float64)
    core = cv2.erode((ves | cys).astype(np.uint8), np.ones((3, 3), np.uint8)).astype(bool)
    tissue = layers["fan"] & ~ves & ~cys & ~mask.astype(bool)
    assert grey[core].mean() < 0.5 * grey[tissue].mean()
    # the lesion (hence the mask) is sampled before vessels/cysts: same mask without them
    _, mask0 = make_phantom(seed, PhantomConfig(p_vessel=0.0, p_cyst=0.0))
    assert np.array_equal(mask, mask0)


def test_cysts_appear_and_stay_out_of_mask():
    cfg = PhantomConfig(p_cyst=1.0)
    found = 0
    for s in range(6):
        _, mask, layers = make_phantom(s, cfg, return_layers=True)
        found += layers["cysts"].any()
        assert not (layers["cysts"] & mask.astype(bool)).any()
    assert found >= 3


@pytest.mark.parametrize("seed", range(3))
def test_p_lesion_zero_gives_empty_mask(seed):
    img, mask = make_phantom(seed, PhantomConfig(p_lesion=0.0))
    assert mask.sum() == 0 and mask.dtype == np.uint8
    assert img[fan_mask()].mean() > 20


def test_p_lesion_fraction():
    cfg = PhantomConfig(p_lesion=0.5, height=64, width=64)
    has = [m.any() for _, m in make_phantom_dataset(40, 3, cfg)]
    assert 8 <= sum(has) <= 32


def test_clip_smooth_motion_and_deformation():
    clip = PhantomClip(31, seed=3)
    assert len(clip) == 31
    frames = list(clip)
    assert len(frames) == 31
    masks = [m for _, m in frames]
    assert all(m.sum() > 0 for m in masks)
    assert min(_iou(masks[i], masks[i + 1]) for i in range(30)) > 0.7
    assert _iou(masks[0], masks[30]) < 0.97
    fan = fan_mask()
    g0, g1, g30 = (frames[i][0][..., 0][fan] for i in (0, 1, 30))
    assert 0.4 < _corr(g0, g1) < 0.99  # speckle partially persistent
    assert _corr(g0, g30) < _corr(g0, g1)


def test_clip_indexing_matches_iteration():
    clip = PhantomClip(6, seed=11, fps=10.0)
    it = list(clip)
    for i in (0, 3, 5):
        img, mask = clip[i]
        assert np.array_equal(img, it[i][0]) and np.array_equal(mask, it[i][1])
    # random access order does not matter, negative indices work
    assert np.array_equal(clip[-1][0], it[5][0])
    assert np.array_equal(PhantomClip(6, seed=11, fps=10.0)[4][1], it[4][1])
    with pytest.raises(IndexError):
        clip[6]
    _, _, layers = clip.frame(2, return_layers=True)
    assert np.array_equal(layers["lesion"], it[2][1].astype(bool))


def test_dataset():
    cfg = PhantomConfig(height=96, width=96)
    ds = make_phantom_dataset(4, 5, cfg)
    assert len(ds) == 4 and make_phantom_dataset(0, 5, cfg) == []
    assert all(img.shape == (96, 96, 3) and m.shape == (96, 96) for img, m in ds)
    ds2 = make_phantom_dataset(4, 5, cfg)
    assert all(np.array_equal(a[0], b[0]) and np.array_equal(a[1], b[1]) for a, b in zip(ds, ds2))
    assert not np.array_equal(ds[0][1], ds[1][1])


@pytest.mark.parametrize(
    "field, value",
    [
        ("height", 8),
        ("width", 100.5),
        ("height", True),
        ("p_lesion", 1.5),
        ("p_vessel", -0.1),
        ("p_cyst", 2),
        ("lesion_radius", (0.2, 0.1)),
        ("lesion_radius", (0.0, 0.1)),
        ("lesion_radius", 0.1),
        ("fan_angle", 10.0),
        ("dynamic_range_db", 0.0),
        ("speckle_persistence", 1.5),
        ("overlays", "yes"),
        ("max_vessels", -1),
    ],
)
def test_bad_config_raises_naming_field(field, value):
    with pytest.raises(ValueError, match=field):
        PhantomConfig(**{field: value})


def test_bad_clip_args():
    with pytest.raises(ValueError, match="n_frames"):
        PhantomClip(0, 1)
    with pytest.raises(ValueError, match="fps"):
        PhantomClip(3, 1, fps=0.0)
    with pytest.raises(ValueError, match="n"):
        make_phantom_dataset(-1, 0)
