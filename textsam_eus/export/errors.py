"""The error of the export layer: one home, imported by every exporter (ONNX, int8, the batched encoder, TensorRT)
so that none of them imports another only for its error."""

from __future__ import annotations

from ..core.errors import UserError

__all__ = ["ExportError"]


class ExportError(UserError, RuntimeError):
    """An exported graph disagrees with the torch model, or the export could not be made."""
