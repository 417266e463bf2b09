"""What the CPU offers that changes ONNX Runtime's int8 arithmetic: the one place that reads it.

ONNX Runtime's x86-64 int8 matrix kernels multiply uint8 activations by int8 weights (U8S8). Without VNNI
(AVX2 alone: ``vpmaddubsw``) two products are summed into a saturating int16 first, so full-range int8 weights can
overflow and give other results than on a CPU with AVX-512 VNNI or AVX-VNNI (``vpdpbusd``, exact 32-bit sums).
With 7-bit weights (``reduce_range``) the pair sum is at most 2 * 255 * 64 = 32,640 < 32,767: no saturation, the
same integers on every x86-64 CPU. :func:`int8_saturates` says whether a quantization setting is exposed to this.

Standard library only: every layer may import it.
"""

from __future__ import annotations

import platform
from functools import lru_cache
from pathlib import Path
from typing import Any

# the flags that select ONNX Runtime's (MLAS) int8 kernels on x86-64
INT8_FLAGS = ("avx2", "avx512f", "avx512bw", "avx512_vnni", "avx_vnni", "amx_int8")
VNNI_FLAGS = ("avx512_vnni", "avx_vnni", "amx_int8")


def _flags_from_cpuinfo(text: str) -> set[str]:
    for line in text.splitlines():
        key, _, value = line.partition(":")
        if key.strip() in ("flags", "Features"):
            return set(value.split())
    return set()


@lru_cache
def cpu_features(cpuinfo: str | None = None) -> dict[str, Any]:
    """{"machine", "model", "flags": the INT8_FLAGS present, "vnni": bool|None (None: not known here)}.

    ``cpuinfo``: the text of ``/proc/cpuinfo`` (read from the system when None); other systems than Linux give
    ``vnni: None`` on x86-64 (unknown) and ``False`` elsewhere (no x86 U8S8 kernels there)."""
    machine = platform.machine().lower()
    x86 = machine in ("x86_64", "amd64", "i386", "i686")
    if cpuinfo is None:
        try:
            cpuinfo = Path("/proc/cpuinfo").read_text(errors="replace")
        except OSError:
            cpuinfo = ""
    flags = _flags_from_cpuinfo(cpuinfo)
    model = next((line.partition(":")[2].strip() for line in cpuinfo.splitlines()
                  if line.partition(":")[0].strip() == "model name"), platform.processor() or "")
    if not x86:
        vnni = False
    elif not flags:
        vnni = None
    else:
        vnni = any(f in flags for f in VNNI_FLAGS)
    return {"machine": machine, "x86": x86, "model": model, "flags": sorted(f for f in INT8_FLAGS if f in flags),
            "vnni": vnni}


def int8_saturates(settings: dict[str, Any] | None) -> bool:
    """True when int8 graphs quantized with ``settings`` can saturate on an x86-64 CPU without VNNI.

    ``settings`` as recorded in bundle.json (``int8["settings"]``); None (bundles from before it was recorded)
    means the old default: full-range int8 weights, exposed."""
    if not settings:
        return True
    return settings.get("weight_type") == "QInt8" and not settings.get("reduce_range", False)


def int8_portability_problem(settings: dict[str, Any] | None, measured_on: dict[str, Any] | None,
                             here: dict[str, Any]) -> str | None:
    """Why int8 graphs whose parity was measured on ``measured_on`` may give other masks on ``here``, or None.

    Saturation-free settings give the same integers on every CPU: never a problem. Exposed settings are refused
    on an x86-64 CPU without VNNI (or not known to have it) unless their parity was measured on such a CPU too."""
    if not int8_saturates(settings) or not here.get("x86"):
        return None
    if here.get("vnni"):
        return None  # exact 32-bit sums here: no saturation whatever the weights
    measured_vnni = (measured_on or {}).get("vnni")
    if measured_on and measured_vnni is False and (measured_on or {}).get("x86"):
        return None  # measured on a CPU that saturates the same way
    where = "a CPU with VNNI" if measured_vnni else "an unrecorded CPU"
    flags = ", ".join(here.get("flags") or []) or "none known"
    return (f"its int8 graphs use full-range int8 weights, whose ONNX Runtime kernels saturate on x86-64 CPUs "
            f"without VNNI, and their parity was measured on {where}; this CPU ({here.get('model') or 'unknown'}; "
            f"int8 flags: {flags}) has no VNNI")
