"""``--masks coco``: every frame's mask as COCO run-length encoding in one JSON file, ``masks_coco.json``.

Streamed in flat memory: each annotation (``pycocotools.mask.encode``, compressed RLE) is written to
``masks_coco.json.part`` as its frame comes; the image entries go to a small side file. At close the annotation
array is closed, the image entries, categories and ``info`` (frames, ``complete``, ``stop_reason``) are appended and
the file is renamed into place. After a SIGKILL only the ``.part`` files remain (``summary.json`` says
``complete: false``); a run that stopped early for any other reason is finalised with ``info.complete: false``.

One image and one annotation per frame, also for empty masks (``area`` 0), so frames map one to one:
``image.id`` = ``annotation.image_id`` = frame index; ``frame_index``, ``pts``, ``file_name`` (the input file for
image folders, else ``<source>#<frame>``). Annotations carry ``score`` (the presence score when there is one,
else the predicted IoU), ``presence``, ``iou_pred`` and ``decision``. Read it with ``pycocotools.coco.COCO``
(``annToMask``) or ``pycocotools.mask.decode``.

This module must stay free of torch and of the model / engine packages.
"""

from __future__ import annotations

import datetime
import json
import os
from pathlib import Path
from typing import Any, Callable

import numpy as np

from .encoders import SinkError
from ..manifest import claim
from ..record import FrameRecord
from .report import json_safe
from .base import Sink

__all__ = ["CocoMaskSink", "CATEGORY"]

CATEGORY = {"id": 1, "name": "pancreatic tumour", "supercategory": "lesion"}


def _num(v) -> float | None:
    try:
        v = float(v)
    except (TypeError, ValueError):
        return None
    return v if np.isfinite(v) else None


class CocoMaskSink(Sink):
    """``masks_coco.json``: COCO RLE per frame, written as the frames come (see the module docstring)."""

    def __init__(self, out: Path, name: str = "masks_coco.json", source: str = "",
                 run_state: Callable[[], tuple[bool, str]] | None = None, model: dict | None = None) -> None:
        from pycocotools import mask as _  # noqa: F401 - fail at the start when it is missing

        self.out, self.rel, self.source = Path(out), name, source
        self.run_state, self.model = run_state, dict(model or {})
        self.final = self.out / name
        self.part = self.out / (name + ".part")
        self.images_part = self.out / (Path(name).stem + ".images.part")
        claim(self.final)
        claim(self.images_part)
        try:
            self._f = open(self.part, "w", encoding="utf-8")
            self._images = open(self.images_part, "w+", encoding="utf-8")
        except OSError as exc:
            raise SinkError(f"cannot create {self.part}: {exc.strerror or exc}; check --out") from None
        self._f.write('{"categories": ' + json.dumps([CATEGORY]) + ',\n"annotations": [')
        self.frames = 0
        self._closed = False

    def write(self, record: FrameRecord) -> None:
        from pycocotools import mask as mask_utils

        mask = np.asfortranarray(record.mask > 0, dtype=np.uint8)
        rle = mask_utils.encode(mask)
        area = int(mask_utils.area(rle))
        bbox = [float(v) for v in mask_utils.toBbox(rle)]
        rle["counts"] = rle["counts"].decode("ascii")
        presence = _num(record.info.get("presence"))
        iou = _num(getattr(record.result, "iou", None))
        index = int(record.index)
        ann = {"id": index + 1, "image_id": index, "category_id": CATEGORY["id"], "segmentation": rle, "area": area,
               "bbox": bbox, "iscrowd": 0, "score": presence if presence is not None else iou, "presence": presence,
               "iou_pred": iou, "decision": record.info.get("decision"), "frame_index": index}
        image = {"id": index, "file_name": record.file or f"{record.source}#{index}", "width": int(mask.shape[1]),
                 "height": int(mask.shape[0]), "frame_index": index, "pts": _num(record.pts)}
        self._f.write(("," if self.frames else "") + "\n" + json.dumps(json_safe(ann), allow_nan=False))
        self._f.flush()
        self._images.write(json.dumps(json_safe(image), allow_nan=False) + "\n")
        self.frames += 1
        record.info.setdefault("outputs", {}).setdefault("mask", f"{self.rel}#{index}")

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        complete, reason = self.run_state() if self.run_state else (True, "end of input")
        try:
            self._f.write("\n],\n\"images\": [")
            self._images.flush()
            self._images.seek(0)
            for i, line in enumerate(self._images):
                self._f.write(("," if i else "") + "\n" + line.rstrip("\n"))
            info = {"description": "TextSAM-EUS tumour masks, one COCO RLE annotation per frame",
                    "date_created": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
                    "source": self.source, "frames": self.frames, "complete": bool(complete),
                    "stop_reason": reason, "model": self.model}
            self._f.write("\n],\n\"info\": " + json.dumps(json_safe(info), allow_nan=False) + "}\n")
            self._f.close()
            self._images.close()
            os.replace(self.part, self.final)
            self.images_part.unlink(missing_ok=True)
        finally:
            for f in (self._f, self._images):
                if not f.closed:
                    f.close()

    def describe(self) -> dict[str, Any]:
        return {"coco": self.rel, "coco_frames": self.frames}
