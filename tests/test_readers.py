import csv
import warnings
from pathlib import Path

import cv2
import numpy as np
import pytest

from textsam_eus.train.readers import (
    EUS_SCREEN_CROP,
    DatasetError,
    Sample,
    SegmentationDataset,
    case_from_filename,
    crop_eus_screen,
    load_pair,
    read_dataset,
    read_eus_database,
    read_manifest,
    read_split_folders,
    to_uint8,
)

from textsam_eus.train.splits import paper_split, split_by_case  # noqa: E402

REAL_MANIFEST = Path(__file__).resolve().parents[2] / "shared/data/ultrasound_lesions/manifest.csv"


def _write(path: Path, arr: np.ndarray) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    assert cv2.imwrite(str(path), arr), path
    return path


def _gray(h, w, seed=0):
    return np.random.default_rng(seed).integers(0, 100, (h, w), dtype=np.uint8)


# ----------------------------------------------------------------- EUS crop
def test_crop_constant_and_function():
    assert EUS_SCREEN_CROP == (44, 56, 711, 457)
    screen = np.zeros((600, 800, 3), np.uint8)
    screen[56, 44] = (1, 2, 3)  # 1-based (row 57, col 45)
    screen[512, 754] = (4, 5, 6)  # 1-based (row 513, col 755)
    out = crop_eus_screen(screen)
    assert out.shape == (457, 711, 3)
    assert tuple(out[0, 0]) == (1, 2, 3)
    assert tuple(out[-1, -1]) == (4, 5, 6)
    already = np.zeros((457, 711), np.uint8)
    assert crop_eus_screen(already) is already
    with pytest.raises(DatasetError, match="800x600"):
        crop_eus_screen(np.zeros((500, 500), np.uint8))


def _make_eus_db(root: Path) -> Path:
    # cancer patient C01: raw 800x600 screen, tif image, png mask
    screen = _gray(600, 800, 1)
    screen[56, 44] = 200  # screen pixel (row 57, col 45), 1-based
    screen[55, 43] = 250  # just outside the crop
    _write(root / "CANCER/Original Images/C01/V1_10.tif", screen)
    m = np.zeros((600, 800), np.uint8)
    m[56, 44] = 255
    m[512, 754] = 255
    m[0, 0] = 255  # outside the crop, must disappear
    _write(root / "CANCER/Masks/C01/V1_10.png", m)
    # cancer patient C02: already cropped 711x457, tif mask
    _write(root / "CANCER/Original Images/C02/V2_3.tif", _gray(457, 711, 2))
    m2 = np.zeros((457, 711), np.uint8)
    m2[100:110, 200:220] = 1
    _write(root / "CANCER/Masks/C02/V2_3.tif", m2)
    # healthy patient without mask, id collides with a pancreatitis patient
    _write(root / "HEALTHY PANCREAS/Original Images/P01/V1_1.tif", _gray(600, 800, 3))
    _write(root / "PANCREATITIS/Original Images/P01/V3_7.tif", _gray(600, 800, 4))
    return root


def test_read_eus_database_and_crop(tmp_path):
    root = _make_eus_db(tmp_path / "db")
    samples = read_eus_database(root)
    by_case = {s.case: s for s in samples}
    assert set(by_case) == {"C01", "C02", "healthy-P01", "pancreatitis-P01"}
    assert by_case["C01"].mask is not None and by_case["C01"].mask.name == "V1_10.png"
    assert by_case["C02"].mask.name == "V2_3.tif"
    assert by_case["healthy-P01"].mask is None
    assert by_case["C01"].source == "cancer"
    assert by_case["healthy-P01"].source == "healthy"

    img, mask = load_pair(by_case["C01"])
    assert img.shape == (457, 711, 3) and img.dtype == np.uint8
    assert mask.shape == (457, 711) and mask.dtype == np.uint8
    assert tuple(img[0, 0]) == (200, 200, 200)
    assert 250 not in img[:, :, 0]
    assert mask[0, 0] == 1 and mask[456, 710] == 1 and mask.sum() == 2
    assert set(np.unique(mask)) <= {0, 1}

    img2, mask2 = load_pair(by_case["C02"])  # already cropped: left alone
    assert img2.shape == (457, 711, 3)
    assert mask2.sum() == 200

    img3, mask3 = load_pair(by_case["healthy-P01"])
    assert img3.shape == (457, 711, 3) and mask3.shape == (457, 711)
    assert mask3.sum() == 0

    raw, raw_mask = load_pair(by_case["C01"], crop=False)
    assert raw.shape == (600, 800, 3) and raw_mask.sum() == 3

    assert len(read_dataset(root)) == 4


def test_load_pair_gray_16bit_and_explicit_crop(tmp_path):
    img16 = np.zeros((10, 12), np.uint16)
    img16[0, 0] = 65535
    img16[1, 1] = 257 * 100
    ip = _write(tmp_path / "a.tif", img16)
    mp = _write(tmp_path / "a_mask.png", (np.arange(120).reshape(10, 12) % 7 == 0).astype(np.uint8) * 3)
    img, mask = load_pair(Sample(ip, mp, "x"))
    assert img.shape == (10, 12, 3) and img.dtype == np.uint8
    assert tuple(img[0, 0]) == (255, 255, 255)
    assert img[1, 1, 0] == 100
    assert mask.max() == 1 and mask.sum() == len(range(0, 120, 7))
    ci, cm = load_pair(Sample(ip, mp, "x"), crop=(1, 1, 4, 3))
    assert ci.shape == (3, 4, 3) and cm.shape == (3, 4)
    assert ci[0, 0, 0] == 100
    with pytest.raises(DatasetError, match="does not fit"):
        load_pair(Sample(ip, mp, "x"), crop=(5, 5, 20, 20))


def test_to_uint8_rules(tmp_path):
    assert to_uint8(np.array([[0, 255]], np.uint16)).tolist() == [[0, 255]]  # 8-bit data in 16-bit
    assert to_uint8(np.array([[0, 65535, 257 * 10]], np.uint16)).tolist() == [[0, 255, 10]]
    assert to_uint8(np.array([[0.0, 0.5, 1.0]], np.float32)).tolist() == [[0, 128, 255]]
    assert to_uint8(np.array([[0.0, 100.0, 255.0]], np.float32)).tolist() == [[0, 100, 255]]
    assert to_uint8(np.array([[-1.0, 0.0, 3.0]], np.float64)).tolist() == [[0, 0, 3]]  # 0..255, clipped (no stretch)
    ip = _write(tmp_path / "f.tif", np.array([[0.0, 0.25], [0.5, 1.0]], np.float32))
    img, _ = load_pair(Sample(ip, None, "f"))
    assert img[..., 1].tolist() == [[0, 64], [128, 255]]


def test_load_pair_color_is_rgb(tmp_path):
    bgr = np.zeros((4, 5, 3), np.uint8)
    bgr[..., 0] = 10  # blue
    bgr[..., 2] = 200  # red
    ip = _write(tmp_path / "c.png", bgr)
    img, mask = load_pair(Sample(ip, None, "c"))
    assert tuple(img[0, 0]) == (200, 0, 10)
    assert mask.shape == (4, 5) and mask.sum() == 0


# ----------------------------------------------------------------- split folders
def _make_split_folders(root: Path) -> Path:
    names = {"train": ["C01_V1_1", "C01_V1_2", "C02_V1_1"], "val": ["C03_V2_5"], "test": ["C04_V1_1", "img77"]}
    for split, stems in names.items():
        for i, stem in enumerate(stems):
            _write(root / split / "images" / f"{stem}.png", _gray(20, 30, i))
            m = np.zeros((20, 30), np.uint8)
            m[5:10, 5:10] = 255
            _write(root / split / "masks" / f"{stem}.tif", m)  # different extension
    return root


def test_read_split_folders(tmp_path):
    root = _make_split_folders(tmp_path / "ref")
    samples = read_split_folders(root)
    assert len(samples) == 6
    got = {(s.image.stem, s.split, s.case) for s in samples}
    assert ("C01_V1_2", "train", "C01") in got
    assert ("C03_V2_5", "val", "C03") in got
    assert ("img77", "test", "img77") in got
    assert all(s.mask.suffix == ".tif" for s in samples)
    img, mask = load_pair(samples[0])
    assert img.shape == (20, 30, 3) and mask.sum() == 25
    assert len(read_dataset(root)) == 6
    sp = split_by_case(samples, respect_existing=True)
    assert {k: len(v) for k, v in sp.items()} == {"train": 3, "val": 1, "test": 2}


def test_case_from_filename():
    assert case_from_filename("C01_V1_12.png") == "C01"
    assert case_from_filename("img0042.png") == "img0042"
    assert case_from_filename(Path("a/b/P7_x.tif")) == "P7"


def test_split_folders_missing_mask(tmp_path):
    root = _make_split_folders(tmp_path / "ref")
    (root / "val/masks/C03_V2_5.tif").unlink()
    with pytest.raises(DatasetError, match="C03_V2_5"):
        read_split_folders(root)


# ----------------------------------------------------------------- manifest
def _write_csv(path: Path, header, rows):
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(header)
        w.writerows(rows)
    return path


def test_read_manifest_relative_paths(tmp_path):
    base = tmp_path / "ds"
    _write(base / "imgs/a.png", _gray(8, 9, 0))
    _write(base / "imgs/b.png", _gray(8, 9, 1))
    _write(base / "msk/a.png", np.full((8, 9), 255, np.uint8))
    man = _write_csv(
        base / "manifest.csv",
        ["image", "mask", "source", "case", "width", "height", "split"],
        [["imgs/a.png", "msk/a.png", "s1", "k1", 9, 8, "train"], ["imgs/b.png", "", "s1", "k2", 9, 8, ""]],
    )
    samples = read_manifest(man)
    assert [s.case for s in samples] == ["k1", "k2"]
    assert samples[0].image == base / "imgs/a.png"
    assert samples[0].split == "train" and samples[1].split is None
    assert samples[1].mask is None
    assert samples[0].source == "s1"
    img, mask = load_pair(samples[0])
    assert img.shape == (8, 9, 3) and mask.sum() == 72
    assert len(read_dataset(man)) == 2


def test_manifest_missing_columns(tmp_path):
    man = _write_csv(tmp_path / "m.csv", ["image", "mask", "width"], [["a.png", "", 1]])
    with pytest.raises(DatasetError, match="case") as ei:  # a manifest without masks is fine (negatives)
        read_manifest(man)
    assert "missing required column" in str(ei.value)
    man2 = _write_csv(tmp_path / "m2.csv", ["file"], [["a.png"]])
    with pytest.raises(DatasetError, match="image, case"):
        read_manifest(man2)


def test_manifest_missing_mask_file(tmp_path):
    _write(tmp_path / "a.png", _gray(5, 5))
    man = _write_csv(tmp_path / "m.csv", ["image", "mask", "case"], [["a.png", "masks/a.png", "k"]])
    with pytest.raises(DatasetError, match=r"masks[/\\]a\.png"):
        read_manifest(man)


# ----------------------------------------------------------------- errors
def test_size_mismatch_error(tmp_path):
    ip = _write(tmp_path / "img.png", _gray(10, 20))
    mp = _write(tmp_path / "msk.png", np.zeros((10, 10), np.uint8))
    with pytest.raises(DatasetError) as ei:
        load_pair(Sample(ip, mp, "k"))
    msg = str(ei.value)
    assert "img.png" in msg and "msk.png" in msg and "20x10" in msg and "10x10" in msg


def test_unreadable_image_error(tmp_path):
    bad = tmp_path / "broken.png"
    bad.write_bytes(b"version https://git-lfs.github.com/spec/v1\n")
    with pytest.raises(DatasetError, match="broken.png") as ei:
        load_pair(Sample(bad, None, "k"))
    assert "corrupt" in str(ei.value)
    with pytest.raises(DatasetError, match="does not exist"):
        load_pair(Sample(tmp_path / "nope.png", None, "k"))


def test_read_dataset_unknown_layout(tmp_path):
    (tmp_path / "stuff").mkdir()
    with pytest.raises(DatasetError, match="Supported") as ei:
        read_dataset(tmp_path)
    assert "train/" in str(ei.value) and "CANCER" in str(ei.value) and ".csv" in str(ei.value)


# ----------------------------------------------------------------- splitting
def _fake_samples(n_cases=30, seed=0, prefix="C", source=None):
    rng = np.random.default_rng(seed)
    out = []
    for c in range(n_cases):
        for f in range(int(rng.integers(1, 6))):
            out.append(Sample(Path(f"{prefix}{c:02d}_{f}.png"), None, f"{prefix}{c:02d}", source=source))
    return out


def _case_sets(sp):
    return {k: {s.case for s in v} for k, v in sp.items()}


def test_split_by_case_never_splits_a_case():
    samples = _fake_samples(30)
    sp = split_by_case(samples, (0.8, 0.1, 0.1), seed=3)
    cs = _case_sets(sp)
    assert cs["train"].isdisjoint(cs["val"]) and cs["train"].isdisjoint(cs["test"])
    assert cs["val"].isdisjoint(cs["test"])
    assert sum(len(v) for v in sp.values()) == len(samples)
    assert (len(cs["train"]), len(cs["val"]), len(cs["test"])) == (24, 3, 3)
    # every sample of a case is in the split of that case
    for name, v in sp.items():
        for s in samples:
            if s.case in cs[name]:
                assert s in v


def test_split_by_case_deterministic():
    samples = _fake_samples(30)
    a = split_by_case(samples, seed=7)
    b = split_by_case(list(reversed(samples)), seed=7)
    assert _case_sets(a) == _case_sets(b)
    seeds = {tuple(sorted(_case_sets(split_by_case(samples, seed=s))["test"])) for s in range(5)}
    assert len(seeds) > 1


def test_split_by_case_counts():
    samples = _fake_samples(10)
    sp = split_by_case(samples, counts=(6, 2, 2), seed=0)
    assert [len(_case_sets(sp)[k]) for k in ("train", "val", "test")] == [6, 2, 2]
    sp = split_by_case(samples, counts=(None, 1, 3), seed=0)
    assert [len(_case_sets(sp)[k]) for k in ("train", "val", "test")] == [6, 1, 3]
    with pytest.raises(DatasetError, match="add up"):
        split_by_case(samples, counts=(5, 2, 2))


def test_split_by_case_empty_split_error():
    samples = _fake_samples(2)
    with pytest.raises(DatasetError) as ei:
        split_by_case(samples, (0.8, 0.1, 0.1))
    msg = str(ei.value)
    assert "'train'" in msg or "'test'" in msg or "'val'" in msg
    assert "2 case(s) available" in msg
    with pytest.raises(DatasetError, match="'test'"):
        split_by_case(_fake_samples(4), counts=(4, 0, None))
    # an explicit zero share is allowed
    sp = split_by_case(_fake_samples(4), (0.75, 0.25, 0.0))
    assert sp["test"] == [] and len(_case_sets(sp)["val"]) == 1


def test_split_by_case_respect_existing():
    base = _fake_samples(12)
    pre = [Sample(s.image, s.mask, s.case, "test" if s.case in ("C00", "C01") else None) for s in base]
    sp = split_by_case(pre, (0.8, 0.1, 0.1), seed=1, respect_existing=True)
    cs = _case_sets(sp)
    assert {"C00", "C01"} <= cs["test"]
    assert cs["train"].isdisjoint(cs["test"]) and cs["val"].isdisjoint(cs["test"])
    # without respect_existing the given split is ignored
    sp2 = split_by_case(pre, (0.8, 0.1, 0.1), seed=1)
    assert sum(len(v) for v in sp2.values()) == len(pre)
    # a pre-split dataset missing a split -> empty split error
    only_train = [Sample(s.image, s.mask, s.case, "train") for s in base]
    with pytest.raises(DatasetError, match="'val'"):
        split_by_case(only_train, respect_existing=True)


def test_paper_split():
    cancer = _fake_samples(18, prefix="C", source="cancer")
    healthy = _fake_samples(5, seed=1, prefix="healthy-P", source="healthy")
    sp = paper_split(cancer + healthy, seed=0)
    cs = _case_sets(sp)
    assert [len(cs[k]) for k in ("train", "val", "test")] == [12, 2, 4]
    assert all(c.startswith("C") for v in cs.values() for c in v)
    assert _case_sets(paper_split(cancer + healthy, seed=0)) == cs
    with pytest.raises(DatasetError, match="17 cancer case"):
        paper_split(_fake_samples(17, source="cancer") + healthy)
    with warnings.catch_warnings(record=True) as w:
        warnings.simplefilter("always")
        sp = paper_split(_fake_samples(20, source="cancer"))
    assert any("leaving out" in str(x.message) for x in w)
    assert [len(_case_sets(sp)[k]) for k in ("train", "val", "test")] == [12, 2, 4]


# ----------------------------------------------------------------- dataset wrapper
def test_segmentation_dataset(tmp_path):
    root = _make_split_folders(tmp_path / "ref")
    ds = SegmentationDataset(read_split_folders(root))
    assert len(ds) == 6
    img, mask = ds[-1]
    assert img.shape == (20, 30, 3) and mask.shape == (20, 30)
    with pytest.raises(IndexError):
        ds[6]
    assert len(list(ds)) == 6
    assert "C01" in ds.cases
    dc = SegmentationDataset(ds.samples, crop=(0, 0, 10, 5))
    assert dc[0][0].shape == (5, 10, 3)


# ----------------------------------------------------------------- real data
def test_real_manifest():
    if not REAL_MANIFEST.is_file():
        pytest.skip(f"{REAL_MANIFEST} not present")
    samples = read_dataset(REAL_MANIFEST)
    assert len(samples) == 1008
    assert all(s.mask is not None for s in samples)
    for s in samples[:: len(samples) // 5][:5]:
        img, mask = load_pair(s)
        assert img.ndim == 3 and img.shape[2] == 3 and img.dtype == np.uint8
        assert mask.shape == img.shape[:2] and mask.max() == 1
    sp = split_by_case(samples, seed=0)
    cs = _case_sets(sp)
    assert all(len(v) > 0 for v in sp.values())
    assert cs["train"].isdisjoint(cs["val"]) and cs["train"].isdisjoint(cs["test"]) and cs["val"].isdisjoint(cs["test"])
    assert sum(len(v) for v in sp.values()) == 1008
    assert len(set().union(*cs.values())) == len({s.case for s in samples})
