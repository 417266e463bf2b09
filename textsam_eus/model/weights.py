"""What the weight loaders share: reading a PyTorch state dict safely and checking it against a model.

Used by :mod:`.pretrained` (the official SAM / BiomedCLIP files) and :mod:`.checkpoint` (our safetensors format).
Every ``torch.load`` uses ``weights_only=True``. Mismatches raise :class:`CheckpointError` listing the first few
missing/unexpected keys or wrong shapes, the file and what was expected.
"""

from __future__ import annotations

from pathlib import Path

import re

import torch

from ..core.errors import UserError

__all__ = ["CheckpointError", "check_state_dict", "torch_load_problem", "torch_load_state_dict"]


class CheckpointError(UserError, ValueError):
    """A weight file does not match the model it is loaded into."""


def _first(items: list[str], n: int = 5) -> str:
    head = ", ".join(items[:n])
    return head + (f", ... ({len(items)} in all)" if len(items) > n else "")


def check_state_dict(expected: dict[str, torch.Tensor], found: dict[str, torch.Tensor], *, file: str | Path,
                     what: str) -> None:
    """Raise CheckpointError unless ``found`` has exactly the keys and shapes of ``expected``."""
    missing = sorted(set(expected) - set(found))
    unexpected = sorted(set(found) - set(expected))
    wrong = sorted(f"{k} {tuple(found[k].shape)} (expected {tuple(expected[k].shape)})"
                   for k in set(expected) & set(found) if tuple(found[k].shape) != tuple(expected[k].shape))
    if missing or unexpected or wrong:
        parts = []
        if missing:
            parts.append(f"missing keys: {_first(missing)}")
        if unexpected:
            parts.append(f"unexpected keys: {_first(unexpected)}")
        if wrong:
            parts.append(f"wrong shapes: {_first(wrong)}")
        raise CheckpointError(f"{file} does not match {what}: " + "; ".join(parts))


def torch_load_problem(exc: BaseException) -> str:
    """A short, one-line reason why ``torch.load(..., weights_only=True)`` failed, without PyTorch's advice to
    retry with ``weights_only=False`` (which would run whatever code the file holds)."""
    text = " ".join(str(exc).split())
    if "weights_only" in text or "Weights only load failed" in text:
        detail = re.search(r"WeightsUnpickler error: (.*?)(?: Check the documentation|$)", text)
        why = detail.group(1).strip()[:100] if detail else ""
        return ("not a PyTorch file of plain tensors and values: truncated, damaged, another kind of file, or "
                "holding Python objects, which are not loaded for safety" + (f"; {why}" if why else ""))
    return f"{type(exc).__name__}: {text[:200]}"


def torch_load_state_dict(path: Path) -> dict[str, torch.Tensor]:
    """The state dict in a ``torch.save`` file (``weights_only=True``; a ``model``/``state_dict`` wrapper is
    unwrapped)."""
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # pickle errors, truncated files, non-torch files
        raise CheckpointError(f"cannot read {path} as a PyTorch weights file ({torch_load_problem(exc)}); "
                              "expected a state dict saved with torch.save") from None
    if isinstance(obj, dict) and not any(isinstance(v, torch.Tensor) for v in obj.values()):
        for key in ("model", "state_dict"):
            if isinstance(obj.get(key), dict):
                obj = obj[key]
                break
    if not isinstance(obj, dict):
        raise CheckpointError(f"{path} holds a {type(obj).__name__}, expected a state dict (dict of tensors)")
    return obj
