"""The Ray side of an archive run: a Ray instance, the model workers (actors), the files handed to them, retries,
Ctrl-C and the progress line.

* Without an address a local Ray instance is started and stopped with the run: every service bound to the
  loopback interface (Ray replaces a loopback node address by the machine's own one unless
  ``RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0`` is set when ``ray`` is first imported; :func:`start_local_ray` sets it for
  the services it starts), no dashboard. With ``address`` (``auto``, ``HOST:PORT``, ``ray://HOST:PORT``) an
  existing cluster is used as it is; ``textsam-eus`` must be installed on its nodes, and the archive and ``--out``
  must be at the same paths on every node (a shared file system).
* One actor per worker (``num_cpus`` = threads per worker, ``num_gpus`` = GPUs per worker), each loading one engine.
  Files are handed out one at a time to idle workers (a loop over ``ray.wait``). A worker whose process dies is
  restarted by Ray (``max_restarts=-1``) and the file it had is tried again by Ray (``max_task_retries`` =
  ``--retries``); when the retries are spent, ``ray.get`` raises ``RayActorError`` and the file is ``failed``
  with the reason. Ray does not retry Python exceptions: a worker reports bad input in its result.
* SIGINT / SIGTERM: no file is started any more, the workers finalise the files they have (``incomplete``), the
  table is written, exit status 130. A second signal (or 60 s without an answer) ends the workers at once.
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import sys
import threading
import time
import uuid
from collections import deque
from dataclasses import dataclass
from typing import Any

from ..model.errors import OptionError
from ..model.imports import require_ray
from .plan import ArchiveError, Examination
from .progress import ArchiveProgress
from .table import ArchiveTable
from .worker import ExamWorker

__all__ = ["RayOptions", "run_archive", "start_local_ray", "connect_ray", "NAMESPACE", "LOOPBACK_ENV"]

NAMESPACE = "textsam-eus"
LOOPBACK_ENV = "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"  # "0": Ray keeps a loopback node address (ray_constants)
WORKER_MALLOC_ARENAS = 2  # glibc malloc arenas of a worker process, unless MALLOC_ARENA_MAX is set (_start_workers)
STOP_GRACE_S = 60.0
MAX_WORKERS = 1024
MAX_RETRIES = 100
POLL_S = 1.0


@dataclass
class RayOptions:
    """How the archive runs on Ray. ``threads``: CPU threads per worker; ``frame_workers``: frames of a file
    segmented in parallel inside a worker (each with ``threads // frame_workers`` engine threads)."""

    workers: int = 1
    address: str | None = None
    threads: int = 1
    gpus: float = 0.0
    retries: int = 2
    frame_workers: int = 1

    def __post_init__(self) -> None:
        # every count bounded (a typo's extra zeros are an error, not a run that never ends)
        for flag, value, lo, hi, what in (("--workers", self.workers, 1, MAX_WORKERS, "model workers"),
                                          ("--threads-per-worker", self.threads, 1, 1024, "CPU threads"),
                                          ("--gpus-per-worker", self.gpus, 0, 64, "GPUs; 0 = CPU"),
                                          ("--retries", self.retries, 0, MAX_RETRIES, "0 = no retry")):
            if not lo <= value <= hi:
                raise OptionError(f"{flag} {value} is invalid: use {lo} to {hi} ({what})")


@contextlib.contextmanager
def _loopback_env():
    """Ray's loopback switch on for the block: it keeps a node address of 127.0.0.1 (by default Ray replaces it
    with this machine's network address). Read when ``ray`` is imported; the services it starts inherit it."""
    before = os.environ.get(LOOPBACK_ENV)
    os.environ[LOOPBACK_ENV] = "0"
    try:
        yield
    finally:
        if before is None:
            os.environ.pop(LOOPBACK_ENV, None)
        else:
            os.environ[LOOPBACK_ENV] = before


def _import_ray(loopback: bool):
    if not loopback:
        return require_ray()
    with _loopback_env():
        return require_ray()


def start_local_ray(num_cpus: int, num_gpus: int | None = None):
    """Start a Ray instance on this machine for this process: loopback only, no dashboard. Returns ``ray``."""
    fresh = "ray" not in sys.modules
    with _loopback_env():
        ray = require_ray()
        ray.init(num_cpus=num_cpus, num_gpus=num_gpus, include_dashboard=False, namespace=NAMESPACE,
                 log_to_driver=False, logging_level=logging.ERROR, _node_ip_address="127.0.0.1")
    ip = ray.util.get_node_ip_address()
    if ip not in ("127.0.0.1", "::1", "localhost"):
        print(f"warning: the local Ray instance listens on {ip}, not only on loopback (ray was imported before "
              f"annotate could set {LOOPBACK_ENV}=0{'' if fresh else ' for it'})", file=sys.stderr)
    return ray


def _is_loopback(address: str) -> bool:
    host = address.split("://", 1)[-1].rsplit(":", 1)[0].strip("[]")
    return host in ("127.0.0.1", "localhost", "::1")


def connect_ray(address: str | None, num_cpus: int):
    """(ray, started here?): the process's Ray connection if it has one, else a local instance (no ``address``),
    else the cluster at ``address`` (one on this machine's loopback, as :func:`start_local_ray` makes, too)."""
    ray = _import_ray(loopback=address is None or _is_loopback(address))
    if ray.is_initialized():
        return ray, False
    if address is None:
        return start_local_ray(num_cpus), True
    try:
        ray.init(address=address, namespace=NAMESPACE, log_to_driver=False, logging_level=logging.ERROR)
    except (ConnectionError, RuntimeError, ValueError) as exc:
        raise ArchiveError(f"--address {address}: cannot connect to a Ray cluster ({exc}); start one (ray start "
                           "--head) or give its address (auto, HOST:PORT or ray://HOST:10001); a cluster with token "
                           "authentication also needs RAY_AUTH_MODE=token and its token (~/.ray/auth_token or "
                           "RAY_AUTH_TOKEN)") from None
    return ray, True


def _short(exc: BaseException) -> str:
    text = " ".join(str(exc).split())
    return text[:300] + ("..." if len(text) > 300 else "")


class _Driver:
    def __init__(self, ray, table: ArchiveTable, exams: list[Examination], settings, opts: RayOptions,
                 progress: bool) -> None:
        self.ray, self.table, self.settings, self.opts = ray, table, settings, opts
        self.todo = [e for e in exams if e.problem is None]
        self.n_listed = len(exams) - len(self.todo)
        self.jobs: deque[Examination] = deque(self.todo)
        self.size = {e.name: int(e.size or 0) for e in self.todo}
        self.actors: list[Any] = []
        self.pids: dict[int, int] = {}
        self.ready_refs: dict[Any, int] = {}
        self.busy: dict[Any, tuple[int, Examination]] = {}
        self.idle: list[int] = []
        self.running: dict[int, dict] = {}  # actor -> its last progress answer
        self.progress_refs: dict[Any, int] = {}
        self.signals: list[str] = []
        self.stopping_since: float | None = None
        self.frames_done = 0
        self.bytes_done = 0
        self.skipped_bytes = 0
        self.rss: dict[str, list] = {}
        self.tally: dict[str, int] = {}
        self.progress = ArchiveProgress(len(self.todo), sum(self.size.values()), enabled=progress)

    # ------------------------------------------------------------------ set-up
    def _check_resources(self) -> None:
        o = self.opts
        nodes = [n.get("Resources", {}) for n in self.ray.nodes() if n.get("Alive")]
        if not any(r.get("CPU", 0) >= o.threads and r.get("GPU", 0) >= o.gpus for r in nodes):
            have = ", ".join(f"{r.get('CPU', 0):g} CPU/{r.get('GPU', 0):g} GPU" for r in nodes) or "no node"
            raise ArchiveError(f"no Ray node can run a worker of {o.threads} CPU thread(s) and {o.gpus:g} GPU(s) (the "
                               f"cluster has {have}); lower --threads-per-worker / --gpus-per-worker")

    def _start_workers(self) -> None:
        """One actor per worker. Each runs with ``MALLOC_ARENA_MAX`` (default 2, yours if set): every file starts
        new stage threads, and glibc gives new threads new malloc arenas (up to 8 per core), which grew a worker's
        RSS by ~240 MiB over its first 10 files (one worker, 12 files of 50 frames: 798 -> 1036 MiB; with 2 arenas
        782 -> 814-828 MiB, flat from the second file; benchmarks/README.md, archive_ray.py)."""
        o = self.opts
        env = {"MALLOC_ARENA_MAX": os.environ.get("MALLOC_ARENA_MAX", str(WORKER_MALLOC_ARENAS))}
        remote = self.ray.remote(concurrency_groups={"control": 2})(ExamWorker)
        run_id = uuid.uuid4().hex[:8]
        engine_threads = max(1, o.threads // o.frame_workers)
        for i in range(o.workers):
            actor = remote.options(name=f"annotate-{run_id}-{i}", num_cpus=o.threads, num_gpus=o.gpus,
                                   max_restarts=-1, max_task_retries=o.retries,
                                   runtime_env={"env_vars": env}).remote(
                self.settings, engine_threads, o.frame_workers)
            self.actors.append(actor)
            self.ready_refs[actor.ready.remote()] = i

    def _wait_first_ready(self) -> dict:
        """The first worker's answer (its model identity), checked against the earlier run's."""
        t0, said = time.monotonic(), 0.0
        while True:
            if self.signals:
                raise KeyboardInterrupt
            done, _ = self.ray.wait(list(self.ready_refs), num_returns=1, timeout=0.5)
            for ref in done:
                info = self._on_ready(ref)
                if info is not None:
                    return info
            if not self.ready_refs:
                raise ArchiveError("no worker could start (see the messages above); check the engine options")
            if time.monotonic() - t0 - said > 30:
                said += 30
                print(f"annotate: waiting for Ray to start the workers ({time.monotonic() - t0:.0f} s; cluster: "
                      f"{self.ray.cluster_resources()})", file=sys.stderr)

    def _on_ready(self, ref, fatal: bool = True) -> dict | None:
        """A worker's ready answer: it joins the idle ones (None when it is left out). A model that cannot load
        stops the run before the first file (``fatal``); later (a restarted worker) it only leaves that one out."""
        i = self.ready_refs.pop(ref)
        try:
            info = self.ray.get(ref)
        except self.ray.exceptions.RayError as exc:
            print(f"warning: worker {i} could not start: {_short(exc)}", file=sys.stderr)
            return None
        if info.get("error"):
            if fatal:
                raise ArchiveError(f"the workers cannot load the model: {info['error']}")
            print(f"warning: worker {i} (restarted) cannot load the model: {info['error']}; it is left out",
                  file=sys.stderr)
            return None
        if self.table.model is not None and info["model"].get("sha256") != self.table.model.get("sha256"):
            print(f"warning: worker {i} on {info['host']} loaded another model (sha256 "
                  f"{str(info['model'].get('sha256'))[:12]}...): it is left out", file=sys.stderr)
            return None
        self.pids[i] = info["pid"]
        self.rss.setdefault(f"{info['pid']}@{info['host']}", []).append(["(model loaded)", info.get("rss_mb")])
        self.idle.append(i)
        return info

    # ------------------------------------------------------------------ signals
    def _on_signal(self, signum, _frame) -> None:
        name = signal.Signals(signum).name
        self.signals.append(name)
        if len(self.signals) == 1:
            print(f"\n{name}: stopping the archive: no new file is started, the files in progress are finalised "
                  "(send it again to end the workers now)", file=sys.stderr, flush=True)

    def _install_signals(self) -> dict:
        if threading.current_thread() is not threading.main_thread():
            return {}
        return {sig: signal.signal(sig, self._on_signal) for sig in (signal.SIGINT, signal.SIGTERM)}

    # ------------------------------------------------------------------ the loop
    def run(self) -> int:
        old = self._install_signals()
        try:
            return self._run()
        finally:
            for sig, handler in old.items():
                signal.signal(sig, handler)

    def _run(self) -> int:
        t0 = time.perf_counter()
        self._check_resources()
        self._start_workers()
        try:
            first = self._wait_first_ready()
        except KeyboardInterrupt:
            print("annotate: stopped before any file was started; the table of an earlier run is unchanged",
                  file=sys.stderr)
            return 130
        self.table.check_model(first["model"])
        self.table.run.update(engine=first["engine"], workers_ready_s=round(time.perf_counter() - t0, 3),
                              model_load_s=first.get("load_s"))
        self.table.write()  # every examination listed before the first file is started
        print(f"annotate: {len(self.todo)} recording(s) to annotate on {self.opts.workers} worker(s)"
              + (f"; {self.n_listed} other file(s) listed in the table with the reason" if self.n_listed else ""),
              file=sys.stderr)
        self.progress.start()
        failure = None
        try:
            self._loop()
        except BaseException as exc:  # a bug, or an error of Ray itself: the table is finalised all the same
            failure = exc
            raise
        finally:
            if self.signals:
                reason = f"not started: the run was stopped by {self.signals[0]}"
            elif failure is not None:
                reason = f"not started: the run stopped on an error ({type(failure).__name__}: {failure})"
            else:
                reason = "not started: no worker was left to annotate it (see the messages above)"
            for _, exam in self.busy.values():  # only after an error: the files in progress when it came
                self.table.update(exam.name, {"status": "incomplete", "reason": reason.replace("not started: ", "")})
            self.table.mark_unfinished(reason)
            self.table.run.update(wall_s=round(time.perf_counter() - t0, 3), interrupted_by=self.signals[0]
                                  if self.signals else None, worker_rss_mb=self.rss,
                                  finished=time.strftime("%Y-%m-%dT%H:%M:%S%z"))
            self.table.write()
            self.progress.show(force=True)
            self.progress.close()
        counts = self.table.counts()
        if self.signals:
            return 130
        return 1 if counts.get("failed") or counts.get("incomplete") else 0

    def _loop(self) -> None:
        while self.jobs or self.busy:
            if self.signals and self.stopping_since is None:
                self._begin_stop()
            if self.signals and self.busy and (len(self.signals) > 1 or
                                                time.monotonic() - self.stopping_since > STOP_GRACE_S):
                self._kill_busy()
                return
            self._submit()
            refs = list(self.busy) + list(self.ready_refs)
            if not refs:
                return  # files left but no worker
            done, _ = self.ray.wait(refs, num_returns=1, timeout=0.25)
            for ref in done:
                if ref in self.ready_refs:
                    self._on_ready(ref, fatal=False)
                else:
                    self._on_result(ref)
            self._poll_progress()
            self._show()

    def _submit(self) -> None:
        while self.idle and self.jobs and not self.signals:
            i, exam = self.idle.pop(0), self.jobs.popleft()
            job = {"source": exam.source, "out": str(self.table.out / exam.name),
                   "expect_sha256": self.table.expected_hash(exam.name)}
            self.busy[self.actors[i].process.remote(job)] = (i, exam)

    def _on_result(self, ref) -> None:
        i, exam = self.busy.pop(ref)
        self.running.pop(i, None)
        errors = self.ray.exceptions
        try:
            res = self.ray.get(ref)
        except errors.RayActorError as exc:  # the process died, and Ray's retries of this file are spent
            res = {"status": "failed", "reason": f"the worker process died while annotating this file "
                   f"({1 + self.opts.retries} time(s); --retries {self.opts.retries}): {_short(exc)}"}
            self.ready_refs[self.actors[i].ready.remote()] = i  # back to work once Ray has restarted it
        except errors.OutOfMemoryError as exc:
            res = {"status": "failed", "reason": f"the worker ran out of memory on this file: {_short(exc)}"}
            self.ready_refs[self.actors[i].ready.remote()] = i
        except errors.RayTaskError as exc:  # a bug in the worker: the file fails, the archive goes on
            print(f"error: {exam.source}: {exc}", file=sys.stderr)
            res = {"status": "failed", "reason": f"internal error: {_short(exc.cause if exc.cause else exc)}"}
            self.idle.append(i)
        else:
            if self.pids.get(i) not in (None, res.get("pid")):
                res.setdefault("notes", []).append(
                    f"its worker (pid {self.pids[i]}) died while annotating it; Ray restarted the worker and the file "
                    "was annotated again from the start")
            self.pids[i] = res.get("pid", self.pids.get(i))
            self.idle.append(i)
            if res.get("worker"):
                self.rss.setdefault(res["worker"], []).append([exam.name, res.get("worker_rss_mb")])
        if res["status"] == "skipped":
            self.skipped_bytes += self.size.get(exam.name, 0)
        else:
            self.bytes_done += self.size.get(exam.name, 0)
            self.frames_done += int(res.get("frames") or 0)
        self.tally[res["status"]] = self.tally.get(res["status"], 0) + 1
        self.table.update(exam.name, res)
        self.table.write()

    def _poll_progress(self) -> None:
        if self.progress_refs:
            done, _ = self.ray.wait(list(self.progress_refs), num_returns=len(self.progress_refs), timeout=0)
            for ref in done:
                i = self.progress_refs.pop(ref)
                try:
                    self.running[i] = self.ray.get(ref)
                except self.ray.exceptions.RayError:
                    self.running.pop(i, None)
            return
        if time.monotonic() - getattr(self, "_polled", 0.0) < POLL_S:
            return
        self._polled = time.monotonic()
        for i, _ in self.busy.values():
            self.progress_refs[self.actors[i].progress.options(concurrency_group="control").remote()] = i

    def _show(self) -> None:
        running_frames, running_bytes = 0, 0.0
        by_actor = {i: exam for i, exam in self.busy.values()}
        for i, p in self.running.items():
            exam = by_actor.get(i)
            if exam is None or p.get("source") != exam.source:
                continue
            running_frames += int(p.get("frames") or 0)
            if p.get("n_frames"):
                running_bytes += self.size.get(exam.name, 0) * min(1.0, p["frames"] / p["n_frames"])
        self.progress.update(self.tally, self.frames_done, running_frames, self.bytes_done + running_bytes,
                             self.skipped_bytes)
        self.progress.show()

    def _begin_stop(self) -> None:
        self.stopping_since = time.monotonic()
        reason = f"stopped by {self.signals[0]}"
        for i, _ in self.busy.values():
            self.actors[i].stop.options(concurrency_group="control").remote(reason)
        self.jobs.clear()

    def _kill_busy(self) -> None:
        why = "a second signal" if len(self.signals) > 1 else f"no answer within {STOP_GRACE_S:.0f} s"
        for ref, (i, exam) in list(self.busy.items()):
            self.ray.kill(self.actors[i], no_restart=True)
            self.tally["incomplete"] = self.tally.get("incomplete", 0) + 1
            self.table.update(exam.name, {"status": "incomplete", "reason": f"stopped by {self.signals[0]}: the "
                                          f"worker was ended ({why}) before it finalised the outputs; a rerun "
                                          "annotates it again"})
        self.busy.clear()


def run_archive(table: ArchiveTable, exams: list[Examination], settings, opts: RayOptions,
                progress: bool = True) -> int:
    """Annotate ``exams`` (rows already added to ``table``) on Ray; the exit status (0 all done or skipped, 1 some
    failed or incomplete, 130 stopped by a signal)."""
    t0 = time.perf_counter()
    ray, started_here = connect_ray(opts.address, max(os.cpu_count() or 1, opts.workers * opts.threads))
    table.run.update(ray_start_s=round(time.perf_counter() - t0, 3), ray_address=opts.address or "local",
                     ray_started_here=started_here, workers=opts.workers, threads_per_worker=opts.threads,
                     gpus_per_worker=opts.gpus, retries=opts.retries, frame_workers=opts.frame_workers)
    try:
        return _Driver(ray, table, exams, settings, opts, progress).run()
    finally:
        if started_here:
            ray.shutdown()

