"""The per-frame segmentation core, written once for every backend: encode once, decode, refine.

A backend supplies two functions on torch tensors::

    encode(x: (1, 3, S, S)) -> embeddings                         (run ONCE per frame)
    decode(embeddings, coords: (1, N, 2) | None, labels: (1, N) | None) -> (low-res logits (1, 1, h, w), iou (1, 1))

``decode`` prepends the constant text token itself; ``coords=None`` is the text-only pass. The paper's refinement
then runs ``iterations`` more decoder passes, each adding the previous mask's tight bounding box (corners, labels
2/3) and centroid (label 1), in the model's input frame. An empty mask stops refinement and is returned.

The pre-/post-processing (frame -> model input, the box/centroid of each refinement pass, low-res logits -> the
frame's mask) is a :class:`TorchPrePost` by default (``model/transforms.py``, on the backend's device); a backend
that takes NumPy arrays on the host passes another object with the same methods (``engines/cpu_prepost.py``), and
then ``encode``/``decode`` see that object's array type instead of torch tensors.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any, Callable

import numpy as np
import torch

from ..core.config import MAX_REFINE_ITERATIONS
from ..core.errors import OptionError
from . import transforms as T

REFINE_PROMPTS = ("none", "box", "point", "box+centroid", "box+5points")


@dataclass
class SegmentResult:
    """mask (H, W) bool at the frame's resolution; iou: the decoder's predicted IoU of the final pass."""

    mask: np.ndarray
    iou: float
    box: np.ndarray | None  # (x0, y0, x1, y1) in frame pixels of the final mask, None when empty
    centroid: np.ndarray | None  # (x, y) in frame pixels
    passes: int  # decoder passes run (1 = text only)
    timings: dict[str, float] = field(default_factory=dict)  # milliseconds per stage
    prompts: list = field(default_factory=list)  # (coords, labels) per pass, input-frame pixels; None = text only
    presence: float | None = None  # the text-only pass's predicted IoU: the tumour presence score


@dataclass
class Refined:
    """What the decoder passes of one frame leave for the post-processing (see :meth:`Segmenter.decode_and_refine`).

    lowres: the final pass's low-res mask logits (1, 1, h, w); iou: its predicted IoU; presence: the text-only
    pass's predicted IoU; passes: decoder passes run; prompts: (coords, labels) per pass (None = text only; empty
    when a model server ran them); logits: the final pass's logits over the resized frame in input pixels when
    the refinement loop already made them, else None.
    """

    lowres: Any
    iou: float
    presence: float
    passes: int
    prompts: list = field(default_factory=list)
    logits: Any = None


def geometric_prompts(box: torch.Tensor, centroid: torch.Tensor, mode: str = "box+centroid",
                      mask: torch.Tensor | None = None, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor] | None:
    """(coords (1, N, 2), labels (1, N)) for a refinement pass, or None for mode 'none'."""
    if mode not in REFINE_PROMPTS:
        raise OptionError(f"refine_prompts={mode!r} is invalid: choose one of {REFINE_PROMPTS}")
    corners = box.view(2, 2)
    pts, labs = [], []
    if mode == "none":
        return None
    if mode in ("point", "box+centroid"):
        pts.append(centroid.view(1, 2))
        labs += [1]
    if mode == "box+5points":
        ys, xs = torch.nonzero(mask, as_tuple=True)
        gen = torch.Generator().manual_seed(seed)
        idx = torch.randint(0, ys.numel(), (5,), generator=gen).to(ys.device)
        pts.append(torch.stack([xs[idx], ys[idx]], dim=1).float())
        labs += [1] * 5
    if mode in ("box", "box+centroid", "box+5points"):
        pts.append(corners)
        labs += [2, 3]
    coords = torch.cat(pts).unsqueeze(0).float()
    labels = torch.tensor([labs], dtype=torch.float32, device=coords.device)
    return coords, labels


class TorchPrePost:
    """The pre-/post-processing of :class:`Segmenter` in torch (``model/transforms.py``), on ``device``."""

    name = "torch"

    def __init__(self, image_size: int, pixel_mean, pixel_std, device: torch.device | str = "cpu",
                 dtype: torch.dtype = torch.float32) -> None:
        self.image_size = image_size
        self.pixel_mean, self.pixel_std = tuple(pixel_mean), tuple(pixel_std)
        self.device, self.dtype = torch.device(device), dtype
        self.resize = "area"  # or "bilinear" (TextSamConfig.resize)

    def preprocess(self, rgb: np.ndarray) -> tuple[torch.Tensor, tuple[int, int]]:
        """(H, W, 3) uint8 RGB -> model input (1, 3, S, S) and the resized (h, w) inside it."""
        return T.preprocess(rgb, self.image_size, self.pixel_mean, self.pixel_std, self.device, self.dtype,
                            resize=self.resize)

    def lowres_to_input(self, lowres, resized: tuple[int, int]) -> torch.Tensor:
        return T.lowres_to_input(lowres, self.image_size, resized)

    def refine_prompt(self, logits: torch.Tensor, threshold: float, mode: str, seed: int):
        """(coords, labels) of a refinement pass from the mask ``logits > threshold``; None when it is empty."""
        mask_in = logits > threshold
        bc = T.box_and_centroid(mask_in)
        if bc is None:  # empty mask: nothing to refine from
            return None
        return geometric_prompts(bc[0], bc[1], mode, mask_in, seed=seed)

    def frame_mask(self, logits: torch.Tensor, frame_hw: tuple[int, int], threshold: float) -> np.ndarray:
        """Logits over the resized frame -> the (H, W) bool mask at the frame's resolution."""
        return (T.input_to_frame(logits, frame_hw) > threshold).cpu().numpy()

    def box_and_centroid(self, mask: np.ndarray) -> tuple[np.ndarray, np.ndarray] | None:
        bc = T.box_and_centroid(torch.from_numpy(mask))
        return None if bc is None else (bc[0].numpy(), bc[1].numpy())

    def prompts(self, coords: np.ndarray, labels: np.ndarray):
        """Manual/seed prompts (1, N, 2) / (1, N) float32 -> what ``decode`` takes."""
        return torch.from_numpy(coords).to(self.device), torch.from_numpy(labels).to(self.device)

    @staticmethod
    def to_numpy(x) -> np.ndarray:
        return x.cpu().numpy()


class Segmenter:
    """Pre-process, encode once, decode text-only, refine, post-process; the same for torch/ORT/TensorRT."""

    def __init__(self, encode: Callable, decode: Callable, *, image_size: int, pixel_mean, pixel_std,
                 device: torch.device | str = "cpu", dtype: torch.dtype = torch.float32, iterations: int = 2,
                 refine_prompts: str = "box+centroid", threshold: float = 0.0,
                 sync: Callable[[], None] | None = None, resize: str | None = None, prepost=None,
                 infer: Callable | None = None) -> None:
        if refine_prompts not in REFINE_PROMPTS:
            raise OptionError(f"refine_prompts={refine_prompts!r} is invalid: choose one of {REFINE_PROMPTS}")
        if not 0 <= iterations <= MAX_REFINE_ITERATIONS:
            raise OptionError(f"iterations={iterations} is invalid: must be in [0, {MAX_REFINE_ITERATIONS}]")
        self.encode, self.decode = encode, decode
        self.image_size = image_size
        self.pixel_mean, self.pixel_std = tuple(pixel_mean), tuple(pixel_std)
        self.device, self.dtype = torch.device(device), dtype
        self.iterations = iterations
        self.refine_prompts = refine_prompts
        self.threshold = threshold
        self.sync = sync or (lambda: None)
        self.prepost = prepost or TorchPrePost(image_size, pixel_mean, pixel_std, device, dtype)
        # (x, resized, first, iterations, timings) -> Refined: encode + decode here, or a model server's call
        self.infer = infer or self.infer_input
        if resize is not None:  # how frames are resized into the input (TextSamConfig.resize): kept by prepost
            self.resize = resize

    @property
    def resize(self) -> str:
        """How frames are resized into the model input ("area" or "bilinear"); the pre-processing keeps it."""
        return self.prepost.resize

    @resize.setter
    def resize(self, value: str) -> None:
        self.prepost.resize = value

    def _tick(self, timings: dict[str, float], key: str, start: float) -> float:
        self.sync()
        now = time.perf_counter()
        timings[key] = (now - start) * 1e3
        return now

    @torch.inference_mode()
    def segment(self, frame: np.ndarray, *, color_order: str = "rgb", iterations: int | None = None,
                points: np.ndarray | None = None, point_labels: np.ndarray | None = None,
                box: np.ndarray | None = None, seed_prompt: tuple[np.ndarray, np.ndarray] | None = None,
                encode: Callable | None = None) -> SegmentResult:
        """Segment one frame.

        ``points`` (N, 2) with ``point_labels`` (N,) and/or ``box`` (x0, y0, x1, y1), in frame pixels, are manual
        prompts added to the first pass (the paper's manual mode). ``seed_prompt = (box, centroid)`` in frame
        pixels (e.g. the previous video frame's) is added to the first pass the same way. ``encode`` replaces the
        backend's encoder for this call (e.g. one that returns cached embeddings).

        Between the pre- and the post-processing runs ``self.infer`` (:meth:`infer_input` here; a remote backend
        passes its own, which runs the same passes on a model server).
        """
        iterations = self.iterations if iterations is None else iterations
        timings: dict[str, float] = {}
        t0 = t = time.perf_counter()
        rgb = T.to_rgb(frame, color_order)
        hw = rgb.shape[:2]
        pp = self.prepost
        x, resized = pp.preprocess(rgb)
        first = self._first_prompts(hw, resized, points, point_labels, box, seed_prompt)
        self._tick(timings, "preprocess", t)
        if encode is not None:
            out = self.infer_input(x, resized, first, iterations, timings, encode=encode)
        else:
            out = self.infer(x, resized, first, iterations, timings)
        t = time.perf_counter()
        logits = out.logits if out.logits is not None else pp.lowres_to_input(out.lowres, resized)
        mask = pp.frame_mask(logits, hw, self.threshold)
        t = self._tick(timings, "postprocess", t)
        timings["total"] = (t - t0) * 1e3
        bc = pp.box_and_centroid(mask)
        return SegmentResult(
            mask=mask,
            iou=out.iou,
            box=None if bc is None else bc[0],
            centroid=None if bc is None else bc[1],
            passes=out.passes,
            timings=timings,
            prompts=[None if p is None else (pp.to_numpy(p[0]), pp.to_numpy(p[1])) for p in out.prompts],
            presence=out.presence,
        )

    def infer_input(self, x, resized: tuple[int, int], first, iterations: int, timings: dict[str, float],
                    encode: Callable | None = None) -> "Refined":
        """Encode the model input ``x`` (1, 3, S, S) once, then :meth:`decode_and_refine`."""
        t = time.perf_counter()
        emb = (encode or self.encode)(x)
        self._tick(timings, "encode", t)
        return self.decode_and_refine(emb, resized, first, iterations, timings)

    def decode_and_refine(self, emb, resized: tuple[int, int], first, iterations: int,
                          timings: dict[str, float]) -> "Refined":
        """The decoder passes of one frame from its image embeddings ``emb`` (1, C, g, g).

        ``first``: the first pass's (coords (1, N, 2), labels (1, N)) in input pixels, or None (text only); then
        up to ``iterations`` refinement passes, each from the previous mask (over the ``resized`` (h, w) part of
        the input). The model server runs this per frame after encoding a whole batch.
        """
        pp = self.prepost
        t = time.perf_counter()
        prompts = [first]
        lowres, iou = self.decode(emb, *(first if first is not None else (None, None)))
        t = self._tick(timings, "decode_0", t)
        if first is None:
            presence = float(iou.reshape(-1)[0])
        else:  # a prompted first pass (seeded, manual): the presence score comes from a text-only pass
            presence = float(self.decode(emb, None, None)[1].reshape(-1)[0])
            t = self._tick(timings, "decode_presence", t)
        logits = None
        for k in range(1, iterations + 1):
            logits = pp.lowres_to_input(lowres, resized)
            gp = pp.refine_prompt(logits, self.threshold, self.refine_prompts, k)
            if gp is None:  # empty mask (nothing to refine from) or refine_prompts 'none'
                break
            prompts.append(gp)
            lowres, iou = self.decode(emb, *gp)
            logits = None  # of the pass before
            t = self._tick(timings, f"decode_{k}", t)
        return Refined(lowres=lowres, iou=float(iou.reshape(-1)[0]), presence=presence, passes=len(prompts),
                       prompts=prompts, logits=logits)

    def _first_prompts(self, hw, resized, points, point_labels, box, seed_prompt):
        pts, labs = [], []
        if points is not None:
            points = np.asarray(points, dtype=np.float32).reshape(-1, 2)
            point_labels = (np.ones(len(points), np.float32) if point_labels is None
                            else np.asarray(point_labels, np.float32).reshape(-1))
            if len(point_labels) != len(points):
                raise ValueError(f"{len(points)} points but {len(point_labels)} point_labels")
            pts.append(T.frame_to_input_coords(points, hw, resized))
            labs.append(point_labels)
        if seed_prompt is not None:
            sbox, scen = seed_prompt
            pts.append(T.frame_to_input_coords(np.asarray(scen, np.float32).reshape(1, 2), hw, resized))
            labs.append(np.array([1], np.float32))
            box = sbox if box is None else box
        if box is not None:
            pts.append(T.frame_to_input_coords(np.asarray(box, np.float32).reshape(2, 2), hw, resized))
            labs.append(np.array([2, 3], np.float32))
        if not pts:
            return None
        coords = np.ascontiguousarray(np.concatenate(pts)[None], dtype=np.float32)
        labels = np.ascontiguousarray(np.concatenate(labs)[None], dtype=np.float32)
        return self.prepost.prompts(coords, labels)
