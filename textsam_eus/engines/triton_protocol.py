"""What the Triton model server (``textsam-eus serve``) and its client engine (``--engine triton``) agree on.

Two models on one Triton Inference Server:

``textsam_eus`` (dynamic batching; Triton adds the batch axis B in front of every tensor below)::

    inputs   image         FP32  (3, S, S)   the pre-processed frame (normalised, zero-padded: NumpyPrePost)
             resized_hw    INT32 (2,)        (h, w) of the frame inside the S x S input
             first_points  FP32  (8, 3)      first-pass prompts (x, y, label) in input pixels; rows with a NaN
                                             label are unused; all unused = the text-only first pass
             iterations    INT32 (1,)        refinement passes; -1 = the server's default
    outputs  low_res_masks FP32  (1, h, h)   the final pass's low-res mask logits
             iou           FP32  (1,)        its predicted IoU
             presence      FP32  (1,)        the text-only pass's predicted IoU (tumour presence score)
             passes        INT32 (1,)        decoder passes run (-1: the frame was refused, see ``REFUSED``)
             batch_size    INT32 (1,)        frames in the batch this frame's encoder run took
             server_ms     FP32  (4,)        encoder (the batch's run), decode_0, the refinement passes, the whole
                                             batch in the server's inference function

``textsam_eus_info`` (no batching): ``query`` INT32 (1,) in, ``info`` BYTES (1,) out: a JSON object with the
model's identity (``model_id``, ``checkpoint_sha256``) and the values the client's pre-/post-processing needs.

The model version is derived from ``model_id`` (:func:`model_version`), so Triton's metadata and its Prometheus
metrics (``version="..."``) name the bundle that served each request.
"""

from __future__ import annotations

from urllib.parse import urlsplit

from ..core.errors import OptionError

MODEL_NAME = "textsam_eus"
INFO_MODEL = "textsam_eus_info"
FIRST_POINTS = 8  # prompt rows of the first pass (a seed uses 3: centroid + box corners)
INPUTS = ("image", "resized_hw", "first_points", "iterations")
OUTPUTS = ("low_res_masks", "iou", "presence", "passes", "batch_size", "server_ms")
REFUSED = -1  # ``passes`` of a frame whose values the server refused (resized_hw outside the input)


def model_version(model_id: str) -> int:
    """Triton model version for a bundle: the first 7 hex digits of its ``model_id`` + 1 (1..2**28)."""
    return int(model_id[:7], 16) + 1


def parse_server_url(url: str) -> str:
    """``grpc://HOST:PORT`` -> ``HOST:PORT`` (what tritonclient.grpc takes); a one-line error otherwise."""
    text = (url or "").strip()
    parts = urlsplit(text if "://" in text else "grpc://" + text)
    if parts.scheme != "grpc":
        raise OptionError(f"--server {url!r} is invalid: the triton engine speaks gRPC, use grpc://HOST:PORT (the "
                          "server's --grpc-port, 8001 by default)")
    try:
        port = parts.port
    except ValueError:
        port = None
    if not parts.hostname or port is None or parts.path not in ("", "/"):
        raise OptionError(f"--server {url!r} is invalid: use grpc://HOST:PORT, e.g. grpc://127.0.0.1:8001")
    host = f"[{parts.hostname}]" if ":" in parts.hostname else parts.hostname
    return f"{host}:{port}"
