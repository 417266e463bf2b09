"""What a benchmark ran on: the machine, library versions, the checked-out commit, and this process's memory."""

from __future__ import annotations

import os
import platform
import resource
import shutil
import socket
import subprocess
import sys
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator

REPO = Path(__file__).resolve().parents[1]


# ---------------------------------------------------------------------------------------------- memory
@contextmanager
def torch_threads(n: int) -> Iterator[None]:
    """torch's intra-op threads set to ``n`` for the block, restored after it."""
    import torch

    old = torch.get_num_threads()
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(old)


def proc_status() -> dict[str, float]:
    """VmRSS / VmHWM of this process in MB (Linux), empty elsewhere."""
    out = {}
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith(("VmRSS:", "VmHWM:")):
                key, val = line.split(":", 1)
                out[key] = int(val.split()[0]) / 1024.0
    except OSError:
        pass
    return out


def rss_mb() -> float | None:
    """The resident set size of this process now (MB), None where /proc is missing."""
    return proc_status().get("VmRSS")


def reset_peak_rss() -> bool:
    """Reset the kernel's peak-RSS mark (VmHWM) for this process; False where that is not possible."""
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        return True
    except OSError:
        return False


def ru_maxrss_mb() -> float:
    r = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return r / (1024.0 * 1024.0) if sys.platform == "darwin" else r / 1024.0  # bytes on macOS, KiB on Linux


def loadavg() -> list[float] | None:
    return list(os.getloadavg()) if hasattr(os, "getloadavg") else None


def busy_load(machine: dict[str, Any]) -> float | None:
    """The 1-minute load average at the start when it exceeded half the logical CPUs (timings are pessimistic)."""
    load = machine.get("loadavg_at_start")
    if load and load[0] > 0.5 * (machine.get("logical_cpus") or 1):
        return float(load[0])
    return None


# ---------------------------------------------------------------------------------------------- the checkout
def git_commit(repo: Path = REPO) -> dict[str, Any]:
    """The checked-out commit, read from the .git folder (no git process is started)."""
    git = repo / ".git"
    try:
        if git.is_file():  # a worktree / submodule: "gitdir: PATH"
            git = (repo / git.read_text().split(":", 1)[1].strip()).resolve()
        head = (git / "HEAD").read_text().strip()
        if not head.startswith("ref:"):
            return {"commit": head, "ref": None}
        ref = head.split(":", 1)[1].strip()
        return _resolve_ref(git, ref)
    except OSError:
        return {"commit": None, "ref": None, "note": "not a git checkout"}


def _resolve_ref(git: Path, ref: str) -> dict[str, Any]:
    common = git
    if (git / "commondir").is_file():  # a linked worktree keeps its branches in the main .git folder
        common = (git / (git / "commondir").read_text().strip()).resolve()
    for folder in dict.fromkeys([git, common]):
        f = folder / ref
        if f.is_file():
            return {"commit": f.read_text().strip(), "ref": ref}
        packed = folder / "packed-refs"
        if packed.is_file():
            for line in packed.read_text().splitlines():
                parts = line.split()
                if len(parts) == 2 and parts[1] == ref:
                    return {"commit": parts[0], "ref": ref}
    return {"commit": None, "ref": ref, "note": "no commit yet on this branch"}


# ---------------------------------------------------------------------------------------------- the machine
def _read(path: str) -> str:
    try:
        return Path(path).read_text()
    except OSError:
        return ""


def _version(module: str) -> str | None:
    try:
        mod = __import__(module)
    except Exception:  # noqa: BLE001 - absent or broken: reported as missing
        return None
    return str(getattr(mod, "__version__", "?"))


def _physical_cores(cpuinfo: str) -> int | None:
    cores = set()
    phys = core = None
    for line in cpuinfo.splitlines() + [""]:
        if line.startswith("physical id"):
            phys = line.split(":", 1)[1].strip()
        elif line.startswith("core id"):
            core = line.split(":", 1)[1].strip()
        elif not line.strip():
            if core is not None:
                cores.add((phys, core))
            phys = core = None
    return len(cores) or None


def _cpu_fields() -> dict[str, Any]:
    cpuinfo = _read("/proc/cpuinfo")
    model = next((line.split(":", 1)[1].strip() for line in cpuinfo.splitlines() if line.startswith("model name")),
                 None) or platform.processor() or platform.machine()
    mem = next((line.split()[1] for line in _read("/proc/meminfo").splitlines() if line.startswith("MemTotal")), None)
    try:
        affinity = len(os.sched_getaffinity(0))
    except AttributeError:
        affinity = None
    return {"cpu_model": model, "logical_cpus": os.cpu_count(), "physical_cores": _physical_cores(cpuinfo),
            "cpus_usable": affinity, "memory_gb": round(int(mem) / 1024 ** 2, 1) if mem else None,
            "loadavg_at_start": loadavg(), "platform": platform.platform(), "python": platform.python_version()}


def versions() -> dict[str, Any]:
    """torch (and its CUDA/cuDNN), the runtimes and libraries a benchmark touches, and this package."""
    import torch

    out: dict[str, Any] = {
        "torch": torch.__version__, "torch_cuda": torch.version.cuda,
        "cudnn": torch.backends.cudnn.version() if torch.backends.cudnn.is_available() else None}
    for mod in ("onnxruntime", "onnx", "av", "cv2", "numpy", "matplotlib", "tensorrt"):
        out[mod] = _version(mod)
    try:
        from importlib.metadata import version

        out["textsam-eus"] = version("textsam-eus")
    except Exception:  # noqa: BLE001
        out["textsam-eus"] = None
    return out


def _gpu_fields() -> dict[str, Any]:
    import torch

    gpus = []
    if torch.cuda.is_available():
        for i in range(torch.cuda.device_count()):
            p = torch.cuda.get_device_properties(i)
            gpus.append({"name": p.name, "compute_capability": f"{p.major}.{p.minor}",
                         "memory_gb": round(p.total_memory / 1024 ** 3, 1)})
    smi, report = shutil.which("nvidia-smi"), None
    if smi:
        try:
            q = subprocess.run([smi, "--query-gpu=name,driver_version,memory.total,power.limit,clocks.max.sm",
                                "--format=csv,noheader"], capture_output=True, text=True, timeout=15)
            report = q.stdout.strip() or q.stderr.strip()
        except (OSError, subprocess.SubprocessError) as exc:
            report = f"nvidia-smi failed: {exc}"
    return {"cuda_available": torch.cuda.is_available(), "gpus": gpus, "nvidia_smi": report}


def machine_info(threads: int) -> dict[str, Any]:
    """CPU, memory, load, threads in use, library versions, commit, GPUs and onnxruntime's providers."""
    import torch

    info: dict[str, Any] = _cpu_fields()
    info["threads"] = {"requested": threads, "torch_intra_op": torch.get_num_threads(),
                       "torch_inter_op": torch.get_num_interop_threads(), "onnxruntime_intra_op": threads}
    info["versions"] = versions()
    info["git"] = git_commit()
    info.update(_gpu_fields())
    try:
        import onnxruntime as ort

        info["onnxruntime_providers"] = ort.get_available_providers()
    except ImportError:
        info["onnxruntime_providers"] = None
    return info


def free_ports(n: int) -> list[int]:
    """``n`` distinct TCP ports free on the loopback interface now (the OS picks them; closed again at once)."""
    socks = [socket.socket() for _ in range(n)]
    for s in socks:
        s.bind(("127.0.0.1", 0))
    ports = [s.getsockname()[1] for s in socks]
    for s in socks:
        s.close()
    return ports
