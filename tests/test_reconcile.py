"""Storage is the source of truth for Aim (tracker issue 14): what the writer writes, how a
repo is reconciled with the storage, repaired on demand, and kept when the writer lags."""

from __future__ import annotations

import json
import subprocess
import sys
import threading
from pathlib import Path
from typing import Any

import optuna
import pytest
from aim_checks import assert_repo_matches_storage, indexed_runs, series, wait_for_writer
from conftest import REPO, Project
from optuna.distributions import FloatDistribution
from optuna.trial import TrialState

aim = pytest.importorskip("aim")

from sweeper.tracking import _tracker  # noqa: E402
from sweeper.tracking._aimstore import RunStore  # noqa: E402
from sweeper.tracking._events import (  # noqa: E402
    Logged,
    Reconcile,
    Reported,
    StudyOpened,
    StudyProgress,
    TrialFinished,
    TrialStarted,
)
from sweeper.tracking._modal import split_for_queue  # noqa: E402
from sweeper.tracking._reconcile import LEDGER_FILE, RUNS_FILE, plan  # noqa: E402
from sweeper.tracking._tracker import BatchingTracker, StudySource  # noqa: E402
from sweeper.tracking._writer import AimWriter  # noqa: E402

X = FloatDistribution(0, 1)


def _study(storage: Any, name: str, trials: list[dict[str, Any]]) -> optuna.Study:
    """A study whose trials are ``trials`` (state, x, curve, system_attrs), in order."""
    study = optuna.create_study(study_name=name, storage=storage, load_if_exists=True)
    for spec in trials:
        state = spec.get("state", TrialState.COMPLETE)
        study.add_trial(
            optuna.trial.create_trial(
                state=state,
                value=spec["x"] if state == TrialState.COMPLETE else None,
                params={"x": spec["x"]},
                distributions={"x": X},
                intermediate_values=spec.get("curve", {}),
                system_attrs=spec.get("system_attrs", {}),
            )
        )
    return study


def _events(study: str, trial: optuna.trial.FrozenTrial, *, finish: bool = True) -> list[Any]:
    """What the orchestrator sends about ``trial``."""
    events: list[Any] = [TrialStarted(study, trial.number, trial.number, 0.0)]
    events += [Reported(study, trial.number, s, v) for s, v in trial.intermediate_values.items()]
    if finish:
        values = tuple(trial.values) if trial.state == TrialState.COMPLETE else None
        events.append(
            TrialFinished(
                study, trial.number, trial.number, trial.state.name, values, 0.1, trial.params
            )
        )
    return events


def _dump(root: Path, kind: str, run_hash: str) -> dict[tuple[Any, ...], str]:
    """A run's database, keys decoded, its hash and times blanked."""
    from aim.storage import encoding
    from aim.storage.rockscontainer import RocksContainer

    container = RocksContainer(str(root / kind / "chunks" / run_hash), read_only=True)
    dumped = {}
    for key, value in container.items():
        path = tuple("H" if part == run_hash else part for part in encoding.decode_path(key))
        decoded: Any = encoding.decode(value)
        if path[-1] == "end_time" or (len(path) > 2 and path[-2] == "time"):
            decoded = "T"
        dumped[path] = repr(decoded)
    container.close()
    return dumped


def test_a_run_is_the_keys_aim_run_writes(tmp_path: Path) -> None:
    from aim.sdk.repo import Repo
    from aim.sdk.run import Run

    repo = Repo.from_path(str(tmp_path), init=True)
    run = Run(repo=repo, system_tracking_interval=None, capture_terminal_logs=False)
    run["sweeper"] = {"study": "s", "root": 0, "kind": "trial"}
    run["hparams", "x"] = 0.5
    for step in (0, 2, 1):
        run.track(step / 3, name="objective", step=step)
    run.track(1.0, name="loss", context={"subset": "valid"})
    run.track(2.0, name="loss", context={"subset": "valid"})
    reference = run.hash
    run.close()

    ours = RunStore(Path(repo.path), "a" * 24)
    ours.open()
    ours.set_attr(("sweeper",), {"study": "s", "root": 0, "kind": "trial"})
    ours.set_attr(("hparams", "x"), 0.5)
    for step in (0, 2, 1):
        ours.track("objective", step / 3, step, 1.0)
    ours.track("loss", 1.0, None, 1.0, {"subset": "valid"})
    ours.track("loss", 2.0, None, 1.0, {"subset": "valid"})
    ours.set_end_time(5.0)
    ours.close()
    for kind in ("meta", "seqs"):
        assert _dump(Path(repo.path), kind, "a" * 24) == _dump(Path(repo.path), kind, reference)


def _kill_writer_midway(repo: Path, events: list[Any]) -> None:
    """A writer process that writes ``events`` and is killed before it closes anything."""
    code = (
        "import pickle, os, sys\n"
        "from sweeper.tracking._writer import AimWriter\n"
        "writer = AimWriter(sys.argv[1])\n"
        "writer.apply(pickle.loads(sys.stdin.buffer.read()))\n"
        "writer.flush()\n"
        "os._exit(9)\n"
    )
    import pickle

    subprocess.run(
        [sys.executable, "-c", code, str(repo)],
        input=pickle.dumps(events),
        cwd=REPO,
        check=False,
        timeout=120,
    )


def test_runs_a_killed_writer_left_open_are_rebuilt_and_none_is_duplicated(
    tmp_path: Path,
) -> None:
    storage = optuna.storages.InMemoryStorage()
    study = _study(
        storage,
        "s",
        [{"x": i / 10, "curve": {s: i + s for s in range(4)}} for i in range(4)]
        + [{"x": 0.9, "state": TrialState.FAIL}],
    )
    trials = study.get_trials()
    repo = tmp_path / "aim"
    # The writer saw trial 0 finish, trials 1 and 2 start and report part of their curve,
    # and nothing of 3 and 4; then it was killed.
    events = [StudyOpened("s", ("minimize",)), *_events("s", trials[0])]
    events += _events("s", trials[1], finish=False)[:3] + _events("s", trials[2], finish=False)
    _kill_writer_midway(repo, events)
    runs_before = (repo / RUNS_FILE).read_text().splitlines()
    assert len(runs_before) == 4  # the study and trials 0-2, each before its databases

    reconcile = plan(storage, "s", repo)
    # 0 is tracked if its close ended before the kill; the others are to be written.
    assert {1, 2, 3, 4} <= {r.number for r in reconcile.records} <= {0, 1, 2, 3, 4}
    writer = AimWriter(repo)
    writer.apply([reconcile])
    writer.close()
    assert assert_repo_matches_storage(repo, storage, "s") == 5
    assert (repo / RUNS_FILE).read_text().splitlines()[:4] == runs_before  # the same runs
    assert plan(storage, "s", repo).records == ()  # all tracked now: nothing to send again


def test_a_rebuild_replaces_params_and_curve_and_keeps_logged_metrics(tmp_path: Path) -> None:
    storage = optuna.storages.InMemoryStorage()
    study = _study(storage, "s", [{"x": 0.25, "curve": {0: 1.0, 1: 0.5}}])
    (trial,) = study.get_trials()
    repo = tmp_path / "aim"
    writer = AimWriter(repo)
    writer.apply([StudyOpened("s", ("minimize",))])
    # What an earlier attempt wrote: more steps, other values, a logged metric.
    writer.apply([TrialStarted("s", 0, 0, 0.0)])
    writer.apply([Reported("s", 0, step, 9.0) for step in range(5)])
    writer.apply([Logged("s", 0, {"loss": 3.0}, step=7)])
    writer.flush()
    writer.apply([plan(storage, "s")])
    writer.close()
    assert_repo_matches_storage(repo, storage, "s")
    (run,) = [r for r in indexed_runs(repo, "s") if r.name == "trial 0"]
    assert series(run, "objective") == trial.intermediate_values  # steps 2-4 are gone
    assert series(run, "loss") == {7: 3.0}  # what the objective logged is kept
    assert run["result"]["value"] == 0.25


def test_a_trial_that_became_a_rerun_of_another_leaves_no_run(tmp_path: Path) -> None:
    storage = optuna.storages.InMemoryStorage()
    _study(
        storage,
        "s",
        [
            {"x": 0.1, "state": TrialState.FAIL},  # trial 0, interrupted
            {"x": 0.1, "system_attrs": {"sweeper:retry_of": 0}},  # trial 1 reran it
        ],
    )
    repo = tmp_path / "aim"
    writer = AimWriter(repo)
    # Trial 1 had started under its own number in a sweep that was killed.
    writer.apply([StudyOpened("s", ("minimize",)), TrialStarted("s", 1, 1, 0.0)])
    writer.flush()
    writer.apply([plan(storage, "s", repo)])
    writer.close()
    assert assert_repo_matches_storage(repo, storage, "s") == 1  # root 0, showing trial 1
    lines = [json.loads(line) for line in (repo / RUNS_FILE).read_text().splitlines()]
    assert [line["trial"] for line in lines] == [None, 0]


def test_the_study_run_is_rebuilt_from_every_finished_trial(tmp_path: Path) -> None:
    storage = optuna.storages.InMemoryStorage()
    _study(
        storage,
        "s",
        [{"x": 0.5}, {"x": 0.2}, {"x": 0.9, "state": TrialState.PRUNED}, {"x": 0.4}],
    )
    repo = tmp_path / "aim"
    writer = AimWriter(repo)
    writer.apply([StudyOpened("s", ("minimize",)), StudyProgress("s", 1, {"COMPLETE": 1}, 0.5)])
    writer.apply([plan(storage, "s", repo)])  # progress of trials 2-4 was never written
    writer.close()
    (study_run,) = [r for r in indexed_runs(repo, "s") if r.name == "study"]
    assert series(study_run, "complete") == {1: 1.0, 2: 2.0, 3: 2.0, 4: 3.0}
    assert series(study_run, "pruned") == {1: 0.0, 2: 0.0, 3: 1.0, 4: 1.0}
    assert series(study_run, "best_value") == {1: 0.5, 2: 0.2, 3: 0.2, 4: 0.2}
    assert study_run["counts"] == {"COMPLETE": 3, "PRUNED": 1, "FAIL": 0}
    assert study_run["best"] == {"value": 0.2, "trial": 1}


class _SlowWriter(BatchingTracker):
    """A tracker whose writer is an AimWriter in this process, held up until released."""

    def __init__(self, repo: Path) -> None:
        super().__init__()
        self.sending = threading.Event()
        self.release = threading.Event()
        self.writer: AimWriter | None = None
        self.repo = repo
        self.batches: list[list[Any]] = []

    def _open(self) -> None:
        self.writer = AimWriter(self.repo)

    def _send(self, batch: list[Any]) -> None:
        self.sending.set()
        self.release.wait(60)
        assert self.writer is not None
        self.batches.append(batch)
        self.writer.apply(batch)
        self.writer.flush()

    def _finish(self) -> None:
        assert self.writer is not None
        self.writer.close()


def test_a_tracker_over_its_bound_drops_trials_and_rebuilds_them_from_storage(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(_tracker, "MAX_TRIALS", 5)
    storage = optuna.storages.InMemoryStorage()
    study = _study(storage, "s", [])
    repo = tmp_path / "aim"
    tracker = _SlowWriter(repo)
    tracker.start(StudySource(storage, "s"))
    tracker.emit(StudyOpened("s", ("minimize",)))
    assert tracker.sending.wait(60)  # it reconciled an empty study, and its writer is stuck
    for i in range(30):  # the trials run and finish meanwhile
        curve = {s: i * 0.1 + s for s in range(5)}
        study.add_trial(
            optuna.trial.create_trial(
                value=i / 30,
                params={"x": i / 30},
                distributions={"x": X},
                intermediate_values=curve,
            )
        )
        for event in _events("s", study.get_trials()[-1]):
            tracker.emit(event)
        tracker.emit(StudyProgress("s", i + 1, {"COMPLETE": i + 1}))
    assert tracker.backlog < 5 * 12 + 10  # bounded: later trials were not queued
    assert tracker.dropped > 0
    tracker.release.set()
    tracker.close()
    assert tracker.take_problem() is None  # nothing that the storage does not have was lost
    rebuilt = [e for batch in tracker.batches for e in batch if type(e).__name__ == "Rebuild"]
    assert rebuilt, "the dropped trials came back as records"
    assert assert_repo_matches_storage(repo, storage, "s") == 30


def test_a_reconcile_too_large_for_a_modal_queue_item_is_sent_in_parts(tmp_path: Path) -> None:
    storage = optuna.storages.InMemoryStorage()
    _study(
        storage, "s", [{"x": i / 300, "curve": {s: i + s for s in range(20)}} for i in range(200)]
    )
    event = plan(storage, "s")
    parts = split_for_queue([event], limit=20_000)
    assert len(parts) > 2
    import pickle

    assert all(len(pickle.dumps(part)) <= 20_000 for part in parts)
    repo = tmp_path / "aim"
    writer = AimWriter(repo)
    writer.apply([StudyOpened("s", ("minimize",))])
    for part in parts:
        writer.apply(part)
        writer.flush()
    writer.close()
    assert assert_repo_matches_storage(repo, storage, "s") == 200
    assert sum(isinstance(e, Reconcile) for part in parts for e in part) > 1


def test_track_repair_and_status(project: Project) -> None:
    project.write(
        "curve.py",
        "def objective(trial):\n"
        "    x = trial.suggest_float('x', 0, 1)\n"
        "    for step in range(3):\n"
        "        trial.report(x * step, step)\n"
        "    return x\n",
    )
    assert project.sweeper("run", "curve.py", "-n", "6", "-p", "2").returncode == 0
    repo = project.path / ".sweeper" / "aim"
    wait_for_writer(repo)
    status = project.sweeper("status")
    assert "Aim: every finished trial is in .sweeper/aim" in status.stdout, status.stdout
    assert project.sweeper("track").returncode == 0

    # Damage: one run's databases gone, the ledger lost, and a second run claiming trial 2.
    entries = [json.loads(line) for line in (repo / RUNS_FILE).read_text().splitlines()]
    gone = next(e["run"] for e in entries if e["trial"] == 1)
    for kind in ("meta", "seqs"):
        subprocess.run(["rm", "-rf", str(repo / ".aim" / kind / "chunks" / gone)], check=True)
    (repo / LEDGER_FILE).write_text("")
    duplicate = (  # made with Aim's own SDK, in a process of its own
        "import sys, aim\n"
        "from aim.sdk.index_manager import RepoIndexManager\n"
        "repo = aim.Repo.from_path(sys.argv[1])\n"
        "run = aim.Run(repo=repo, experiment='curve', system_tracking_interval=None)\n"
        "run['sweeper'] = {'study': 'curve', 'root': 2, 'kind': 'trial'}\n"
        "run_hash = run.hash\n"
        "run.close()\n"
        "RepoIndexManager.get_index_manager(repo).index(run_hash)\n"
    )
    subprocess.run([sys.executable, "-c", duplicate, str(repo)], check=True, timeout=120)

    status = project.sweeper("status")
    assert "Aim lags behind the storage: 6 finished trials" in status.stdout, status.stdout
    checked = project.sweeper("track")
    assert checked.returncode == 1 and "6 finished trials not in Aim" in checked.stdout
    repaired = project.sweeper("track", "--repair")
    assert repaired.returncode == 0, repaired.stdout + repaired.stderr
    assert "1 duplicate run removed" in repaired.stdout
    assert project.sweeper("track").returncode == 0
    assert assert_repo_matches_storage(repo, project.storage(), "curve") == 6


def test_a_repo_whose_creation_was_cut_short_is_made_again(tmp_path: Path) -> None:
    import sqlite3

    repo = tmp_path / "aim"
    (repo / ".aim").mkdir(parents=True)  # killed while Aim's migrations ran: some tables
    with sqlite3.connect(repo / ".aim" / "run_metadata.sqlite") as db:
        db.execute("create table experiment (id integer primary key, name text)")
    storage = optuna.storages.InMemoryStorage()
    _study(storage, "s", [{"x": 0.5, "curve": {0: 1.0}}])
    writer = AimWriter(repo)
    writer.apply([StudyOpened("s", ("minimize",)), plan(storage, "s", repo)])
    writer.close()
    assert assert_repo_matches_storage(repo, storage, "s") == 1
