"""End to end: Optuna-style objective files, unmodified, through the CLI and real workers."""

from __future__ import annotations

import json

import optuna
import pytest
from conftest import Project, states
from optuna.trial import TrialState


def test_conditional_space_with_settings_read_from_optuna_calls(project: Project) -> None:
    # No flags: direction=maximize and n_trials=12 come from the file's create_study/optimize.
    result = project.sweeper("run", project.objective("optuna_conditional.py"), "-p", "2")
    assert result.returncode == 0, result.stderr
    study = project.study("optuna_conditional")
    assert study.direction == optuna.study.StudyDirection.MAXIMIZE
    assert states(study) == {"COMPLETE": 12}
    for trial in study.trials:
        # The conditional branch decided which parameters exist.
        expected = {
            "svc": {"classifier", "svc_c"},
            "random_forest": {"classifier", "rf_max_depth"},
        }
        assert set(trial.params) == expected[trial.params["classifier"]]
    assert "Best value" in result.stdout
    assert str(study.best_trial.number) in result.stdout


def test_pruning_decided_by_the_study_pruner(project: Project) -> None:
    result = project.sweeper("run", project.objective("optuna_pruning.py"), "-p", "2")
    assert result.returncode == 0, result.stderr
    study = project.study("optuna_pruning")
    counts = states(study)
    assert counts.get("PRUNED", 0) >= 1
    assert counts.get("COMPLETE", 0) >= 3
    assert sum(counts.values()) == 24
    for trial in study.trials:
        steps = sorted(trial.intermediate_values)
        assert steps == list(range(len(steps)))  # every report arrived, in order, once
        if trial.state == TrialState.COMPLETE:
            assert steps == list(range(20))
        if trial.state == TrialState.PRUNED:  # stopped at the step it was pruned at,
            assert 1 <= len(steps) <= 20  # which may be the last one


def test_multi_objective(project: Project) -> None:
    result = project.sweeper("run", project.objective("optuna_multi.py"), "-p", "2")
    assert result.returncode == 0, result.stderr
    study = project.study("optuna_multi")
    assert [d.name for d in study.directions] == ["MINIMIZE", "MAXIMIZE"]
    assert states(study) == {"COMPLETE": 16}
    for trial in study.trials:
        x, y = trial.params["x"], trial.params["y"]
        assert trial.values == [x**2 + y, -((x - 2) ** 2 + y)]
    assert "Pareto front" in result.stdout
    best = project.sweeper("best", project.objective("optuna_multi.py"), "--json")
    front = json.loads(best.stdout)["best"]
    assert {t["number"] for t in front} == {t.number for t in study.best_trials}


def test_trial_api_and_module_code_once_per_worker(project: Project) -> None:
    result = project.sweeper("run", project.objective("attrs.py"), "-n", "10", "-p", "2")
    assert result.returncode == 0, result.stderr
    study = project.study("attrs")
    assert states(study) == {"COMPLETE": 10}
    pids = set()
    for trial in study.trials:
        attrs = trial.user_attrs
        assert attrs["number_seen"] == trial.number
        assert attrs["params_seen"] == {"x": trial.params["x"]}
        assert attrs["study_name"] == "attrs"
        assert trial.constraints == {"x_small": trial.params["x"] - 8}
        pids.add(attrs["worker_pid"])
        # Where it ran is in the storage too (an Aim run rebuilt from it shows it).
        assert trial.system_attrs["sweeper:worker"]["pid"] == attrs["worker_pid"]
    # Persistent workers loaded the file: no new interpreter per trial. (Both usually take
    # trials, but on a busy machine one may take all ten before the other is up.)
    assert 1 <= len(pids) <= 2


def test_enqueued_parameters_are_used_and_rerunning_continues_the_study(project: Project) -> None:
    first = project.sweeper("run", project.objective("attrs.py"), "-n", "3", "-p", "1")
    assert first.returncode == 0, first.stderr
    study = project.study("attrs")
    study.enqueue_trial({"x": 7})
    second = project.sweeper("run", project.objective("attrs.py"), "-n", "3", "-p", "1")
    assert second.returncode == 0, second.stderr
    trials = project.study("attrs").trials
    assert len(trials) == 6
    assert trials[3].params == {"x": 7}


def test_sweep_settings_dict_and_flags_override_it(project: Project) -> None:
    path = project.write(
        "settings.py",
        "SWEEP = {'direction': 'maximize', 'n_trials': 4, 'parallel': 1, 'sampler': 'random',"
        " 'study': 'from-file'}\n"
        "def objective(trial):\n    return trial.suggest_float('x', 0, 1)\n",
    )
    result = project.sweeper("run", str(path), "--n-trials", "3")
    assert result.returncode == 0, result.stderr
    study = project.study("from-file")
    assert study.direction == optuna.study.StudyDirection.MAXIMIZE
    assert len(study.trials) == 3
    assert "RandomSampler" in result.stderr  # the header names the sampler it built


def test_status_reads_the_study_back(project: Project) -> None:
    project.sweeper("run", project.objective("optuna_multi.py"), "-n", "4", "-p", "2")
    status = project.sweeper("status")
    assert status.returncode == 0, status.stderr
    assert "Study 'optuna_multi'" in status.stdout
    assert "4 trials: 4 complete" in status.stdout
    assert "Pareto front" in status.stdout


def test_timeout_stops_asking_and_running_trials_finish(project: Project) -> None:
    project.write(
        "nap.py", "import time\ndef objective(trial):\n    time.sleep(0.3)\n    return 1.0\n"
    )
    result = project.sweeper("run", "nap.py", "--timeout", "1", "-p", "1")
    assert result.returncode == 0, result.stderr
    counts = states(project.study("nap"))
    # None left running or failed; a trial asked ahead may wait in the queue for next time.
    assert set(counts) <= {"COMPLETE", "WAITING"} and counts.get("WAITING", 0) <= 2
    assert 2 <= counts["COMPLETE"] <= 5


def test_one_gpu_per_worker(project: Project) -> None:
    # Each trial waits (up to 30 s) until both workers have had one: on a busy machine the
    # first worker up could otherwise take all eight before the second starts.
    project.write(
        "gpu.py",
        "import glob, os, pathlib, time\n"
        "def objective(trial):\n"
        "    pathlib.Path(f'seen-{os.getpid()}').touch()\n"
        "    deadline = time.time() + 30\n"
        "    while len(glob.glob('seen-*')) < 2 and time.time() < deadline:\n"
        "        time.sleep(0.05)\n"
        "    trial.set_user_attr('pid', os.getpid())\n"
        "    trial.set_user_attr('gpu', os.environ.get('CUDA_VISIBLE_DEVICES'))\n"
        "    trial.set_user_attr('threads', os.environ.get('OMP_NUM_THREADS'))\n"
        "    return 1.0\n",
    )
    result = project.sweeper(
        "run", "gpu.py", "-n", "8", "-p", "2", env={"CUDA_VISIBLE_DEVICES": "3,5"}
    )
    assert result.returncode == 0, result.stderr
    attrs = [t.user_attrs for t in project.study("gpu").trials]
    gpus: dict[int, set[str]] = {}
    for a in attrs:
        gpus.setdefault(a["pid"], set()).add(a["gpu"])
    # Two workers, each with one GPU of its own, the same one for every trial it ran.
    assert sorted(gpus.values(), key=sorted) == [{"3"}, {"5"}], gpus
    assert all(a["threads"] is not None for a in attrs)


@pytest.mark.parametrize("sampler", ["tpe", "random", "cmaes", "gp", "qmc", "nsga2"])
def test_every_sampler(project: Project, sampler: str) -> None:
    path = project.write(
        "space.py",
        "def objective(trial):\n"
        "    x = trial.suggest_float('x', -3, 3)\n"
        "    n = trial.suggest_int('n', 1, 8)\n"
        "    return x * x + n\n",
    )
    result = project.sweeper(
        "run",
        str(path),
        "-n",
        "8",
        "-p",
        "2",
        "--sampler",
        sampler,
        "--seed",
        "1",
        "--sampler-args",
        '{"n_startup_trials": 3}' if sampler in ("tpe", "gp") else "{}",
    )
    assert result.returncode == 0, result.stderr
    assert states(project.study("space")) == {"COMPLETE": 8}


@pytest.mark.parametrize("pruner", ["median", "percentile", "halving", "hyperband", "none"])
def test_every_pruner(project: Project, pruner: str) -> None:
    result = project.sweeper(
        "run", project.objective("optuna_pruning.py"), "-n", "10", "-p", "2", "--pruner", pruner
    )
    assert result.returncode == 0, result.stderr
    counts = states(project.study("optuna_pruning"))
    assert sum(counts.values()) == 10 and counts.get("FAIL", 0) == 0
    if pruner == "none":
        assert counts == {"COMPLETE": 10}


def test_database_storage(project: Project) -> None:
    url = f"sqlite:///{project.path / 'sweeps.db'}"
    result = project.sweeper(
        "run", project.objective("attrs.py"), "-n", "3", "-p", "1", "--storage", url
    )
    assert result.returncode == 0, result.stderr
    study = optuna.load_study(study_name="attrs", storage=url)
    assert states(study) == {"COMPLETE": 3}
    status = project.sweeper("status", "--storage", url)
    assert "3 trials: 3 complete" in status.stdout, status.stdout + status.stderr
    # A SQLite file given as a plain path is recognised as a database, not a journal.
    again = project.sweeper("best", "--storage", "sweeps.db", "--json")
    assert again.returncode == 0, again.stderr
