"""Local backend: persistent worker processes on this machine, one GPU each when there are GPUs.

In an interactive session (a notebook), :func:`warm_backend` keeps the workers of a sweep
between sweeps: the next ``sweeper.run`` of the same objective with the same parallelism
starts its trials at once, without starting processes and loading the objective again.
"""

from __future__ import annotations

import atexit
import contextlib
import logging
import os
import selectors
import shutil
import signal
import subprocess
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from multiprocessing.connection import Connection
from pathlib import Path

from sweeper._errors import BackendError
from sweeper._logging import get_logger
from sweeper._process import spawn_python
from sweeper.backends._base import Backend, Event, LoadFailed, Notice
from sweeper.backends._local_worker import Failed, Init, Ready, Stop
from sweeper.channel._messages import Reply
from sweeper.objective._ref import ObjectiveRef
from sweeper.trial._messages import TrialResult, TrialSpec

logger = get_logger(__name__)

_LOG_TAIL_BYTES = 4000
_STOP_GRACE = 2.0


def detect_gpus(environ: Mapping[str, str] | None = None) -> list[str]:
    """GPU ids workers may use: ``CUDA_VISIBLE_DEVICES`` if set, else what nvidia-smi lists."""
    environ = os.environ if environ is None else environ
    visible = environ.get("CUDA_VISIBLE_DEVICES")
    if visible is not None:
        ids = [d.strip() for d in visible.split(",") if d.strip()]
        return [] if ids[:1] == ["-1"] else ids
    nvidia_smi = shutil.which("nvidia-smi")
    if nvidia_smi is None:
        return []
    try:
        listing = subprocess.run(
            [nvidia_smi, "-L"], capture_output=True, text=True, timeout=10, check=False
        ).stdout
    except (OSError, subprocess.SubprocessError):
        return []
    lines = [line for line in listing.splitlines() if line.startswith("GPU")]
    return [str(i) for i in range(len(lines))]


_parked: LocalBackend | None = None
"""The workers kept since the last sweep (one set at a time), idle, for the next one."""


def warm_backend(
    objective: ObjectiveRef, n_workers: int, *, log_dir: str | os.PathLike[str]
) -> LocalBackend:
    """Workers for a sweep in an interactive session: those the last sweep kept, when they
    loaded the same objective (the same pickled function) and there are as many, else new
    ones (the kept ones stop). The backend returned keeps its workers when it closes after
    a sweep that ended with them idle; they stop when the next sweep needs others, and at
    exit."""
    global _parked
    kept, _parked = _parked, None
    if kept is not None:
        if kept.reuse_for(objective, n_workers, log_dir):
            logger.debug("reusing the %d workers of the last sweep", n_workers)
            return kept
        kept.shut_down()
    atexit.unregister(shut_down_kept)  # registered once, however many sweeps
    atexit.register(shut_down_kept)
    return LocalBackend(objective, n_workers, log_dir=log_dir, keep_warm=True)


def shut_down_kept() -> None:
    """Stop the workers kept between sweeps, if any."""
    global _parked
    kept, _parked = _parked, None
    if kept is not None:
        kept.shut_down()


def default_parallel() -> int:
    """One trial per GPU when there are GPUs, else one per CPU core."""
    return len(detect_gpus()) or os.cpu_count() or 1


@dataclass
class _Slot:
    index: int
    process: subprocess.Popen[bytes] | None = None
    connection: Connection | None = None
    pidfd: int | None = None
    state: str = "starting"  # starting | idle | busy | stopping | dead
    trial: int | None = None
    spec: TrialSpec | None = None
    submitted: float = 0.0


class LocalBackend(Backend):
    """Runs trials in ``n_workers`` persistent local processes.

    Each worker imports the objective once, then runs one trial at a time. A worker that
    dies (crash, ``os._exit``, out-of-memory kill, timeout) is replaced, and its trial
    finishes as FAIL with the reason. With GPUs, worker ``i`` sees only GPU ``i mod n``
    through ``CUDA_VISIBLE_DEVICES``; CPU thread pools are sized to share the cores.
    """

    def __init__(
        self,
        objective: ObjectiveRef,
        n_workers: int,
        *,
        log_dir: str | os.PathLike[str],
        gpus: Sequence[str] | None = None,
        environ: Mapping[str, str] | None = None,
        max_start_failures: int = 3,
        keep_warm: bool = False,
    ) -> None:
        super().__init__()
        self._keep_warm = keep_warm
        self._stopped = False
        self._objective = objective
        self._n_workers = n_workers
        self._log_dir = Path(log_dir)
        self._gpus = list(detect_gpus() if gpus is None else gpus)
        self._environ = dict(os.environ if environ is None else environ)
        self._max_start_failures = max_start_failures
        self._slots = [_Slot(i) for i in range(n_workers)]
        self._by_trial: dict[int, _Slot] = {}
        self._start_failures = 0
        self._load_failed = False
        self._winding_down = False
        self._selector = selectors.DefaultSelector()
        self._wake_read, self._wake_write = os.pipe()
        os.set_blocking(self._wake_read, False)
        os.set_blocking(self._wake_write, False)
        self._selector.register(self._wake_read, selectors.EVENT_READ, (None, "wake"))
        self._oom_kills = _oom_kill_count()

    @property
    def gpus(self) -> list[str]:
        return list(self._gpus)

    def worker_log(self, index: int) -> Path:
        return self._log_dir / f"worker-{index}.log"

    # -- hooks -----------------------------------------------------------------------------

    def _start(self) -> None:
        self._log_dir.mkdir(parents=True, exist_ok=True)
        missing = [slot for slot in self._slots if slot.process is None]
        # A file whose module code does more than define things is imported by one worker
        # first: what it does once (create a database, download data) is then done before
        # the others import it, as under plain `python FILE`.
        if self._objective.import_first and len(missing) == len(self._slots):
            missing = missing[:1]
        for slot in missing:
            self._spawn(slot)

    def _free_slots(self) -> int:
        return sum(slot.state == "idle" for slot in self._slots)

    def _submit(self, spec: TrialSpec) -> None:
        slot = next(s for s in self._slots if s.state == "idle")
        slot.state, slot.trial, slot.spec, slot.submitted = "busy", spec.number, spec, time.time()
        self._by_trial[spec.number] = slot
        self._send(slot, spec)

    def _reply(self, reply: Reply) -> None:
        slot = self._by_trial.get(reply.number)
        if slot is not None:
            self._send(slot, reply)

    def _cancel(self, number: int, reason: str) -> None:
        slot = self._by_trial.get(number)
        if slot is not None:
            self._kill(slot)

    def _poll(self, timeout: float | None) -> list[Event]:
        events: list[Event] = []
        if self._any_without_pidfd():
            timeout = 0.1 if timeout is None else min(timeout, 0.1)
        ready = self._selector.select(timeout)
        exited = False
        for key, _ in ready:
            slot, what = key.data
            if what == "wake":
                with contextlib.suppress(BlockingIOError):
                    os.read(self._wake_read, 4096)
            elif what == "connection":
                self._receive_one(slot, events)  # more waiting: the selector says so again
            else:
                exited = True
        if exited or self._any_without_pidfd():
            for slot in self._slots:
                if slot.process is not None and slot.process.poll() is not None:
                    self._drain(slot, events)
                    self._on_exit(slot, events)
        return events

    def _wind_down(self) -> None:
        self._winding_down = True
        if self._keep_warm:
            return  # idle workers wait for the next sweep; starting ones get ready for it
        for slot in self._slots:
            if slot.process is None:
                continue
            if slot.state == "idle":
                self._send(slot, Stop())
                slot.state = "stopping"
            elif slot.state == "starting":
                self._kill(slot)
                slot.state = "stopping"

    def _close(self) -> None:
        global _parked
        if self._keep_warm and self._can_keep():
            if _parked is not None and _parked is not self:
                _parked.shut_down()
            _parked = self
            return
        self._stop_workers()

    def _can_keep(self) -> bool:
        """Whether the workers can run the next sweep: every one idle (or starting, or gone
        and to be replaced), and the objective loads."""
        return not self._load_failed and all(
            slot.state in ("idle", "starting", "dead") for slot in self._slots
        )

    def reuse_for(
        self, objective: ObjectiveRef, n_workers: int, log_dir: str | os.PathLike[str]
    ) -> bool:
        """Take up a new sweep with the kept workers, if they fit it (the same objective, as
        many workers, the same environment); False: they do not, and stay as they were."""
        if (
            objective != self._objective
            or n_workers != self._n_workers
            or dict(os.environ) != self._environ
            or self._load_failed
        ):
            return False
        self._closed = False
        self._running.clear()
        self._cancelled.clear()
        self._winding_down = False
        self._start_failures = 0
        self._log_dir = Path(log_dir)
        for slot in self._slots:
            if slot.process is not None and slot.process.poll() is not None:
                self._release(slot)  # it died while kept: replaced when the sweep starts
        return True

    def shut_down(self) -> None:
        """Stop the workers now (kept ones included)."""
        self._keep_warm = False
        self._closed = True
        self._stop_workers()

    def _stop_workers(self) -> None:
        if self._stopped:
            return
        self._stopped = True
        for slot in self._slots:
            if slot.process is None:
                continue
            if slot.state == "idle":
                with contextlib.suppress(OSError, ValueError):
                    self._send(slot, Stop())
            else:
                self._kill(slot)
        deadline = time.monotonic() + _STOP_GRACE
        for slot in self._slots:
            if slot.process is None:
                continue
            try:
                slot.process.wait(max(0.0, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                self._kill(slot)
                slot.process.wait()
            self._release(slot)
        self._selector.close()
        for fd in (self._wake_read, self._wake_write):
            with contextlib.suppress(OSError):
                os.close(fd)

    def _wake(self) -> None:
        with contextlib.suppress(BlockingIOError, OSError):
            os.write(self._wake_write, b"!")

    # -- workers ---------------------------------------------------------------------------

    def _spawn(self, slot: _Slot) -> None:
        env = self._worker_environ(slot.index)
        with open(self.worker_log(slot.index), "ab") as log:
            try:
                process, connection = spawn_python(
                    "sweeper.backends._local_worker", env=env, output=log
                )
            except OSError as error:
                raise BackendError(f"cannot start a worker process: {error}") from None
        slot.process, slot.connection = process, connection
        slot.state, slot.trial, slot.spec = "starting", None, None
        self._selector.register(connection.fileno(), selectors.EVENT_READ, (slot, "connection"))
        slot.pidfd = None
        if hasattr(os, "pidfd_open"):
            with contextlib.suppress(OSError):
                slot.pidfd = os.pidfd_open(process.pid)
                self._selector.register(slot.pidfd, selectors.EVENT_READ, (slot, "exit"))
        self._send(slot, Init(objective=self._objective, slot=slot.index, logging=_root_logging()))

    def _worker_environ(self, index: int) -> dict[str, str]:
        env = dict(self._environ)
        env["PYTHONUNBUFFERED"] = "1"
        env["SWEEPER_WORKER"] = str(index)
        if self._gpus:
            env["CUDA_VISIBLE_DEVICES"] = self._gpus[index % len(self._gpus)]
        threads = max(1, (os.cpu_count() or 1) // self._n_workers)
        for variable in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS"):
            env.setdefault(variable, str(threads))
        return env

    def _send(self, slot: _Slot, message: object) -> None:
        if slot.connection is None:
            return
        try:
            slot.connection.send(message)
        except (OSError, ValueError):
            self._kill(slot)  # its exit is reported by the next poll

    def _receive_one(self, slot: _Slot, events: list[Event]) -> None:
        connection = slot.connection
        if connection is None:
            return
        try:
            message = connection.recv()
        except (EOFError, OSError):
            self._close_connection(slot)
            return
        self._handle(slot, message, events)

    def _drain(self, slot: _Slot, events: list[Event]) -> None:
        """Everything a worker sent before it exited."""
        connection = slot.connection
        while connection is not None and slot.connection is connection:
            try:
                if not connection.poll():
                    return
                message = connection.recv()
            except (EOFError, OSError):
                self._close_connection(slot)
                return
            self._handle(slot, message, events)

    def _handle(self, slot: _Slot, message: object, events: list[Event]) -> None:
        if isinstance(message, list):
            events.extend(message)
        elif isinstance(message, TrialResult):
            events.append(message)
            self._by_trial.pop(message.number, None)
            if slot.state == "busy":
                slot.state, slot.trial, slot.spec = "idle", None, None
        elif isinstance(message, Ready):
            if slot.state == "starting":
                slot.state = "idle"
            self._start_failures = 0
            if not self._winding_down and not self._closed:
                for other in self._slots:
                    if other.process is None and other.state == "starting":
                        self._spawn(other)  # the first import is done: the others now
        elif isinstance(message, Failed):
            self._load_failed = True
            slot.state = "dead"
            events.append(LoadFailed(message.message))
        else:
            logger.warning("worker %d sent an unexpected %r", slot.index, message)

    def _on_exit(self, slot: _Slot, events: list[Event]) -> None:
        assert slot.process is not None
        returncode = slot.process.returncode
        state, number, spec = slot.state, slot.trial, slot.spec
        self._release(slot)
        if state == "busy" and number is not None:
            self._by_trial.pop(number, None)
            log_path = spec.log_path if spec else None
            events.append(
                TrialResult(
                    number=number,
                    state="FAIL",
                    reason=f"the worker {self._describe_exit(returncode)} during the trial",
                    traceback=_tail(log_path),
                    duration=time.time() - slot.submitted,
                    attempt=spec.attempt if spec else 0,
                )
            )
        if self._closed or self._load_failed or self._winding_down:
            return
        if state == "starting":
            self._start_failures += 1
            if self._start_failures >= self._max_start_failures:
                self._load_failed = True
                tail = (_tail(str(self.worker_log(slot.index))) or "").strip().splitlines()
                last = f": {tail[-1]}" if tail else ""
                events.append(
                    LoadFailed(
                        f"workers exit before they can load the objective "
                        f"({self._describe_exit(returncode)}){last}. See "
                        f"{self.worker_log(slot.index)}."
                    )
                )
                return
        elif state == "busy":
            events.append(Notice(f"worker {slot.index} is replaced by a new process", "debug"))
        self._spawn(slot)

    def _describe_exit(self, returncode: int) -> str:
        if returncode < 0:
            try:
                name = signal.Signals(-returncode).name
            except ValueError:
                name = f"signal {-returncode}"
            if name == "SIGKILL":
                oom = _oom_kill_count()
                if oom is not None and self._oom_kills is not None and oom > self._oom_kills:
                    self._oom_kills = oom
                    return "was killed by the kernel for using too much memory (out of memory)"
                return "was killed (SIGKILL; out of memory, or killed by hand)"
            if name == "SIGSEGV":
                return "crashed with a segmentation fault (SIGSEGV)"
            return f"died of {name}"
        return f"exited with status {returncode}"

    def _kill(self, slot: _Slot) -> None:
        if slot.process is not None and slot.process.poll() is None:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(slot.process.pid, signal.SIGKILL)

    def _close_connection(self, slot: _Slot) -> None:
        if slot.connection is not None:
            with contextlib.suppress(KeyError, ValueError):
                self._selector.unregister(slot.connection.fileno())
            with contextlib.suppress(OSError):
                slot.connection.close()
            slot.connection = None

    def _release(self, slot: _Slot) -> None:
        self._close_connection(slot)
        if slot.pidfd is not None:
            with contextlib.suppress(KeyError, ValueError):
                self._selector.unregister(slot.pidfd)
            with contextlib.suppress(OSError):
                os.close(slot.pidfd)
            slot.pidfd = None
        if slot.process is not None:
            # The worker's own children (data loaders, ...) go with it.
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(slot.process.pid, signal.SIGKILL)
        slot.process = None
        slot.state, slot.trial, slot.spec = "dead", None, None

    def _any_without_pidfd(self) -> bool:
        return any(s.process is not None and s.pidfd is None for s in self._slots)


def _root_logging() -> tuple[int, str] | None:
    """The level and format of this process's root logger, if it has a handler (someone
    called ``logging.basicConfig``): what workers configure theirs with."""
    root = logging.getLogger()
    if not root.handlers:
        return None
    formatter = root.handlers[0].formatter
    format = getattr(formatter, "_fmt", None) if formatter is not None else None
    return root.level, format if isinstance(format, str) else logging.BASIC_FORMAT


def _tail(path: str | None) -> str | None:
    if not path:
        return None
    try:
        with open(path, "rb") as file:
            file.seek(0, os.SEEK_END)
            size = file.tell()
            file.seek(max(0, size - _LOG_TAIL_BYTES))
            text = file.read().decode("utf-8", "replace")
    except OSError:
        return None
    if size > _LOG_TAIL_BYTES:
        text = text.split("\n", 1)[-1]
    return text or None


def _oom_kill_count() -> int | None:
    """The kernel's count of out-of-memory kills in this cgroup (Linux cgroup v2), if known."""
    try:
        with open("/sys/fs/cgroup/memory.events") as file:
            for line in file:
                key, _, value = line.partition(" ")
                if key == "oom_kill":
                    return int(value)
    except (OSError, ValueError):
        return None
    return None
