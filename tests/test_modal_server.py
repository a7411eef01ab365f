"""sweeper's real Modal path against a fake Modal server (tests/fake_modal).

Here nothing of Modal is replaced on the client's side: ``app.run()``, ``Function.map.aio``,
``Function.spawn``, ``modal.Queue``, ``modal.Volume``, serialization and ``modal.Retries`` are
modal's own code, sending modal's own requests to a server that speaks Modal's gRPC API on a
local socket. Containers are processes that run modal's container entrypoint and sweeper's
``run_trial_remote``. Faults are injected on the server, where Modal produces them.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import contract_objectives as objectives
import fake_modal
import optuna
import pytest
from conftest import states
from fake_modal import FakeModal, InputView, Rpc, Running
from modal_proto import api_pb2
from optuna.storages.journal._storage import JournalOperation

from sweeper import _api
from sweeper.backends._modal import ModalBackend, make_modal_backend
from sweeper.channel import _queue
from sweeper.orchestrator import SweepResult, sweep
from sweeper.progress import Reporter

TESTS = Path(__file__).parent

IDLE_RPCS_PER_SECOND = 0.5
"""What the orchestrator may send while its trials run and call nothing (long polls and
Modal's own heartbeats only)."""


@pytest.fixture
def modal_server(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[FakeModal]:
    """A fake Modal server, with modal's client pointed at it (fake credentials)."""
    monkeypatch.chdir(tmp_path)
    for key in list(os.environ):
        if key.startswith("SWEEPER_"):
            monkeypatch.delenv(key)
    monkeypatch.setenv("SWEEPER_UI_HOST", "127.0.0.1")  # the hub's UI: only the tunnel
    with fake_modal.serving(monkeypatch) as server:
        yield server


def trial(number: int) -> Any:
    """Picks the input of sweeper's trial ``number`` (its ``TrialRequest``)."""

    def match(view: InputView) -> bool:
        return view.function == "run_trial" and view.args[0].spec.number == number

    return match


def calls_in(rpc: Rpc) -> list[str]:
    """The trial calls (their methods) that a QueuePut carries to the orchestrator."""
    if rpc.name != "QueuePut" or rpc.request.partition_key != _queue.UP.encode():
        return []
    return [
        call.method
        for item in map(fake_modal.decode, rpc.request.values)
        if item[0] == "calls"
        for call in item[1]
    ]


def after_delivered(method: str) -> Any:
    """The first batch of calls a container sends once one with ``method`` has arrived."""

    def on(rpc: Rpc, run: Running | None) -> bool:
        assert run is not None
        earlier = [c for r in run.rpcs[:-1] if not r.dropped for c in calls_in(r)]
        return bool(calls_in(rpc)) and method in earlier

    return on


class Sweep:
    """Runs sweeps through sweeper's real Modal backend (``make_modal_backend``)."""

    def __init__(self, workdir: Path) -> None:
        self.workdir = workdir
        self.backend: ModalBackend | None = None

    def run(self, objective: Any, **options: Any) -> SweepResult:
        options = {"parallel": 2, "track": False, "backend": "modal", **options}
        ref, config, notes = _api.prepare(objective, objective=None, options=options)
        self.backend = make_modal_backend(ref, config, config.parallel or 1)
        return sweep(
            ref,
            config,
            reporter=Reporter(),
            workdir=self.workdir,
            notes=notes,
            backend=self.backend,
        )

    def study(self, name: str) -> optuna.Study:
        storage = optuna.storages.journal.JournalStorage(
            optuna.storages.journal.JournalFileBackend(
                str(self.workdir / ".sweeper" / "optuna.journal")
            )
        )
        return optuna.load_study(study_name=name, storage=storage)


@pytest.fixture
def sweeps(tmp_path: Path) -> Sweep:
    return Sweep(tmp_path)


def assert_clean(server: FakeModal) -> None:
    """Every request was one Modal accepts, and the fake answered all of them."""
    assert server.invalid == []
    assert server.unimplemented == []
    assert server.errors == []


# -- a sweep, and what it sends ----------------------------------------------------------------


def test_a_sweep_runs_every_trial_once_with_parallel_in_flight(
    modal_server: FakeModal, sweeps: Sweep, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("CONTRACT_DIR", str(tmp_path))  # `timed` sleeps 0.2-0.5 s
    sweeps.run(objectives.timed, n_trials=6, parallel=2, study="t", sampler="random")
    study = sweeps.study("t")
    assert states(study) == {"COMPLETE": 6}
    assert [t.number for t in study.trials] == list(range(6))
    functions = modal_server.service.functions
    (run_trial,) = [f for f in functions.functions.values() if f.name == "run_trial"]
    (call,) = [c for c in functions.calls.values() if c.function is run_trial]
    assert call.call_type == api_pb2.FUNCTION_CALL_TYPE_MAP and call.return_exceptions
    assert len(call.inputs) == 6 and all(i.done and i.starts == 1 for i in call.inputs.values())
    assert call.max_outstanding == 2  # exactly `parallel` inputs were out at once
    assert run_trial.max_running == 2  # and ran at once,
    assert len(run_trial.containers) == 2  # on two containers that took turns
    assert_clean(modal_server)


def test_idle_polling_is_long_polling(
    modal_server: FakeModal, sweeps: Sweep, tmp_path: Path
) -> None:
    objective = tmp_path / "idle.py"
    objective.write_text(
        "import time\n\n"
        "def objective(trial):\n"
        "    x = trial.suggest_float('x', 0, 1)\n"
        "    time.sleep(6)\n"
        "    return x\n"
    )
    sweeps.run(str(objective), n_trials=1, parallel=1, study="idle")
    rpcs = list(modal_server.rpcs)
    # From the orchestrator's last answer to the trial (its parameter) until the trial's
    # result, the trial calls nothing: what the orchestrator sends then is its idle polling.
    answer = [r for r in rpcs if r.name == "QueuePut" and r.request.partition_key[:1] == b"r"][-1]
    (result,) = [r for r in rpcs if r.name == "FunctionPutOutputs"]
    quiet = [r for r in rpcs if answer.at < r.at < result.at and not r.from_container]
    seconds = result.at - answer.at
    assert seconds > 4
    assert len(quiet) / seconds <= IDLE_RPCS_PER_SECOND, fake_modal.summary(quiet)
    assert_clean(modal_server)


# -- faults ------------------------------------------------------------------------------------


def journal_ops(sweeps: Sweep, op: Any) -> list[dict[str, Any]]:
    backend = optuna.storages.journal.JournalFileBackend(
        str(sweeps.workdir / ".sweeper" / "optuna.journal")
    )
    return [log for log in backend.read_logs(0) if log["op_code"] == op]


def test_a_preempted_trial_is_rerun_as_the_same_trial(
    modal_server: FakeModal, sweeps: Sweep
) -> None:
    # Trial 0's container dies as it sends the batch of calls after its first reports: those
    # arrived, the rest never leaves it. Modal runs the same input again on a new container.
    fault = modal_server.faults.add("preempt", match=trial(0), on=after_delivered("report"))
    sweeps.run(objectives.resumable, n_trials=2, parallel=1, study="pre")
    trials = sweeps.study("pre").trials
    assert states(sweeps.study("pre")) == {"COMPLETE": 2}
    first = trials[0]
    # The new attempt found the checkpoint the first one committed to the Volume.
    assert first.user_attrs["starts"] == 2
    assert first.intermediate_values == {s: first.params["x"] + s for s in range(4)}
    functions = modal_server.service.functions
    (rerun,) = [functions.inputs[i] for i in fault.fired]
    assert rerun.starts == 2 and rerun.retry_count == 0  # the same input, not a retry
    dead, new = rerun.runs
    assert dead != new and modal_server.requests("FunctionRetryInputs") == []
    # The first attempt's first reports reached the orchestrator; its last batch never did.
    (lost,) = [r for r in modal_server.rpcs if r.dropped]
    assert lost.peer == dead and lost.name == "QueuePut"
    delivered = [
        c for r in modal_server.rpcs if r.peer == dead and not r.dropped for c in calls_in(r)
    ]
    assert "report" in delivered and calls_in(lost)
    # Each report is in the study once: the new attempt's repeats were not written again.
    reports = journal_ops(sweeps, JournalOperation.SET_TRIAL_INTERMEDIATE_VALUE)
    trial_ids = {t.number: t._trial_id for t in trials}
    assert len([r for r in reports if r["trial_id"] == trial_ids[0]]) == 4
    assert_clean(modal_server)
