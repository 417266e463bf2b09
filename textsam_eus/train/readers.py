"""Dataset readers for TextSAM-EUS training and evaluation.

Everything here is plain numpy / OpenCV / Pillow; torch is not needed.  The
central record is :class:`Sample` (one image, its optional mask, and the
patient/case it belongs to) and the central loader is :func:`load_pair`,
which always returns

* ``image``: ``uint8`` array ``H x W x 3`` in **RGB** order (grayscale
  frames are replicated to three channels; 16-bit and floating-point images,
  e.g. TIFF exports, are converted by the one rule of :mod:`textsam_eus.core.pixels`);
* ``mask``: ``uint8`` array ``H x W`` with values ``0``/``1`` where any
  nonzero mask pixel counts as tumour.  Samples without a mask (healthy
  frames) give an all-zero mask.

Supported on-disk layouts (:func:`read_dataset` picks one automatically):

1. **EUS pancreas database** as distributed by its authors (Jaramillo et al.
   2020): class folders ``CANCER/``, ``HEALTHY PANCREAS/``, ``PANCREATITIS/``,
   each holding ``Original Images/<patient>/V<video>_<frame>.tif`` and a
   sibling mask folder (any folder whose name contains "mask") with the same
   ``<patient>/<stem>`` structure.  See :func:`read_eus_database`.
2. **Split folders** as used by the reference implementation:
   ``<root>/{train,val,test}/{images,masks}``.  See :func:`read_split_folders`.
3. **Manifest CSV** with at least ``image,mask,case`` columns, paths relative
   to the CSV.  See :func:`read_manifest`.

Splits are always made patient-wise (:func:`split_by_case`,
:func:`paper_split`) so that frames of one patient never end up in two
splits.
"""

from __future__ import annotations

import csv
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence, Union

import cv2
import numpy as np

from ..common.screen import EUS_DB_CROP, EUS_DB_SCREEN_SIZE
from ..core.errors import UserError
from ..core.pixels import IMAGE_EXTENSIONS, FrameError, to_rgb_uint8, to_uint8  # noqa: F401 (to_uint8: re-exported)

__all__ = [
    "DatasetError",
    "Sample",
    "EUS_SCREEN_CROP",
    "EUS_SCREEN_SIZE",
    "EUS_CLASS_FOLDERS",
    "IMAGE_EXTENSIONS",
    "SPLITS",
    "crop_eus_screen",
    "to_uint8",
    "read_image",
    "read_mask",
    "load_pair",
    "case_from_filename",
    "read_eus_database",
    "read_split_folders",
    "read_manifest",
    "read_dataset",
    "SegmentationDataset",
]


class DatasetError(UserError, ValueError):
    """A dataset could not be read or split; the message says why and how to fix it."""


#: Crop of the raw EUS screen grab to the ultrasound sector, ``(x, y, w, h)``, and the size ``(width, height)``
#: of those screen grabs: the EUS database's geometry, whose one home is :mod:`textsam_eus.common.screen`.
EUS_SCREEN_CROP: tuple[int, int, int, int] = EUS_DB_CROP
EUS_SCREEN_SIZE: tuple[int, int] = EUS_DB_SCREEN_SIZE

#: Class folders of the EUS database -> short class name stored in ``Sample.source``.
EUS_CLASS_FOLDERS: dict[str, str] = {
    "CANCER": "cancer",
    "HEALTHY PANCREAS": "healthy",
    "PANCREATITIS": "pancreatitis",
}

SPLITS: tuple[str, str, str] = ("train", "val", "test")
_SPLIT_ALIASES = {
    "train": "train",
    "training": "train",
    "val": "val",
    "valid": "val",
    "validation": "val",
    "test": "test",
    "testing": "test",
}

Crop = Union[None, bool, str, tuple]


@dataclass(frozen=True)
class Sample:
    """One image (and optional mask) of one case/patient.

    ``image`` / ``mask``: file paths (``mask`` is ``None`` for frames without
    a lesion annotation, which load as an all-zero mask).
    ``case``: patient id; splits never separate samples of one case.
    ``split``: ``"train"``/``"val"``/``"test"`` when the layout fixes it.
    ``source``: optional origin/class tag (``"cancer"``, ``"healthy"``,
    ``"pancreatitis"`` for the EUS database, the ``source`` column of a
    manifest).  ``crop``: default crop applied by :func:`load_pair` (``"eus"``
    for EUS database frames, an ``(x, y, w, h)`` tuple, or ``None``).
    """

    image: Path
    mask: Path | None
    case: str
    split: str | None = None
    source: str | None = None
    crop: str | tuple | None = None


# --------------------------------------------------------------------------- #
# pixel loading
# --------------------------------------------------------------------------- #
def crop_eus_screen(arr: np.ndarray) -> np.ndarray:
    """Crop a raw 800x600 EUS screen grab to the 711x457 ultrasound region.

    ``arr`` is ``H x W`` or ``H x W x C``.  A 600x800 (HxW) array becomes
    ``arr[56:513, 44:755]``; an array already 457x711 is returned unchanged.
    Any other size raises :class:`DatasetError` (cropping it would silently cut
    the wrong region).
    """
    x, y, w, h = EUS_SCREEN_CROP
    hw = tuple(arr.shape[:2])
    if hw == (EUS_SCREEN_SIZE[1], EUS_SCREEN_SIZE[0]):
        return arr[y : y + h, x : x + w]
    if hw == (h, w):
        return arr
    raise DatasetError(
        f"cannot apply the EUS screen crop to an array of size {hw[1]}x{hw[0]} (WxH): "
        f"expected a raw {EUS_SCREEN_SIZE[0]}x{EUS_SCREEN_SIZE[1]} screen grab or an "
        f"already cropped {w}x{h} frame; load it with crop=False to keep it as is"
    )


def _apply_crop(arr: np.ndarray, crop: Crop, what: str) -> np.ndarray:
    if crop is None or crop is False:
        return arr
    if isinstance(crop, str):
        if crop.lower() in ("eus", "eus_screen"):
            return crop_eus_screen(arr)
        if crop.lower() == "none":
            return arr
        raise ValueError(f"unknown crop {crop!r}: use None, 'eus' or an (x, y, w, h) tuple")
    if len(crop) != 4:
        raise ValueError(f"crop must be (x, y, w, h), got {crop!r}")
    x, y, w, h = (int(v) for v in crop)
    H, W = arr.shape[:2]
    if x < 0 or y < 0 or w <= 0 or h <= 0 or x + w > W or y + h > H:
        raise DatasetError(
            f"crop (x={x}, y={y}, w={w}, h={h}) does not fit inside {what} of size {W}x{H} (WxH)"
        )
    return arr[y : y + h, x : x + w]


def _imread_any(path: Path, what: str) -> np.ndarray:
    """Read pixels as stored (OpenCV first, Pillow as fallback), channels BGR(A)."""
    path = Path(path)
    if not path.is_file():
        raise DatasetError(
            f"cannot read {what} {path}: file does not exist (check the dataset root "
            f"and that relative paths are relative to the manifest/folder)"
        )
    arr = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
    if arr is not None and arr.size > 0:
        return arr
    try:  # Pillow reads some TIFF flavours OpenCV rejects
        from PIL import Image

        with Image.open(path) as im:
            pil = np.array(im)
        if pil.ndim == 3 and pil.shape[2] in (3, 4):
            pil = pil[..., [2, 1, 0] + ([3] if pil.shape[2] == 4 else [])]  # RGB(A) -> BGR(A)
        if pil.size > 0:
            return pil
    except Exception:  # noqa: BLE001 - any failure is reported below
        pass
    size = path.stat().st_size
    raise DatasetError(
        f"cannot read {what} {path} ({size} bytes): not a readable image "
        f"(empty, truncated/corrupt, a Git LFS pointer, or an unsupported format; "
        f"supported: {', '.join(IMAGE_EXTENSIONS)})"
    )


def read_image(path: str | Path) -> np.ndarray:
    """Read an image file as ``uint8`` ``H x W x 3`` RGB (the pixel rule of :mod:`textsam_eus.core.pixels`)."""
    arr = _imread_any(Path(path), "image")
    try:
        return to_rgb_uint8(arr, "bgr")
    except FrameError as exc:
        raise DatasetError(f"cannot read image {path}: {exc}") from None


def read_mask(path: str | Path) -> np.ndarray:
    """Read a mask file as ``uint8`` ``H x W`` with 0/1; any nonzero pixel is tumour.

    For colour masks a pixel is foreground when any colour channel is nonzero
    (an alpha channel is ignored).
    """
    arr = _imread_any(Path(path), "mask")
    if arr.ndim == 3:
        if arr.shape[2] in (2, 4):  # drop alpha
            arr = arr[..., :-1]
        fg = np.any(arr != 0, axis=2)
    else:
        fg = arr != 0
    return fg.astype(np.uint8)


def load_pair(sample: Sample, crop: Crop = None) -> tuple[np.ndarray, np.ndarray]:
    """Load ``(image, mask)`` of a sample.

    ``image``: ``uint8`` ``H x W x 3`` RGB; ``mask``: ``uint8`` ``H x W`` 0/1
    (all zero when ``sample.mask`` is ``None``).  ``crop``: ``None`` uses the
    sample's own ``crop`` (EUS database frames crop the 800x600 screen to
    711x457); ``False``/``"none"`` disables cropping; ``"eus"`` applies
    :func:`crop_eus_screen`; an ``(x, y, w, h)`` tuple crops that box.  The
    crop is applied to image and mask alike, after checking that their sizes
    match.
    """
    image = read_image(sample.image)
    if sample.mask is None:
        mask = np.zeros(image.shape[:2], np.uint8)
    else:
        mask = read_mask(sample.mask)
        if mask.shape[:2] != image.shape[:2]:
            raise DatasetError(
                f"image/mask size mismatch: image {sample.image} is "
                f"{image.shape[1]}x{image.shape[0]} (WxH) but mask {sample.mask} is "
                f"{mask.shape[1]}x{mask.shape[0]}; masks must be pixel-aligned with "
                f"their image (same crop and resolution)"
            )
    if crop is None:
        crop = sample.crop
    image = _apply_crop(image, crop, f"image {sample.image}")
    mask = _apply_crop(mask, crop, f"mask {sample.mask}")
    return np.ascontiguousarray(image), np.ascontiguousarray(mask)


# --------------------------------------------------------------------------- #
# readers
# --------------------------------------------------------------------------- #
def _is_image_file(p: Path) -> bool:
    return p.is_file() and p.suffix.lower() in IMAGE_EXTENSIONS and not p.name.startswith(".")


def _child_dir(parent: Path, name: str) -> Path | None:
    """Subfolder of ``parent`` called ``name`` (case-insensitive), or None."""
    exact = parent / name
    if exact.is_dir():
        return exact
    for c in sorted(parent.iterdir()):
        if c.is_dir() and c.name.lower() == name.lower():
            return c
    return None


def read_eus_database(root: str | Path) -> list[Sample]:
    """Read the EUS pancreas database in its distributed folder layout.

    Expected structure (folder names matched case-insensitively)::

        root/CANCER/Original Images/<patient>/V<video>_<frame>.tif
        root/CANCER/<...mask...>/<patient>/V<video>_<frame>.tif|.png
        root/HEALTHY PANCREAS/Original Images/<patient>/...
        root/PANCREATITIS/Original Images/<patient>/...

    The image folder is ``Original Images`` (or any sibling whose name
    contains "original" or "image" but not "mask"); masks are looked up in
    every sibling folder whose name contains "mask", at the same
    ``<patient>/<stem>`` with any image extension.  Frames without a mask get
    ``mask=None`` (an all-zero mask when loaded).

    ``case``: the patient folder name for cancer patients (e.g. ``"C01"``);
    healthy and pancreatitis patients are always prefixed with their class
    (``"healthy-<id>"``, ``"pancreatitis-<id>"``) so ids stay unique across
    classes.  ``source`` is ``"cancer"``/``"healthy"``/``"pancreatitis"`` and
    ``crop`` is ``"eus"``: raw 800x600 screens are cropped to 711x457 by
    :func:`load_pair`, already cropped frames are left alone.
    """
    root = Path(root)
    if not root.is_dir():
        raise DatasetError(f"EUS database root {root} is not a folder")
    samples: list[Sample] = []
    found_class = False
    for folder_name, cls in EUS_CLASS_FOLDERS.items():
        cdir = _child_dir(root, folder_name)
        if cdir is None:
            continue
        found_class = True
        subdirs = [d for d in sorted(cdir.iterdir()) if d.is_dir()]
        mask_dirs = [d for d in subdirs if "mask" in d.name.lower()]
        img_dirs = [d for d in subdirs if "original" in d.name.lower() and d not in mask_dirs]
        if not img_dirs:
            img_dirs = [d for d in subdirs if "image" in d.name.lower() and d not in mask_dirs]
        if not img_dirs:
            raise DatasetError(
                f"{cdir}: no 'Original Images' folder found (subfolders: "
                f"{[d.name for d in subdirs]}); expected "
                f"'{folder_name}/Original Images/<patient>/V<video>_<frame>.tif'"
            )
        # index masks by (relative parent, stem), lower-cased
        mask_index: dict[tuple[str, str], Path] = {}
        for mdir in mask_dirs:
            for mp in sorted(mdir.rglob("*")):
                if _is_image_file(mp):
                    rel = mp.relative_to(mdir)
                    key = (rel.parent.as_posix().lower(), mp.stem.lower())
                    mask_index.setdefault(key, mp)
        for idir in img_dirs:
            for ip in sorted(idir.rglob("*")):
                if not _is_image_file(ip):
                    continue
                rel = ip.relative_to(idir)
                patient = rel.parts[0] if len(rel.parts) > 1 else case_from_filename(ip.name)
                case = patient if cls == "cancer" else f"{cls}-{patient}"
                mask = mask_index.get((rel.parent.as_posix().lower(), ip.stem.lower()))
                samples.append(Sample(image=ip, mask=mask, case=case, source=cls, crop="eus"))
    if not found_class:
        raise DatasetError(
            f"{root} is not an EUS database folder: none of the class folders "
            f"{list(EUS_CLASS_FOLDERS)} exists"
        )
    if not samples:
        raise DatasetError(f"no images found under the class folders of {root}")
    return samples


def case_from_filename(name: str | Path) -> str:
    """Case id derived from a file name: the stem up to the first ``_``.

    ``"C01_V1_12.png" -> "C01"``; a stem without ``_`` is its own case
    (``"img0042.png" -> "img0042"``, i.e. every such image is treated as a
    separate case).
    """
    stem = Path(name).stem
    head = stem.split("_", 1)[0]
    return head if head else stem


def _match_by_stem(folder: Path) -> dict[str, Path]:
    out: dict[str, Path] = {}
    if folder is None or not folder.is_dir():
        return out
    for p in sorted(folder.iterdir()):
        if _is_image_file(p):
            out.setdefault(p.stem, p)
    return out


def read_split_folders(root: str | Path) -> list[Sample]:
    """Read ``<root>/{train,val,test}/{images,masks}`` (reference implementation layout).

    Image and mask share the file stem (extensions may differ).  ``split`` is
    the folder (``valid``/``validation`` read as ``val``); ``case`` follows
    :func:`case_from_filename` (patient id prefix before the first ``_``, or
    the whole stem when there is none).  A missing split folder is skipped;
    an image without a mask raises :class:`DatasetError`.
    """
    root = Path(root)
    if not root.is_dir():
        raise DatasetError(f"split-folder root {root} is not a folder")
    samples: list[Sample] = []
    seen = False
    for sdir in sorted(root.iterdir()):
        split = _SPLIT_ALIASES.get(sdir.name.lower())
        if not sdir.is_dir() or split is None:
            continue
        idir = _child_dir(sdir, "images")
        mdir = _child_dir(sdir, "masks")
        if idir is None:
            raise DatasetError(f"{sdir}: missing 'images' folder (expected {sdir}/images and {sdir}/masks)")
        seen = True
        masks = _match_by_stem(mdir) if mdir is not None else {}
        for stem, ip in _match_by_stem(idir).items():
            mp = masks.get(stem)
            if mp is None:
                raise DatasetError(
                    f"no mask for image {ip}: expected {(mdir or sdir / 'masks') / stem}.<ext> "
                    f"with one of {', '.join(IMAGE_EXTENSIONS)}"
                )
            samples.append(Sample(image=ip, mask=mp, case=case_from_filename(ip.name), split=split))
    if not seen:
        raise DatasetError(f"{root}: none of the folders train/, val/, test/ found")
    return samples


_MANIFEST_REQUIRED = ("image", "case")  # no mask column: every image is lesion-free (a negatives manifest)


def read_manifest(csv_path: str | Path) -> list[Sample]:
    """Read a manifest CSV with at least the columns ``image,case`` (and usually ``mask``).

    Paths are relative to the CSV's folder (absolute paths are kept).  An
    empty ``mask`` cell, or no ``mask`` column at all (e.g. a manifest of
    lesion-free images), means "no lesion" (``mask=None``).  An optional
    ``split`` column (``train``/``val``/``test``, empty for none) is honoured,
    an optional ``source`` column is stored in ``Sample.source``; other
    columns are ignored.  Missing files raise :class:`DatasetError`.
    """
    csv_path = Path(csv_path)
    if not csv_path.is_file():
        raise DatasetError(f"manifest {csv_path} does not exist")
    base = csv_path.parent
    with open(csv_path, newline="", encoding="utf-8-sig") as fh:
        reader = csv.DictReader(fh)
        fields = [f.strip() for f in (reader.fieldnames or [])]
        missing = [c for c in _MANIFEST_REQUIRED if c not in fields]
        if missing:
            raise DatasetError(
                f"manifest {csv_path} is missing required column(s) {', '.join(missing)} "
                f"(found: {', '.join(fields) or 'none'}; required: {', '.join(_MANIFEST_REQUIRED)})"
            )
        rows = [{(k or "").strip(): (v or "").strip() for k, v in r.items()} for r in reader]
    samples: list[Sample] = []
    for lineno, r in enumerate(rows, start=2):
        if not r.get("image"):
            raise DatasetError(f"manifest {csv_path} line {lineno}: empty 'image' cell")
        if not r.get("case"):
            raise DatasetError(f"manifest {csv_path} line {lineno}: empty 'case' cell")
        ip = base / r["image"]
        if not ip.is_file():
            raise DatasetError(
                f"manifest {csv_path} line {lineno}: image file {ip} does not exist "
                f"(paths are relative to the manifest's folder {base})"
            )
        mp = None
        if r.get("mask"):
            mp = base / r["mask"]
            if not mp.is_file():
                raise DatasetError(
                    f"manifest {csv_path} line {lineno}: mask file {mp} named for image "
                    f"{ip} does not exist (paths are relative to the manifest's folder {base}; "
                    f"leave the cell empty for frames without a lesion)"
                )
        split = None
        if r.get("split"):
            split = _SPLIT_ALIASES.get(r["split"].lower())
            if split is None:
                raise DatasetError(
                    f"manifest {csv_path} line {lineno}: unknown split {r['split']!r} "
                    f"(use train, val, test or leave empty)"
                )
        samples.append(
            Sample(image=ip, mask=mp, case=r["case"], split=split, source=r.get("source") or None)
        )
    if not samples:
        raise DatasetError(f"manifest {csv_path} has no rows")
    return samples


def read_dataset(path: str | Path) -> list[Sample]:
    """Read any supported layout: a ``.csv`` manifest, split folders, or the EUS database."""
    p = Path(path)
    if p.is_file() and p.suffix.lower() == ".csv":
        return read_manifest(p)
    if p.is_dir():
        names = {c.name.lower() for c in p.iterdir() if c.is_dir()}
        if names & set(_SPLIT_ALIASES):
            return read_split_folders(p)
        if names & {k.lower() for k in EUS_CLASS_FOLDERS}:
            return read_eus_database(p)
    raise DatasetError(
        f"unsupported dataset {p} ({'missing' if not p.exists() else 'unrecognised layout'}). Supported:\n"
        f"  * a manifest .csv with columns image,mask,case[,split] (paths relative to the CSV);\n"
        f"  * a folder with train/ val/ test/ subfolders, each holding images/ and masks/;\n"
        f"  * the EUS database folder with CANCER/, HEALTHY PANCREAS/, PANCREATITIS/ "
        f"(each with 'Original Images/<patient>/' and a mask folder)."
    )


# --------------------------------------------------------------------------- #
# dataset
# --------------------------------------------------------------------------- #
class SegmentationDataset:
    """A torch-free sequence of ``(image, mask)`` numpy pairs.

    ``dataset[i]`` returns :func:`load_pair` of ``samples[i]`` (``uint8``
    ``H x W x 3`` RGB image, ``uint8`` ``H x W`` 0/1 mask).  ``crop`` is
    passed to :func:`load_pair` (``None``: each sample's own crop).  Works
    directly as a ``torch.utils.data.Dataset`` (it has ``__len__`` and
    ``__getitem__``).
    """

    def __init__(self, samples: Sequence[Sample], crop: Crop = None):
        self.samples: list[Sample] = list(samples)
        self.crop = crop

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, index: int) -> tuple[np.ndarray, np.ndarray]:
        if isinstance(index, slice):
            raise TypeError("SegmentationDataset does not support slicing; index one sample at a time")
        n = len(self.samples)
        i = int(index)
        if i < 0:
            i += n
        if not 0 <= i < n:
            raise IndexError(f"index {index} out of range for {n} samples")
        return load_pair(self.samples[i], self.crop)

    def __iter__(self):
        for i in range(len(self)):
            yield self[i]

    @property
    def cases(self) -> list[str]:
        """Distinct case ids in first-seen order."""
        return list(dict.fromkeys(s.case for s in self.samples))

    def __repr__(self) -> str:
        return f"SegmentationDataset({len(self)} samples, {len(self.cases)} cases, crop={self.crop!r})"
