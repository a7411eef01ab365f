"""sweeper.run in a real Jupyter kernel, cell by cell, the way an Optuna user works there.

What ``study.optimize`` does in a cell, ``sweeper.run`` does in parallel: a broken objective
raises (and "Run All" stops), printing and logging show in the cell, a study is never
joined by another objective, an interrupt raises ``KeyboardInterrupt`` once everything is
recorded. Between cells the workers (and Aim's writer) stay up for the same objective, and
nothing is left running once the kernel goes.
"""

from __future__ import annotations

import contextlib
import queue
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import pytest
from conftest import Project, states

jupyter_client = pytest.importorskip("jupyter_client")
psutil = pytest.importorskip("psutil")


@dataclass
class Cell:
    """What a cell did: its reply and every output message, in order."""

    status: str
    reply: dict[str, Any]
    outputs: list[dict[str, Any]] = field(default_factory=list)

    @property
    def stream(self) -> str:
        return "".join(o["content"]["text"] for o in self.outputs if o["msg_type"] == "stream")

    @property
    def plain(self) -> list[str]:
        """The text/plain of every display and display update."""
        return [
            o["content"]["data"].get("text/plain", "")
            for o in self.outputs
            if o["msg_type"] in ("display_data", "update_display_data", "execute_result")
        ]

    @property
    def error(self) -> str:
        return "\n".join(self.reply.get("traceback", []))


class Kernel:
    """A python3 kernel in the project folder, run cell by cell."""

    def __init__(self, project: Project) -> None:
        self.manager = jupyter_client.KernelManager(kernel_name="python3")
        self.manager.start_kernel(cwd=str(project.path), env=project.env)
        self.client = self.manager.client()
        self.client.start_channels()
        self.client.wait_for_ready(timeout=60)
        self._outputs: dict[str, list[dict[str, Any]]] = {}
        self.pid = int(self.run("import os; print(os.getpid())").stream)

    def send(self, code: str) -> str:
        """Queue ``code`` as the next cell (as "Run All" does); returns its message id."""
        msg_id: str = self.client.execute(code, stop_on_error=True)
        self._outputs[msg_id] = []
        return msg_id

    def wait(self, msg_id: str, timeout: float = 120) -> Cell:
        deadline = time.monotonic() + timeout
        reply = None
        while reply is None:
            with contextlib.suppress(queue.Empty):
                message = self.client.get_shell_msg(timeout=0.1)
                if message["parent_header"].get("msg_id") == msg_id:
                    reply = message["content"]
            self._drain_iopub()
            if time.monotonic() > deadline:
                raise TimeoutError(f"no reply to the cell within {timeout}s")
        time.sleep(0.2)  # outputs sent just before the reply
        self._drain_iopub()
        return Cell(reply["status"], reply, self._outputs.pop(msg_id))

    def run(self, code: str, timeout: float = 120) -> Cell:
        return self.wait(self.send(code), timeout)

    def interrupt(self) -> None:
        self.manager.interrupt_kernel()

    def processes(self) -> list[Any]:
        """The kernel's child processes, all the way down."""
        return [p for p in psutil.Process(self.pid).children(recursive=True) if _alive(p)]

    def _drain_iopub(self) -> None:
        while True:
            try:
                message = self.client.get_iopub_msg(timeout=0.01)
            except queue.Empty:
                return
            parent = message["parent_header"].get("msg_id")
            if parent in self._outputs and message["msg_type"] not in ("status", "execute_input"):
                self._outputs[parent].append(message)

    def shutdown(self) -> None:
        self.client.stop_channels()
        self.manager.shutdown_kernel(now=False)  # as closing the notebook does


@contextlib.contextmanager
def kernel_in(project: Project) -> Iterator[Kernel]:
    kernel = Kernel(project)
    try:
        yield kernel
    finally:
        with contextlib.suppress(Exception):
            kernel.shutdown()


def _alive(process: Any) -> bool:
    try:
        return bool(process.is_running() and process.status() != psutil.STATUS_ZOMBIE)
    except psutil.Error:
        return False


def _role(process: Any) -> str:
    with contextlib.suppress(psutil.Error):
        command = " ".join(process.cmdline())
        for role in ("_local_worker", "tracking._hub", "_sampler_process"):
            if role in command:
                return role
    return "other"


SETUP = """
import logging, os, time
import sweeper
logging.basicConfig(level=logging.INFO, format="%(levelname)s %(message)s")

def objective(trial):
    x = trial.suggest_float("x", -10, 10)
    kind = trial.suggest_categorical("kind", ["a", "b"])
    trial.set_user_attr("pid", os.getpid())
    trial.set_user_attr("t0", time.time())
    print(f"hello from a trial, x={x:.2f}")
    logging.info("logged by trial %d", trial.number)
    return (x - 2) ** 2 + (kind == "b")
"""

FIRST = """
started = time.time()
study = sweeper.run(objective, n_trials=4, parallel=2)
print("first start", min(t.user_attrs["t0"] for t in study.trials) - started)
"""

AGAIN = """
started = time.time()
study = sweeper.run(objective, n_trials=4, parallel=2)
mine = [t for t in study.trials if t.user_attrs["t0"] >= started]
print("second start", min(t.user_attrs["t0"] for t in mine) - started)
"""

EDITED = """
def objective(trial):
    x = trial.suggest_float("x", 5, 6)  # another range
    kind = trial.suggest_categorical("kind", ["a", "b", "c"])  # and another choice
    return (x - 2) ** 2 + (kind == "b")

edited = sweeper.run(objective, n_trials=4, parallel=2, track=False)
"""

LAMBDAS = """
a = sweeper.run(lambda t: t.suggest_float("y", 0, 1), n_trials=2, parallel=2, track=False)
b = sweeper.run(lambda t: -t.suggest_float("y", 0, 1), n_trials=2, parallel=2, track=False)
"""

BROKEN = """
def broken(trial):
    x = trial.suggest_float("x", 0, 1)
    raise ValueError(f"no good: {x:.2f}")

sweeper.run(broken, n_trials=3, parallel=2, track=False)
"""


@pytest.mark.timeout(300)
def test_a_session_as_an_optuna_user_has_it(project: Project) -> None:
    with kernel_in(project) as kernel:
        assert kernel.run(SETUP).status == "ok"
        first = kernel.run(FIRST)
        assert first.status == "ok", first.error
        # print and logging in the objective show in the cell, prefixed by the trial.
        assert "] hello from a trial, x=" in first.stream
        assert "[trial 0] hello from a trial" in first.stream
        assert "INFO logged by trial" in first.stream
        # Every display has a text form, for text front ends and logs.
        assert first.plain and not any(p.startswith("<IPython") for p in first.plain)
        assert any("4/4 done" in p for p in first.plain)
        assert any("Study 'objective': 4 trials" in p for p in first.plain)
        workers = {p.pid for p in kernel.processes() if _role(p) == "_local_worker"}
        hubs = {p.pid for p in kernel.processes() if _role(p) == "tracking._hub"}
        assert len(workers) == 2 and len(hubs) == 1  # kept for the next cell

        again = kernel.run(AGAIN)
        assert again.status == "ok", again.error
        study = project.study("objective")
        assert len(study.trials) == 8  # the same objective continues its study
        # ... on the workers of the last cell, tracked by the same Aim writer.
        assert {t.user_attrs["pid"] for t in study.trials[4:]} <= workers
        assert {p.pid for p in kernel.processes() if _role(p) == "tracking._hub"} == hubs
        print(first.stream.splitlines()[-1], "/", again.stream.splitlines()[-1])

        # An edited objective is not mixed into the old study (nor fails on its choices).
        edited = kernel.run(EDITED)
        assert edited.status == "ok", edited.error
        assert any("starts study 'objective-2'" in p for p in edited.plain)
        assert states(project.study("objective-2")) == {"COMPLETE": 4}
        assert all(5 <= t.params["x"] <= 6 for t in project.study("objective-2").trials)
        assert len(project.study("objective").trials) == 8
        assert {p.pid for p in kernel.processes() if _role(p) == "_local_worker"}.isdisjoint(
            workers
        )  # another objective: the kept workers stopped, new ones run it

        # Two lambdas are two objectives: two studies.
        assert kernel.run(LAMBDAS).status == "ok"
        names = kernel.run("print(a.study_name, b.study_name)").stream.split()
        assert names == ["lambda", "lambda-2"]

        # A study named with study= is never joined by another objective...
        refused = kernel.run(
            "def objective(trial):\n"
            "    return trial.suggest_float('x', -10, 10)\n"
            "sweeper.run(objective, study='objective', n_trials=1)"
        )
        assert refused.status == "error" and refused.reply["ename"] == "StorageError"
        assert "resume=True" in refused.reply["evalue"]
        assert "_sweep.py" not in refused.error  # raised from sweeper.run, in its words
        assert "--" not in refused.reply["evalue"]
        # ... unless asked to.
        resumed = kernel.run(
            "sweeper.run(objective, study='objective', n_trials=1, resume=True, track=False)"
        )
        assert resumed.status == "ok", resumed.error
        assert len(project.study("objective").trials) == 9

        # An objective that fails every trial raises, and "Run All" stops there.
        broken = kernel.send(BROKEN)
        queued = kernel.send("print('the next cell ran')")
        failed = kernel.wait(broken)
        assert failed.status == "error" and failed.reply["ename"] == "SweepFailed"
        assert "every trial of this sweep failed (3)" in failed.reply["evalue"]
        # ... with the first failure's traceback, pointing at the line in the cell.
        assert 'raise ValueError(f"no good: {x:.2f}")' in failed.reply["evalue"]
        assert "Cell In[" in failed.reply["evalue"]
        assert "_orchestrator.py" not in failed.error
        assert kernel.wait(queued).status == "aborted"

        left = kernel.processes()
        assert left
        kernel.shutdown()
    # Closing the notebook stops every process sweeper started.
    deadline = time.monotonic() + 30
    while any(_alive(p) for p in left) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert not [(p.pid, _role(p)) for p in left if _alive(p)]


SLOW = """
import time
import sweeper

def objective(trial):
    x = trial.suggest_float("x", 0, 1)
    time.sleep(0.5)
    return x

def stuck(trial):
    x = trial.suggest_float("x", 0, 1)
    print("started", flush=True)
    time.sleep(120)
    return x
"""


@pytest.mark.timeout(300)
def test_interrupting_the_kernel_raises_once_everything_is_recorded(project: Project) -> None:
    with kernel_in(project) as kernel:
        assert kernel.run(SLOW).status == "ok"
        sweep = kernel.send("study = sweeper.run(objective, study='k', n_trials=100, parallel=2)")
        queued = kernel.send("print('the next cell ran')")
        _wait_for(lambda: "k" in project.study_names() and len(project.study("k").trials) >= 4)
        kernel.interrupt()
        stopped = kernel.wait(sweep, timeout=60)
        assert stopped.status == "error", stopped.stream
        assert stopped.reply["ename"] == "SweepInterrupted"  # a KeyboardInterrupt
        assert "Ctrl-C" not in " ".join(stopped.plain)
        assert kernel.wait(queued).status == "aborted"  # "Run All" stops
        study = project.study("k")
        assert 4 <= len(study.trials) < 100
        counts = states(study)  # the running trials finished; one asked ahead may wait
        assert counts.keys() <= {"COMPLETE", "WAITING"} and counts.get("WAITING", 0) <= 1
        held = kernel.run(
            "import sys\n"
            "assert isinstance(sys.last_value, KeyboardInterrupt)\n"
            "print(len(sys.last_value.study.trials))"
        )
        assert held.status == "ok", held.error
        assert int(held.stream) == len(study.trials)

        # A second interrupt stops the running trials at once.
        sweep = kernel.send("sweeper.run(stuck, study='stuck', n_trials=4, parallel=2)")
        _wait_for(lambda: _running_and_printing(project, "stuck", 2))
        kernel.interrupt()
        time.sleep(0.5)
        kernel.interrupt()
        stopped = kernel.wait(sweep, timeout=60)  # the trials would sleep 120s
        assert stopped.status == "error" and stopped.reply["ename"] == "SweepInterrupted"
        trials = project.study("stuck").trials
        assert [t.state.name for t in trials if t.state.name != "WAITING"] == ["FAIL", "FAIL"]
        assert all("interrupted" in t.system_attrs["fail_reason"] for t in trials[:2])


def _running_and_printing(project: Project, name: str, count: int) -> bool:
    if name not in project.study_names():
        return False
    running = [t for t in project.study(name).trials if t.state.name == "RUNNING"]
    logs = project.path / ".sweeper" / "logs" / name
    printed = [
        t
        for t in running
        if (logs / f"trial-{t.number}.log").exists()
        and "started" in (logs / f"trial-{t.number}.log").read_text()
    ]
    return len(printed) >= count


def _wait_for(condition: Any, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise TimeoutError("the sweep did not get there in time")
        time.sleep(0.1)
