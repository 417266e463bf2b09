"""The client of a Triton model server (``textsam-eus serve``): ``--engine triton --server grpc://HOST:PORT``.

The pre-processing (frame -> normalised, padded input) and the post-processing (low-res logits -> the frame's
mask, its box and centroid) run here in NumPy/OpenCV as on the CPU ONNX Runtime path (:mod:`.cpu_prepost`); the
encoder and every decoder pass run on the server, in one request per frame (one in flight per engine, so frames
stay in order). Tensors: :mod:`.triton_protocol`.

At connect the engine checks that the server is live, that the model is ready, and that it serves the expected
model: ``expect_model_id`` (a bundle's :func:`~textsam_eus.model.bundle.model_id`) or ``expect_checkpoint_sha256``
(the checkpoint file's SHA-256). Every failure is a :class:`ServerError` (a UserError) with one line that names the
server and the fix; a failure in the middle of a run ends that run finalised (``complete: false`` and the reason).

Per-frame timings: ``encode`` (the server's encoder run for the batch this frame was in), ``decode_0`` and
``decode_refine`` (this frame's decoder passes on the server), ``server`` (the server's inference function for
the whole batch), ``network`` (the rest of the round trip: gRPC, Triton's queue and batching delay, PyTriton's
hand-over) and ``request`` (the round trip).
"""

from __future__ import annotations

import json
import math
import threading
import time
from collections import Counter
from types import SimpleNamespace
from typing import Any

import numpy as np

from ..core.config import MAX_REFINE_ITERATIONS
from ..core.errors import OptionError, UserError
from ..core.imports import require_tritonclient
from ..model.refine import Refined
from .base import Engine
from .triton_protocol import FIRST_POINTS, INFO_MODEL, MODEL_NAME, OUTPUTS, REFUSED, model_version, parse_server_url

START_HINT = "start it with 'textsam-eus serve' in the server environment (docs/serving.md), or check --server"


RECONNECT_DELAY_S = 0.5  # between reconnect attempts to a lost server


class ServerError(UserError, RuntimeError):
    """The model server is unreachable, not ready, serves another model, timed out or refused a request."""


def _status(exc: Exception) -> str:
    status = getattr(exc, "status", None)
    return str(status() if callable(status) else status or "")


def _message(exc: Exception) -> str:
    msg = getattr(exc, "message", None)
    text = msg() if callable(msg) else str(exc)
    return " ".join(str(text).split())[:300]


class WrongModelError(ServerError):
    """The server serves another model than this run's: a reconnect never accepts it."""


class TritonEngine(Engine):
    name = "triton"
    host_arrays = True

    def __init__(self, server: str, *, expect_model_id: str | None = None,
                 expect_checkpoint_sha256: str | None = None, expect_what: str = "", timeout_s: float = 10.0,
                 reconnect_s: float = 10.0, iterations: int | None = None,
                 refine_prompts: str | None = None) -> None:
        grpc = require_tritonclient()
        from tritonclient.utils import InferenceServerException

        self._exc = InferenceServerException
        self._grpc = grpc
        if not timeout_s > 0:
            raise OptionError(f"--server-timeout {timeout_s} is invalid: use a number of seconds > 0")
        self.url = server
        self.address = parse_server_url(server)
        if not (math.isfinite(reconnect_s) and reconnect_s >= 0):
            raise OptionError(f"--server-reconnect {reconnect_s} is invalid: use seconds >= 0 (0: stop at once)")
        self.timeout_s = float(timeout_s)
        self.reconnect_s = float(reconnect_s)
        self._expect = (expect_model_id, expect_checkpoint_sha256, expect_what)
        self.client = grpc.InferenceServerClient(self.address)
        self.server_info = self._connect(*self._expect)
        si = self.server_info
        if refine_prompts is not None and refine_prompts != si["refine_prompts"]:
            raise OptionError(f"--refine-prompts {refine_prompts} differs from the server's {si['refine_prompts']}"
                              "; the server decides the refinement prompts (textsam-eus serve --refine-prompts)")
        self.version = str(si["model_version"])
        self.stats: dict[str, Any] = {"requests": 0, "batch_sizes": Counter(), "reconnects": 0,
                                      "lost_s": 0.0}
        self._lock = threading.Lock()
        self._outputs = [grpc.InferRequestedOutput(n) for n in OUTPUTS]
        super().__init__(image_size=si["image_size"], pixel_mean=si["pixel_mean"], pixel_std=si["pixel_std"],
                         prompt_tokens=np.zeros((1, 1), np.float32), device="cpu",
                         iterations=si["refine_iterations"] if iterations is None else iterations,
                         refine_prompts=si["refine_prompts"], threshold=si["mask_threshold"],
                         presence=SimpleNamespace(**{k: si.get(k) for k in (
                             "presence_threshold", "presence_show_frames", "presence_hide_frames")}),
                         resize=si["resize"], prepost="numpy")

    # ------------------------------------------------------------------ connect
    def _call(self, what: str, fn, *args, **kwargs):
        try:
            return fn(*args, **kwargs, client_timeout=self.timeout_s)
        except self._exc as exc:
            status = _status(exc)
            if "UNAVAILABLE" in status or "DEADLINE" in status or "Deadline" in _message(exc):
                raise ServerError(f"no Triton server answers at {self.url} ({what}: {_message(exc)}); "
                                  f"{START_HINT}") from None
            raise ServerError(f"the server at {self.url} refused {what}: {_message(exc)}") from None

    def _connect(self, expect_model_id, expect_sha, expect_what) -> dict:
        if not self._call("liveness", self.client.is_server_live):
            raise ServerError(f"the Triton server at {self.url} is not live; {START_HINT}")
        for name in (INFO_MODEL, MODEL_NAME):
            if not self._call(f"the readiness of model {name}", self.client.is_model_ready, name):
                raise ServerError(f"the server at {self.url} runs, but model {name!r} is not ready (still loading, "
                                  "or it is not a textsam-eus server); wait for 'serving ...' in its output, or "
                                  "check --server")
        grpc = self._grpc
        q = grpc.InferInput("query", [1], "INT32")
        q.set_data_from_numpy(np.zeros(1, np.int32))
        res = self._call("the model info request", self.client.infer, INFO_MODEL, [q])
        raw = res.as_numpy("info")
        try:
            info = json.loads(raw.reshape(-1)[0])
        except (ValueError, AttributeError, IndexError) as exc:
            raise ServerError(f"the server at {self.url} sent model info that is not JSON ({exc}); is it a "
                              "textsam-eus server of this version?") from None
        theirs = f"model id {info.get('model_id')} (bundle {info.get('bundle')}, {info.get('preset')})"
        if expect_model_id is not None and info.get("model_id") != expect_model_id:
            raise WrongModelError(f"the server at {self.url} serves another model: {theirs}, this run expects model "
                              f"id {expect_model_id} ({expect_what}); pass the --bundle/--checkpoint the server "
                              "serves, or point --server at the right server")
        if expect_sha is not None and expect_model_id is None:
            if not info.get("checkpoint_sha256"):
                raise WrongModelError(f"the server at {self.url} serves {theirs}, a bundle that does not record its "
                                  "checkpoint's SHA-256, so --checkpoint cannot be checked against it; pass "
                                  "--bundle DIR (the served bundle) instead")
            if info["checkpoint_sha256"] != expect_sha:
                raise WrongModelError(f"the server at {self.url} serves another model: {theirs}, checkpoint sha256 "
                                  f"{str(info['checkpoint_sha256'])[:12]}..., this run expects {expect_what} "
                                  f"(sha256 {expect_sha[:12]}...); pass the --checkpoint/--bundle the server "
                                  "serves, or point --server at the right server")
        meta = self._call("the model metadata", self.client.get_model_metadata, MODEL_NAME, as_json=True)
        versions = [str(v) for v in meta.get("versions", [])]
        want = str(model_version(info["model_id"]))
        if want not in versions or str(info.get("model_version")) != want:
            raise WrongModelError(f"the server at {self.url} lists versions {versions} of {MODEL_NAME}, not {want} of "
                              f"its model id {info['model_id']}; restart the server")
        return info

    # ------------------------------------------------------------------ one frame
    def remote_infer(self, x: np.ndarray, resized: tuple[int, int], first, iterations: int,
                     timings: dict[str, float]) -> Refined:
        """x (1, 3, S, S) float32 -> the server's final pass; see :mod:`.triton_protocol`."""
        grpc = self._grpc
        rows = np.full((1, FIRST_POINTS, 3), np.nan, np.float32)
        if first is not None:
            coords, labels = (np.asarray(a, np.float32) for a in first)
            n = coords.shape[1]
            if n > FIRST_POINTS:
                raise OptionError(f"{n} first-pass prompts: the triton engine takes at most {FIRST_POINTS}")
            rows[0, :n, :2], rows[0, :n, 2] = coords[0], labels[0]
        feeds = [("image", np.ascontiguousarray(x, np.float32), "FP32"),
                 ("resized_hw", np.array([resized], np.int32), "INT32"),
                 ("first_points", rows, "FP32"),
                 ("iterations", np.array([[iterations]], np.int32), "INT32")]
        inputs = []
        for name, arr, dtype in feeds:
            inp = grpc.InferInput(name, list(arr.shape), dtype)
            inp.set_data_from_numpy(arr)
            inputs.append(inp)
        with self._lock:  # one request in flight: frames stay in order
            res, request_ms = self._infer(inputs)
        passes = int(res.as_numpy("passes").reshape(-1)[0])
        if passes == REFUSED:
            raise ServerError(f"the server at {self.url} refused a frame: resized_hw {resized} or {iterations} "
                              f"refinement passes are outside its bounds ({self.image_size}x{self.image_size} input, "
                              f"at most {MAX_REFINE_ITERATIONS} passes)")
        server_ms = res.as_numpy("server_ms").reshape(-1)
        batch = int(res.as_numpy("batch_size").reshape(-1)[0])
        timings.update(encode=float(server_ms[0]), decode_0=float(server_ms[1]), decode_refine=float(server_ms[2]),
                       server=float(server_ms[3]), network=max(0.0, request_ms - float(server_ms[3])),
                       request=request_ms)
        self.stats["requests"] += 1
        self.stats["batch_sizes"][batch] += 1
        low = res.as_numpy("low_res_masks")
        return Refined(lowres=low.reshape(1, 1, *low.shape[-2:]), iou=float(res.as_numpy("iou").reshape(-1)[0]),
                       presence=float(res.as_numpy("presence").reshape(-1)[0]), passes=passes)

    def _infer(self, inputs) -> tuple[Any, float]:
        """(the server's answer, the answering request's round trip in ms). A lost server (see :meth:`_lost`) is
        reconnected to for up to ``reconnect_s`` seconds, as a capture device is reopened; it must serve the same
        model (checked as at connect), and the frame is sent again. Meanwhile a live source drops frames."""
        deadline = None
        while True:
            t = time.perf_counter()
            try:
                res = self.client.infer(MODEL_NAME, inputs, model_version=self.version, outputs=self._outputs,
                                        client_timeout=self.timeout_s)
                return res, (time.perf_counter() - t) * 1e3
            except self._exc as exc:
                if self.reconnect_s <= 0 or not self._lost(exc):
                    raise self._run_error(exc) from None
                lost = time.monotonic()
                deadline = deadline or lost + self.reconnect_s
                try:
                    back = self._reconnect(deadline)
                finally:
                    self.stats["lost_s"] += time.monotonic() - lost
                if not back:
                    raise self._run_error(exc, gave_up=True) from None

    def _lost(self, exc) -> bool:
        """Whether a failed request means the server is gone: UNAVAILABLE, or a deadline (a killed server can leave
        its connection open) after which the server does not answer a liveness check either."""
        status = _status(exc)
        if "UNAVAILABLE" in status:
            return True
        if "DEADLINE" not in status and "Deadline" not in _message(exc):
            return False
        try:
            return not self.client.is_server_live(client_timeout=min(2.0, self.timeout_s))
        except self._exc:
            return True

    def _reconnect(self, deadline: float) -> bool:
        """Reopen the connection until ``deadline`` (monotonic); True once the same model answers again. A server
        that now serves another model stops the run at once (its ServerError)."""
        while time.monotonic() < deadline:
            time.sleep(min(RECONNECT_DELAY_S, max(0.0, deadline - time.monotonic())))
            old, self.client = self.client, self._grpc.InferenceServerClient(self.address)
            try:
                old.close()
            except Exception:  # noqa: BLE001 - closing a dead channel
                pass
            try:
                self.server_info = self._connect(*self._expect)
            except WrongModelError:
                raise
            except ServerError:
                continue
            self.version = str(self.server_info["model_version"])
            self.stats["reconnects"] += 1
            return True
        return False

    def _run_error(self, exc: Exception, gave_up: bool = False) -> ServerError:
        status, msg = _status(exc), _message(exc)
        if ("DEADLINE" in status or "Deadline" in msg) and not gave_up:
            return ServerError(f"the model server at {self.url} did not answer within {self.timeout_s:g} s "
                               f"(--server-timeout); the run stopped here: check the server (its load, its log) "
                               "and run again")
        if "UNAVAILABLE" in status or gave_up:
            waited = (f" and it did not come back within {self.reconnect_s:g} s (--server-reconnect)" if gave_up
                      else "")
            return ServerError(f"lost the model server at {self.url} ({msg}){waited}; the run stopped here: "
                               "restart the server and run again")
        return ServerError(f"the model server at {self.url} failed a request: {msg}")

    # ------------------------------------------------------------------ Engine hooks
    def encode(self, x):
        raise OptionError("the triton engine encodes on the server: segment() frames, no local encode")

    def decode(self, emb, tokens, coords, labels):
        raise OptionError("the triton engine decodes on the server: segment() frames, no local decode")

    def info(self) -> dict[str, Any]:
        si = self.server_info
        return {**super().info(), "server": self.url, "model_name": MODEL_NAME, "model_version": self.version,
                "model_id": si.get("model_id"), "preset": si.get("preset"), "server_engine": si.get("engine"),
                "encoder_batched": si.get("encoder_batched"), "max_batch_size": si.get("max_batch_size"),
                "requests": self.stats["requests"], "reconnects": self.stats["reconnects"],
                "server_lost_s": round(self.stats["lost_s"], 3),
                "batch_sizes": {str(k): v for k, v in sorted(self.stats["batch_sizes"].items())}}

    def close(self) -> None:
        try:
            self.client.close()
        except Exception:  # noqa: BLE001 - closing a dead channel
            pass
