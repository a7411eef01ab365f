"""Every trial tracked in Aim: read back with Aim's own SDK, and served by `sweeper ui`."""

from __future__ import annotations

import json
import signal
import subprocess
import time
import urllib.request
from pathlib import Path

import optuna
import pytest
from conftest import Project
from optuna.trial import TrialState

aim = pytest.importorskip("aim")
from aim.storage.context import Context  # noqa: E402

from sweeper.tracking._writer import RUNS_FILE  # noqa: E402


def _runs(repo: Path, study: str) -> dict[str, object]:
    """The study's Aim runs by name, found through Aim's query (so they must be indexed)."""
    found = aim.Repo.from_path(str(repo)).query_runs(f"run.experiment == '{study}'", report_mode=0)
    return {item.run.name: item.run for item in found.iter_runs()}


def _series(run: object, name: str, context: dict | None = None) -> dict[int, float]:
    metric = run.get_metric(name, Context(context or {}))  # type: ignore[attr-defined]
    assert metric is not None, name
    steps, (values, *_) = metric.data.items_list()
    assert len(steps) == len(set(steps)), f"duplicated steps in {name}: {steps}"
    return dict(zip(steps, values, strict=True))


def _enqueue(project: Project, modes: list[str], study: str = "tracked") -> None:
    project.journal.parent.mkdir(parents=True, exist_ok=True)
    created = optuna.create_study(study_name=study, storage=project.storage(), load_if_exists=True)
    for mode in modes:
        created.enqueue_trial({"mode": mode})


def test_every_trial_and_the_study_are_tracked(project: Project) -> None:
    _enqueue(project, ["ok", "fail", "prune_now", "ok", "ok"])
    result = project.sweeper("run", project.objective("tracked.py"), "-n", "5", "-p", "2")
    assert result.returncode == 0, result.stderr
    assert "tracking is off" not in result.stderr
    assert "python -m sweeper ui" in result.stdout
    study = project.study("tracked")
    runs = _runs(project.path / ".sweeper" / "aim", "tracked")
    assert set(runs) == {f"trial {t.number}" for t in study.trials} | {"study"}

    for trial in study.trials:
        run = runs[f"trial {trial.number}"]
        assert run.experiment == "tracked"
        assert run["hparams"] == trial.params
        state = {"FAIL": "failed"}.get(trial.state.name, trial.state.name.lower())
        assert run["sweeper"]["state"] == trial.state.name
        assert state in run.tags
        assert run["result"]["state"] == trial.state.name
        if trial.state == TrialState.COMPLETE:
            assert run["result"]["value"] == trial.value
            assert _series(run, "objective") == trial.intermediate_values
            assert _series(run, "loss") == pytest.approx(trial.intermediate_values)
            accuracy = _series(run, "accuracy", {"subset": "valid"})
            assert accuracy == pytest.approx(
                {s: 1 - v for s, v in trial.intermediate_values.items()}
            )
            assert run["sweeper"]["worker"]["pid"] > 0
        elif trial.state == TrialState.FAIL:
            assert "RuntimeError: tracked failure" in run["sweeper"]["fail_reason"]
        else:  # pruned before it reported anything
            assert run.get_metric("objective", Context({})) is None

    # One point per finished trial, against the number finished; best once there is one.
    assert sorted(_series(runs["study"], "complete")) == [1, 2, 3, 4, 5]
    assert _series(runs["study"], "failed")[5] == 1
    best = _series(runs["study"], "best_value")
    assert sorted(best) == list(range(min(best), 6))
    assert best[5] == study.best_value
    assert runs["study"]["counts"] == {"COMPLETE": 3, "FAIL": 1, "PRUNED": 1}
    assert runs["study"]["settings"]["parallel"] == 2


def test_a_trial_run_again_keeps_one_run_without_duplicated_steps(project: Project) -> None:
    project.write(
        "slow.py",
        "import time\n"
        "def objective(trial):\n"
        "    x = trial.suggest_float('x', 0, 1)\n"
        "    for step in range(4):\n"
        "        trial.report(x + step, step)\n"
        "        time.sleep(0.4)\n"
        "    return x\n",
    )
    process = project.start("run", "slow.py", "-n", "20", "-p", "1", "--pruner", "none")
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:  # kill -9 while trial 1 has reported some steps
        if "slow" in project.study_names():
            trials = project.study("slow").trials
            if len(trials) >= 2 and len(trials[1].intermediate_values) >= 2:
                break
        time.sleep(0.05)
    process.kill()
    process.wait()
    result = project.sweeper("run", "slow.py", "-n", "2", "-p", "1", "--pruner", "none")
    assert result.returncode == 0, result.stderr
    trials = project.study("slow").trials
    retry = next(t for t in trials if t.system_attrs.get("sweeper:retry_of") == 1)
    runs = _runs(project.path / ".sweeper" / "aim", "slow")
    # Trial 1 and its rerun share the run "trial 1"; no run for the rerun's own number.
    assert f"trial {retry.number}" not in runs
    run = runs["trial 1"]
    assert run["sweeper"]["trial"] == retry.number
    assert run["result"]["state"] == "COMPLETE"
    assert _series(run, "objective") == retry.intermediate_values  # steps 0..3, once each
    lines = (project.path / ".sweeper" / "aim" / RUNS_FILE).read_text().splitlines()
    roots = [json.loads(line)["trial"] for line in lines]
    assert len(roots) == len(set(roots))


def test_no_track_and_another_repo(project: Project) -> None:
    result = project.sweeper("run", project.objective("attrs.py"), "-n", "2", "--no-track")
    assert result.returncode == 0, result.stderr
    assert not (project.path / ".sweeper" / "aim").exists()
    result = project.sweeper(
        "run", project.objective("attrs.py"), "-n", "2", "--aim-repo", "elsewhere"
    )
    assert result.returncode == 0, result.stderr
    # The storage is the source of truth: the two untracked trials are in Aim now too.
    assert len(_runs(project.path / "elsewhere", "attrs")) == 5


def test_an_unusable_repo_is_said_once_and_the_sweep_runs(project: Project) -> None:
    (project.path / "not-a-folder").write_text("a file where the repo should be")
    result = project.sweeper(
        "run", project.objective("attrs.py"), "-n", "3", "--aim-repo", "not-a-folder"
    )
    assert result.returncode == 0, result.stderr
    assert result.stderr.count("tracking is off for this sweep") == 1
    assert len(project.study("attrs").trials) == 3


def test_ui_serves_the_runs_and_stops_on_ctrl_c(project: Project) -> None:
    assert project.sweeper("run", project.objective("attrs.py"), "-n", "3").returncode == 0
    process = subprocess.Popen(
        project.command("ui", "--port", "0"),
        cwd=project.path,
        env=project.env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        line = process.stdout.readline()  # type: ignore[union-attr]
        assert "http://127.0.0.1:" in line, line + process.stderr.read()  # type: ignore[union-attr]
        url = line[line.index("http://") :].split()[0]
        with urllib.request.urlopen(f"{url}/api/experiments/", timeout=10) as response:
            experiments = {e["name"]: e for e in json.load(response)}
        assert experiments["attrs"]["run_count"] == 4
        first = json.loads((project.path / ".sweeper/aim" / RUNS_FILE).read_text().splitlines()[0])
        with urllib.request.urlopen(
            f"{url}/api/runs/{first['run']}/info/", timeout=10
        ) as response:
            info = json.load(response)
        assert info["params"]["sweeper"]["study"] == "attrs"
    finally:
        process.send_signal(signal.SIGINT)
        assert process.wait(timeout=90) == 0  # it stops, and says all is well (not a timing)
    # The server is gone with it.
    with pytest.raises(OSError):
        urllib.request.urlopen(f"{url}/api/experiments/", timeout=2)


def test_ui_without_a_repo(project: Project) -> None:
    result = project.sweeper("ui")
    assert result.returncode == 2
    assert "no Aim repo" in result.stderr


def test_multi_objective_study_run_holds_the_pareto_front(project: Project) -> None:
    result = project.sweeper("run", project.objective("optuna_multi.py"), "-n", "8", "-p", "2")
    assert result.returncode == 0, result.stderr
    study = project.study("optuna_multi")
    runs = _runs(project.path / ".sweeper" / "aim", "optuna_multi")
    front = {entry["trial"] for entry in runs["study"]["pareto_front"]}
    assert front == {t.number for t in study.best_trials}
    assert _series(runs["study"], "pareto_front_size")[8] == len(front)
    for trial in study.trials:
        assert runs[f"trial {trial.number}"]["result"]["values"] == trial.values


def test_ui_shows_runs_while_the_sweep_runs(project: Project) -> None:
    project.write(
        "nap.py", "import time\ndef objective(trial):\n    time.sleep(0.5)\n    return 1.0\n"
    )
    assert project.sweeper("run", "nap.py", "-n", "1").returncode == 0  # the repo exists
    # Far more trials than the test waits for (it ends the sweep with Ctrl-C): a UI slow to
    # start on a busy machine still finds the sweep running.
    sweep = project.start("run", "nap.py", "-n", "400", "-p", "1")
    ui = project.start("ui", "--port", "0")
    try:
        line = ui.stdout.readline()  # type: ignore[union-attr]
        url = line[line.index("http://") :].split()[0]
        deadline = time.monotonic() + 60
        count = 0
        while time.monotonic() < deadline and count < 4:
            with urllib.request.urlopen(f"{url}/api/experiments/", timeout=10) as response:
                count = {e["name"]: e["run_count"] for e in json.load(response)}.get("nap", 0)
            time.sleep(0.2)
        assert count >= 4
        assert sweep.poll() is None  # still sweeping
    finally:
        for process in (sweep, ui):
            process.send_signal(signal.SIGINT)
        sweep.wait(timeout=60)
        assert ui.wait(timeout=90) == 0  # it stops (a loaded machine may take a while)


def _aims_migrations_start_a_process(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Record (and refuse) the `python -m alembic` process Aim would start for migrations."""
    import aim.storage.migrations.utils as migrations

    started: list[str] = []

    def refuse(command: list[str], **_: object) -> None:
        started.append(" ".join(command))
        raise OSError("no new process in this test")

    monkeypatch.setattr(migrations.subprocess, "Popen", refuse)
    return started


def _migration_version(repo: Path) -> list[tuple[str, ...]]:
    import sqlite3

    with sqlite3.connect(repo / ".aim" / "run_metadata.sqlite") as db:
        return db.execute("select version_num from alembic_version").fetchall()


def test_a_new_repo_is_migrated_in_the_writers_process(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import logging

    from sweeper.tracking._writer import AimWriter

    aims = tmp_path / "by-aim"
    aim.Repo.from_path(str(aims), init=True)  # Aim's own way, for comparison
    started = _aims_migrations_start_a_process(monkeypatch)
    ours = logging.getLogger("sweeper.tracking._writer")
    handlers = list(logging.getLogger().handlers)

    writer = AimWriter(tmp_path / "ours")
    writer.close()

    assert started == []
    assert _migration_version(tmp_path / "ours") == _migration_version(aims) != []
    assert not ours.disabled and logging.getLogger().handlers == handlers
    reopened = AimWriter(tmp_path / "ours")  # an existing repo needs no migration at all
    reopened.close()
    assert started == []


def test_when_migrating_here_fails_aims_own_way_runs(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from alembic import command

    from sweeper.tracking._writer import AimWriter, TrackingError

    def fail(*_: object) -> None:
        raise RuntimeError("broken")

    monkeypatch.setattr(command, "upgrade", fail)
    started = _aims_migrations_start_a_process(monkeypatch)
    with pytest.raises(TrackingError, match="unusable"):
        AimWriter(tmp_path / "repo")
    assert len(started) == 1 and "alembic" in started[0]
