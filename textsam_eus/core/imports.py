"""Optional dependencies: the one place that probes for them (in the manner of peft's ``import_utils``).

``is_*_available()`` answer without importing the package where they can (``importlib.util.find_spec``) and are
cached. ``require_*()`` import the package and return the module, or raise an error that names what to install
(the ``textsam-eus`` extra) and what to use instead: :class:`TensorRTUnavailable` for TensorRT, an
:class:`~.errors.UnavailableError` for the others.

* ONNX Runtime comes as ``onnxruntime`` (CPU, extra ``cpu``) or ``onnxruntime-gpu`` (extra ``gpu``); both install
  the module ``onnxruntime``, and with both installed only the CPU provider is seen (onnxruntime issue #26996).
* TensorRT (extra ``trt``) exists only on NVIDIA machines.
* PyAV (``av``) is a base dependency; a broken environment without it gets a one-line error, not a traceback.
* Ray (extra ``archive``) runs ``annotate`` over an archive of examinations, on one machine or a cluster.
* PyTriton (``nvidia-pytriton``, extra ``serve``) runs the model server in its own environment: it needs numpy < 2.
  ``tritonclient`` (extra ``triton-client``) is the client of ``stream --engine triton``.
* PyYAML (``yaml``, no extra) reads ``stream --config FILE.yaml``; TOML needs only the standard library.

Needs nothing but the standard library at import time: every layer may import it.
"""

from __future__ import annotations

import importlib
import importlib.util
from functools import lru_cache
from types import ModuleType

from .errors import UnavailableError

__all__ = ["TensorRTUnavailable", "ONNXRUNTIME_HINT", "ONNXRUNTIME_GPU_HINT", "TENSORRT_HINT", "PYAV_HINT",
           "is_onnxruntime_available", "is_onnxruntime_gpu_available", "is_tensorrt_available", "is_pyav_available",
           "installed_onnxruntime_flavours", "require_onnxruntime", "require_tensorrt", "require_pyav",
           "RAY_HINT", "is_ray_available", "require_ray",
           "PYTRITON_HINT", "TRITONCLIENT_HINT", "is_pytriton_available", "is_tritonclient_available",
           "require_pytriton", "require_tritonclient", "YAML_HINT", "is_yaml_available", "require_yaml"]

ONNXRUNTIME_FLAVOURS = ("onnxruntime", "onnxruntime-gpu")  # the distributions of the extras cpu and gpu

ONNXRUNTIME_HINT = ("ONNX Runtime is not installed: pip install 'textsam-eus[cpu]' (or 'textsam-eus[gpu]' on a "
                    "machine with an NVIDIA GPU)")
ONNXRUNTIME_GPU_HINT = ("install onnxruntime-gpu alone (pip uninstall -y onnxruntime onnxruntime-gpu && pip install "
                        "'textsam-eus[gpu]': with both flavours installed only the CPU provider is seen) or use "
                        "--device cpu")
TENSORRT_HINT = ("TensorRT is not installed: on a machine with an NVIDIA GPU and driver run "
                 "`pip install 'textsam-eus[trt]'` (the `tensorrt` package), or use another engine "
                 "(torch, onnxruntime)")
PYAV_HINT = "PyAV is not installed: pip install av (a dependency of textsam-eus; reinstall it)"
RAY_HINT = ("Ray is not installed: pip install 'textsam-eus[archive]' (the `ray` package), or annotate the files one "
            "after another with `textsam-eus stream --source FOLDER`")
SERVE_ENV = ("python3 -m venv --system-site-packages .venv-serve && .venv-serve/bin/pip install -e '.[cpu,serve]' "
             "(in a checkout; or pip install 'textsam-eus[cpu,serve]' in a fresh venv), then run "
             ".venv-serve/bin/textsam-eus serve")
PYTRITON_HINT = ("the model server needs PyTriton (nvidia-pytriton) in its own environment, because it needs "
                 "numpy < 2: " + SERVE_ENV)
TRITONCLIENT_HINT = "the triton engine needs tritonclient: pip install 'textsam-eus[triton-client]'"
YAML_HINT = "reading YAML needs PyYAML: pip install pyyaml (or write the settings as TOML, which needs nothing)"


class TensorRTUnavailable(UnavailableError):
    """The tensorrt package or a CUDA GPU is missing."""


def _has_module(name: str) -> bool:
    try:
        return importlib.util.find_spec(name) is not None
    except (ImportError, ValueError):  # a parent that fails to import, a module set to None in sys.modules
        return False


@lru_cache
def is_onnxruntime_available() -> bool:
    """The ``onnxruntime`` module (either flavour) is installed."""
    return _has_module("onnxruntime")


@lru_cache
def is_onnxruntime_gpu_available() -> bool:
    """ONNX Runtime is installed and offers its CUDA execution provider (``onnxruntime-gpu``, alone)."""
    if not is_onnxruntime_available():
        return False
    try:
        return "CUDAExecutionProvider" in require_onnxruntime().get_available_providers()
    except UnavailableError:
        return False


@lru_cache
def is_tensorrt_available() -> bool:
    """The ``tensorrt`` package is installed (whether a GPU is visible is another question)."""
    return _has_module("tensorrt")


@lru_cache
def is_pyav_available() -> bool:
    """PyAV (``av``, FFmpeg's libraries) is installed."""
    return _has_module("av")


@lru_cache
def is_ray_available() -> bool:
    """Ray (``ray``, for ``annotate``) is installed."""
    return _has_module("ray")
def is_pytriton_available() -> bool:
    """PyTriton (``pytriton``, the distribution nvidia-pytriton) is installed."""
    return _has_module("pytriton")


@lru_cache
def is_tritonclient_available() -> bool:
    """tritonclient with its gRPC client is installed."""
    return _has_module("tritonclient") and _has_module("tritonclient.grpc")


def installed_onnxruntime_flavours() -> list[str]:
    """The ONNX Runtime distributions installed here (more than one is the clash the extras avoid)."""
    from importlib import metadata

    found = []
    for dist in ONNXRUNTIME_FLAVOURS:
        try:
            metadata.distribution(dist)
        except metadata.PackageNotFoundError:
            continue
        found.append(dist)
    return found


def _require(name: str, available: bool, error: type[UnavailableError], hint: str) -> ModuleType:
    if not available:
        raise error(hint)
    try:
        return importlib.import_module(name)
    except ImportError as exc:  # installed but broken (missing shared libraries, mixed versions)
        raise error(f"{hint} ({name} is installed but cannot be imported: {exc})") from exc


def require_onnxruntime(instead: str = "or use --engine torch") -> ModuleType:
    """The ``onnxruntime`` module, or an UnavailableError naming the extra to install (and ``instead``)."""
    return _require("onnxruntime", is_onnxruntime_available(), UnavailableError, f"{ONNXRUNTIME_HINT}, {instead}")


def require_tensorrt() -> ModuleType:
    """The ``tensorrt`` module, or :class:`TensorRTUnavailable` naming the extra to install."""
    return _require("tensorrt", is_tensorrt_available(), TensorRTUnavailable, TENSORRT_HINT)


def require_pyav() -> ModuleType:
    """The ``av`` module, or an UnavailableError naming the fix."""
    return _require("av", is_pyav_available(), UnavailableError, PYAV_HINT)


def require_ray() -> ModuleType:
    """The ``ray`` module, or an UnavailableError naming the extra to install."""
    return _require("ray", is_ray_available(), UnavailableError, RAY_HINT)
def require_pytriton() -> ModuleType:
    """The ``pytriton`` module, or an UnavailableError naming the server environment to make (numpy < 2 there)."""
    import numpy

    mod = _require("pytriton", is_pytriton_available(), UnavailableError, PYTRITON_HINT)
    if int(numpy.__version__.split(".")[0]) >= 2:
        raise UnavailableError(f"PyTriton 0.7 needs numpy < 2, this environment has numpy {numpy.__version__} "
                               f"(batched outputs would come back empty): {SERVE_ENV}")
    return mod


def require_tritonclient() -> ModuleType:
    """The ``tritonclient.grpc`` module, or an UnavailableError naming the extra to install."""
    return _require("tritonclient.grpc", is_tritonclient_available(), UnavailableError, TRITONCLIENT_HINT)


@lru_cache
def is_yaml_available() -> bool:
    """PyYAML (``yaml``, for ``stream --config FILE.yaml``) is installed."""
    return _has_module("yaml")


def require_yaml() -> ModuleType:
    """The ``yaml`` module, or an UnavailableError naming ``pip install pyyaml``."""
    return _require("yaml", is_yaml_available(), UnavailableError, YAML_HINT)
