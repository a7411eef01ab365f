"""Asking for trials off the orchestrator's loop: in a sampler process of its own, or on a
thread; trials asked ahead and never run go back to the queue; a sampler that fails says so.

The journal says which process created each trial (its records carry the writer's id), so
these tests can tell a trial the sampler process asked for from one the thread did."""

from __future__ import annotations

import json
import threading
from collections import Counter
from pathlib import Path
from typing import Any

import contract_objectives as objectives
import optuna
import psutil
import pytest
from conftest import states

from sweeper import _api
from sweeper.orchestrator import sweep
from sweeper.progress import Reporter
from sweeper.study._storage import adopt_trial, open_storage


def _run(workdir: Path, objective: Any, processes: int, **options: Any) -> Any:
    options = {"parallel": 2, "track": False, **options}
    ref, config, notes = _api.prepare(objective, objective=None, options=options)
    return sweep(
        ref, config, reporter=Reporter(), workdir=workdir, notes=notes, sampler_processes=processes
    )


def _creators(journal: Path) -> Counter[str]:
    """How many trials each writing process created (by the prefix of its writer ids)."""
    made: Counter[str] = Counter()
    for line in journal.read_text().splitlines():
        record = json.loads(line)
        if record["op_code"] == 4:  # CREATE_TRIAL
            made[record["worker_id"].rsplit("-", 1)[0]] += 1
    return made


def _study(workdir: Path, name: str) -> optuna.Study:
    storage = optuna.storages.journal.JournalStorage(
        optuna.storages.journal.JournalFileBackend(str(workdir / ".sweeper" / "optuna.journal"))
    )
    return optuna.load_study(study_name=name, storage=storage)


@pytest.mark.parametrize("sampler", ["tpe", "auto", "random"])
def test_a_sampler_process_asks_and_the_sweep_is_the_same(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, sampler: str
) -> None:
    monkeypatch.chdir(tmp_path)
    before = set(psutil.Process().children(recursive=True))
    result = _run(
        tmp_path, objectives.quadratic, 1, n_trials=24, study="q", sampler=sampler, seed=3
    )
    assert result.study is not None
    study = _study(tmp_path, "q")
    assert states(study) == {"COMPLETE": 24}
    for trial in study.trials:  # each parameter recorded once, as the objective saw it
        assert trial.value == objectives.quadratic(optuna.trial.FixedTrial(trial.params))
    makers = _creators(tmp_path / ".sweeper" / "optuna.journal")
    # The orchestrator created the study; the sampler process asked for the trials (the
    # thread only while the process was starting).
    assert sum(makers.values()) == 24 and len(makers) >= 1
    assert max(makers.values()) >= 12, makers
    xs = [t.params["x"] for t in study.trials]
    assert len(set(xs)) == len(xs)  # copies of one seeded sampler were reseeded
    left = set(psutil.Process().children(recursive=True)) - before
    assert not [p for p in left if p.is_running() and p.status() != psutil.STATUS_ZOMBIE]


def test_a_sampler_that_cannot_be_sent_to_a_process_asks_on_the_thread(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)

    class Holding(optuna.samplers.RandomSampler):
        def __init__(self) -> None:
            super().__init__(seed=0)
            self.lock = threading.Lock()  # does not pickle

    result = _run(tmp_path, objectives.quadratic, 1, n_trials=6, study="h", sampler=Holding())
    assert result.study is not None
    assert states(_study(tmp_path, "h")) == {"COMPLETE": 6}
    assert len(_creators(tmp_path / ".sweeper" / "optuna.journal")) == 1  # this process


class _Broken(optuna.samplers.RandomSampler):
    """Fails to sample once the study has two trials."""

    def sample_relative(self, study: Any, trial: Any, search_space: Any) -> dict[str, Any]:
        if trial.number >= 2:
            raise RuntimeError("the sampler broke")
        return {}


@pytest.mark.parametrize("processes", [0, 1])
def test_a_sampler_that_raises_stops_the_sweep_with_its_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, processes: int
) -> None:
    monkeypatch.chdir(tmp_path)
    with pytest.raises(RuntimeError, match="the sampler broke"):
        _run(tmp_path, objectives.quadratic, processes, n_trials=10, study="b", sampler=_Broken())
    counts = states(_study(tmp_path, "b"))
    assert counts.get("RUNNING", 0) == 0  # what ran was recorded, nothing left running


def test_a_trial_another_process_asked_for_takes_its_parameters_in_a_database(
    tmp_path: Path,
) -> None:
    # Optuna's cache over a database writes a parameter only for a trial it has read. A
    # value carried with the trial is applied without asking the sampler (which would have
    # read the trials): the trial must be made known first, or its parameter is lost.
    url = f"sqlite:///{tmp_path / 'study.db'}"
    study = optuna.create_study(storage=open_storage(url).storage, study_name="s")
    study.ask()  # the orchestrator has read the study once
    elsewhere = optuna.load_study(study_name="s", storage=optuna.storages.RDBStorage(url))
    asked = elsewhere.ask()  # a sampler process asks for the next trial
    adopt_trial(study._storage, study._study_id, asked._trial_id)
    live = optuna.Trial(study, asked._trial_id)
    live._fixed_params = {"x": 0.25}  # as a proposal the worker used is applied
    assert live.suggest_float("x", 0, 1) == 0.25
    assert elsewhere._storage.get_trial(asked._trial_id).params == {"x": 0.25}


@pytest.mark.parametrize("sampler", ["tpe", "auto"])
def test_a_database_study_records_every_parameter_a_sampler_process_proposed(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, sampler: str
) -> None:
    monkeypatch.chdir(tmp_path)
    url = f"sqlite:///{tmp_path / 'study.db'}"
    result = _run(
        tmp_path, objectives.quadratic, 1, n_trials=30, study="q", sampler=sampler, storage=url
    )
    assert result.study is not None
    study = optuna.load_study(study_name="q", storage=url)
    assert states(study) == {"COMPLETE": 30}
    for trial in study.trials:
        assert trial.value == objectives.quadratic(optuna.trial.FixedTrial(trial.params))


def test_a_trial_whose_call_could_not_be_stored_fails_and_says_why(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A call the worker does not wait for (a carried value it used) that the storage
    # refuses: the objective ran with something the study does not hold, so its value must
    # not count. The storage's refusal is simulated where the orchestrator applies calls.
    from sweeper.channel._messages import Reply
    from sweeper.orchestrator import _orchestrator

    applied = _orchestrator.answer_call

    def refusing(call: Any, live: optuna.Trial) -> Reply:
        if call.number == 3 and call.method.startswith("suggest_") and not call.wants_reply:
            return Reply(call.number, call.seq, error=KeyError(4), attempt=call.attempt)
        return applied(call, live)

    monkeypatch.setattr(_orchestrator, "answer_call", refusing)
    monkeypatch.chdir(tmp_path)
    _run(tmp_path, objectives.quadratic, 0, n_trials=6, study="q", sampler="random", seed=1)
    study = _study(tmp_path, "q")
    assert states(study) == {"COMPLETE": 5, "FAIL": 1}
    failed = study.trials[3]
    assert failed.state == optuna.trial.TrialState.FAIL
    assert "the sweep could not store its suggest_" in failed.system_attrs["fail_reason"]
