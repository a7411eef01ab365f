"""The backend contract: the same behaviour tests, run on the local backend, on the Modal
backend with only Modal's transport replaced by the in-process stand-in (modal_standin.py),
and on the Modal backend as it is, with modal's own client talking to a fake Modal server
(fake_modal; its containers are processes running modal's container entrypoint).

In-flight count, exactly-once tells, failure modes, pruning, multi-objective, resume after a
dead sweep. Modal-only behaviour (lost and preempted containers) is in test_modal_backend.py.
"""

from __future__ import annotations

import json
import statistics
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import contract_objectives as objectives
import fake_modal
import optuna
import pytest
from conftest import states
from modal_standin import Faults, StandInTransport
from optuna.trial import TrialState

from sweeper import _api
from sweeper.backends._modal import ModalBackend
from sweeper.backends._modal_app import build
from sweeper.backends._modal_setup import make_modal_backend, make_request, settings_from
from sweeper.orchestrator import SweepResult, sweep
from sweeper.progress import Reporter
from sweeper.study._recovery import SweepRecord, register


@dataclass
class Harness:
    kind: str
    workdir: Path
    server: fake_modal.FakeModal | None = None
    """The fake Modal server, for kind "modal-server"."""

    def run(self, objective: Any, faults: Faults | None = None, **options: Any) -> SweepResult:
        options = {"parallel": 2, "track": False, **options}
        ref, config, notes = _api.prepare(objective, objective=None, options=options)
        if self.kind == "local":
            return sweep(ref, config, reporter=Reporter(), workdir=self.workdir, notes=notes)
        config = config.with_(backend="modal")
        if self.kind == "modal-server":  # sweeper's Modal backend as it is, fake credentials
            assert faults is None, "faults on the fake server are set on harness.server.faults"
            backend = make_modal_backend(ref, config, config.parallel or 1)
            return sweep(ref, config, reporter=Reporter(), workdir=self.workdir, backend=backend)
        self.transport = StandInTransport(build(settings_from(config), ref), faults)
        backend = ModalBackend(
            self.transport, config.parallel or 1, make_request, retries=config.retries or 0
        )
        return sweep(ref, config, reporter=Reporter(), workdir=self.workdir, backend=backend)

    def study(self, name: str) -> optuna.Study:
        storage = optuna.storages.journal.JournalStorage(
            optuna.storages.journal.JournalFileBackend(
                str(self.workdir / ".sweeper" / "optuna.journal")
            )
        )
        return optuna.load_study(study_name=name, storage=storage)


@pytest.fixture(params=["local", "modal", "modal-server"])
def harness(
    request: pytest.FixtureRequest, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> Iterator[Harness]:
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("SWEEPER_VOLUME_MOUNT", str(tmp_path / "volume"))
    if request.param != "modal-server":
        yield Harness(request.param, tmp_path)
        return
    with fake_modal.serving(monkeypatch) as server:
        yield Harness(request.param, tmp_path, server)
        assert server.invalid == [] and server.unimplemented == [] and server.errors == []


def _enqueue(harness: Harness, name: str, params: list[dict[str, Any]]) -> None:
    (harness.workdir / ".sweeper").mkdir(exist_ok=True)
    study = optuna.create_study(
        study_name=name,
        storage=optuna.storages.journal.JournalStorage(
            optuna.storages.journal.JournalFileBackend(
                str(harness.workdir / ".sweeper" / "optuna.journal")
            )
        ),
        load_if_exists=True,
    )
    for item in params:
        study.enqueue_trial(item)


def test_runs_a_conditional_objective_and_tells_every_trial_once(harness: Harness) -> None:
    result = harness.run(objectives.quadratic, n_trials=12, study="q")
    study = harness.study("q")
    assert result.study is not None
    assert states(study) == {"COMPLETE": 12}  # none left running, none told twice
    assert [t.number for t in study.trials] == list(range(12))
    for trial in study.trials:
        expected = {"x", "kind"} | ({"shift"} if trial.params["kind"] == "shifted" else set())
        assert set(trial.params) == expected
        assert trial.value == objectives.quadratic(optuna.trial.FixedTrial(trial.params))


@pytest.mark.parametrize("parallel", [1, 3])
def test_exactly_parallel_in_flight_and_refilled_at_once(
    harness: Harness, parallel: int, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    folder = tmp_path / "runs"
    folder.mkdir()
    monkeypatch.setenv("CONTRACT_DIR", str(folder))
    harness.run(
        objectives.timed, n_trials=3 * parallel, parallel=parallel, study="t", sampler="random"
    )
    runs = [json.loads(p.read_text()) for p in folder.glob("*.json")]
    assert len(runs) == 3 * parallel
    events = sorted([(r["start"], 1) for r in runs] + [(r["end"], -1) for r in runs])
    in_flight = peak = 0
    for _, change in events:
        in_flight += change
        peak = max(peak, in_flight)
    assert peak == parallel
    ends = sorted(r["end"] for r in runs)
    # The stand-in adds latency both ways; with the fake server, a result and the next
    # input each take a few requests between processes.
    slack = {"local": 0.2, "modal": 0.4, "modal-server": 1.0}[harness.kind]
    waits = [
        min(run["start"] - end for end in ends if end <= run["start"] + 0.001)
        for run in sorted(runs, key=lambda r: r["start"])[parallel:]
    ]
    # Refilled at once as a rule (the median: a busy machine may delay a few), and never
    # long after (a poll timeout, a barrier, a grace period).
    assert statistics.median(waits) < slack, waits
    assert max(waits) < 5.0, waits
    if harness.kind == "modal":
        assert harness.transport.sessions[0].max_in_flight == parallel
    if harness.kind == "modal-server":
        assert harness.server is not None
        calls = list(harness.server.service.functions.calls.values())
        assert len(calls) == 3 * parallel  # one call per trial
        assert max_outstanding(harness.server) == parallel  # inputs Modal held at once


def max_outstanding(server: fake_modal.FakeModal) -> int:
    """The most trials' calls Modal held at once: each call of run_trial (one input each)
    is out from the request that makes it until its container puts its output."""
    functions = server.service.functions
    (function,) = [f for f in functions.functions.values() if f.name == "run_trial"]
    changes = []
    for rpc in server.rpcs:
        if rpc.name == "FunctionMap" and rpc.request.function_id == function.function_id:
            changes.append((rpc.at, 1))
        elif rpc.name == "FunctionPutOutputs":
            for output in rpc.request.outputs:
                item = functions.inputs.get(output.input_id)
                if item is not None and item.call.function is function:
                    changes.append((rpc.at, -1))
    out = peak = 0
    for _, change in sorted(changes):
        out += change
        peak = max(peak, out)
    return peak


def test_failure_modes(harness: Harness) -> None:
    modes = ["raise", "nan", "none", "text", "sleep", "prune", "ok", "pair", "ok"]
    _enqueue(harness, "modes", [{"mode": m} for m in modes])
    # The sleep mode sleeps 4 s; the timeout runs from the call, a container's start
    # included, so the instant trials need room on a busy machine.
    harness.run(objectives.modes, n_trials=len(modes), study="modes", trial_timeout=3.0)
    trials = harness.study("modes").trials
    by_mode = {t.params["mode"]: t for t in trials if t.params["mode"] not in ("ok", "pair")}
    reasons = {
        "raise": "ValueError: bad value in trial",
        "nan": "NaN cannot be told",
        "none": "returned None",
        "text": "which is not a number",
        "sleep": "ran longer than the trial timeout of 3s",
    }
    for mode, reason in reasons.items():
        trial = by_mode[mode]
        assert trial.state == TrialState.FAIL, mode
        assert reason in trial.system_attrs["fail_reason"], (mode, trial.system_attrs)
    assert "Traceback" in by_mode["raise"].system_attrs["fail_reason"]
    assert by_mode["prune"].state == TrialState.PRUNED
    assert [t.state for t in trials if t.params["mode"] == "ok"] == [TrialState.COMPLETE] * 2
    pair = next(t for t in trials if t.params["mode"] == "pair")
    assert "returned 2 values but the study has 1 direction" in pair.system_attrs["fail_reason"]


def test_pruning_and_reports(harness: Harness) -> None:
    harness.run(
        objectives.learning,
        n_trials=20,
        study="learning",
        direction="maximize",
        # At random, some trials always learn slower than the median; a model-based sampler
        # may find the fast corner at once and leave nothing to prune.
        sampler="random",
        pruner="median",
        pruner_args={"n_startup_trials": 3},
    )
    trials = harness.study("learning").trials
    counts = states(harness.study("learning"))
    assert counts.get("PRUNED", 0) >= 1 and counts.get("COMPLETE", 0) >= 3
    for trial in trials:
        steps = sorted(trial.intermediate_values)
        assert steps == list(range(len(steps)))  # each report once, none lost
        if trial.state == TrialState.COMPLETE:
            assert len(steps) == 12


def test_multi_objective(harness: Harness) -> None:
    harness.run(
        objectives.two_objectives, n_trials=6, study="mo", direction=["minimize", "minimize"]
    )
    study = harness.study("mo")
    assert states(study) == {"COMPLETE": 6}
    for trial in study.trials:
        assert trial.values == list(
            objectives.two_objectives(optuna.trial.FixedTrial(trial.params))
        )


def test_resume_reruns_what_a_dead_sweep_left_running(harness: Harness) -> None:
    result = harness.run(objectives.resumable, n_trials=1, study="resume", parallel=1)
    assert result.study is not None
    study = harness.study("resume")
    # A sweep that died (this pid and start time belong to no live process) left trial 1
    # running with its parameter chosen.
    storage = study._storage
    study_id = storage.get_study_id_from_name("resume")
    dead = SweepRecord(
        id="dead",
        host=SweepRecord.for_this_process().host,
        pid=2**22 + 7,
        create_time=1.0,
        started="2000-01-01T00:00:00",
    )
    register(storage, study_id, dead)
    orphan = study.ask()
    orphan.suggest_float("x", 0, 1)
    result = harness.run(objectives.resumable, n_trials=2, study="resume", parallel=1)
    trials = harness.study("resume").trials
    assert trials[orphan.number].state == TrialState.FAIL
    rerun = [t for t in trials if t.system_attrs.get("sweeper:retry_of") == orphan.number]
    assert len(rerun) == 1 and rerun[0].state == TrialState.COMPLETE
    assert rerun[0].params == {"x": orphan.params["x"]}
    assert states(harness.study("resume")) == {"COMPLETE": 3, "FAIL": 1}
