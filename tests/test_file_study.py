"""An Optuna file's own objects: what its main block builds is what the sweep uses, its budget
gives way to -n as a whole, and its module code runs once before the workers import it."""

from __future__ import annotations

import sqlite3

import optuna
from conftest import Project, states

CONSTRAINED = """
import optuna


def objective(trial):
    x = trial.suggest_float("x", -15, 30)
    y = trial.suggest_float("y", -15, 30)
    trial.set_user_attr("constraint", ((x - 5) ** 2 + y ** 2 - 25,))
    return 4 * x ** 2 + 4 * y ** 2


def constraints(trial):
    return trial.user_attrs["constraint"]


if __name__ == "__main__":
    sampler = optuna.samplers.TPESampler(constraints_func=constraints, seed=1)
    study = optuna.create_study(sampler=sampler, direction="maximize")
    study.enqueue_trial({"x": 5.0, "y": 0.0})
    study.set_user_attr("source", "docs")
    study.optimize(objective, n_trials=500, timeout=1)
    print("Best:", study.best_trial.params)
"""


def test_the_files_sampler_enqueued_trials_and_direction_are_the_sweeps(project: Project) -> None:
    project.write("constrained.py", CONSTRAINED)
    result = project.sweeper("run", "constrained.py", "-n", "8", "-p", "2", "--no-track")
    assert result.returncode == 0, result.stderr
    assert "TPESampler" in result.stderr.splitlines()[0]  # the sweep's first line
    lines = CONSTRAINED.splitlines()
    create = 1 + next(i for i, line in enumerate(lines) if "create_study" in line)
    optimize = 1 + next(i for i, line in enumerate(lines) if ".optimize(" in line)
    (used,) = [line for line in result.stderr.splitlines() if "from constrained.py:" in line]
    assert f"sampler TPESampler (line {create})" in used and "1 enqueued trial" in used
    # The file's budget gives way as a whole: no timeout of 1 s shrinks the run.
    replaced = f"n_trials 500 (line {optimize}) by --n-trials; timeout 1.0 (line {optimize})"
    assert replaced in result.stderr
    study = project.study("constrained")
    assert states(study) == {"COMPLETE": 8}
    assert study.direction == optuna.study.StudyDirection.MAXIMIZE
    assert study.trials[0].params == {"x": 5.0, "y": 0.0}  # enqueued in the main block
    assert study.user_attrs == {"source": "docs"}
    assert all("constraints" in t.system_attrs for t in study.trials)  # constraints_func ran


def test_without_flags_the_files_budget_is_the_sum_of_its_optimize_calls(project: Project) -> None:
    project.write(
        "twice.py",
        "import optuna\n"
        "def objective(trial):\n"
        "    return trial.suggest_float('x', 0, 1)\n"
        "if __name__ == '__main__':\n"
        "    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=0))\n"
        "    study.optimize(objective, n_trials=3)\n"
        "    study.optimize(objective, n_trials=4)\n",
    )
    result = project.sweeper("run", "twice.py", "-p", "2", "--no-track")
    assert result.returncode == 0, result.stderr
    assert states(project.study("twice")) == {"COMPLETE": 7}
    assert "RandomSampler" in result.stderr.splitlines()[0]


def test_the_files_callbacks_run_and_the_summary_names_the_one_that_stopped_it(
    project: Project,
) -> None:
    project.write(
        "limited.py",
        "import optuna\n"
        "from optuna.study import MaxTrialsCallback\n"
        "def objective(trial):\n"
        "    return trial.suggest_float('x', 0, 1)\n"
        "if __name__ == '__main__':\n"
        "    study = optuna.create_study()\n"
        "    study.optimize(objective, n_trials=100, callbacks=[MaxTrialsCallback(5)])\n",
    )
    result = project.sweeper("run", "limited.py", "-n", "40", "-p", "2", "--no-track")
    assert result.returncode == 0, result.stderr
    finished = sum(states(project.study("limited")).values())
    assert 5 <= finished <= 7  # MaxTrialsCallback(5), and the ones still running finish
    assert "Stopped early: the callback MaxTrialsCallback called study.stop()." in result.stdout


def test_a_main_block_that_fails_before_its_study_is_one_line_naming_it(project: Project) -> None:
    project.write(
        "needs_args.py",
        "import argparse\nimport optuna\n"
        "def objective(trial):\n"
        "    return trial.suggest_float('x', 0, 1)\n"
        "if __name__ == '__main__':\n"
        "    parser = argparse.ArgumentParser()\n"
        "    parser.add_argument('--startup', type=int, required=True)\n"
        "    args = parser.parse_args()\n"
        "    sampler = optuna.samplers.TPESampler(n_startup_trials=args.startup)\n"
        "    study = optuna.create_study(sampler=sampler)\n"
        "    study.optimize(objective, n_trials=5)\n",
    )
    result = project.sweeper("run", "needs_args.py", "-n", "3", "-p", "1", "--no-track")
    assert result.returncode == 2
    (line,) = result.stderr.strip().splitlines()
    assert line.startswith("error: needs_args.py:10: the file builds its sampler in its main")
    assert "line 8: the main block exited" in line and "--sampler" in line
    assert project.study_names() == []  # nothing was touched
    # Saying which sampler to use is enough: the sweep never runs with a different one.
    chosen = project.sweeper(
        "run", "needs_args.py", "-n", "3", "-p", "1", "--no-track", "--sampler", "random"
    )
    assert chosen.returncode == 0, chosen.stderr


def test_the_files_study_name_and_storage_are_used_and_status_finds_them(
    project: Project,
) -> None:
    project.write(
        "stored.py",
        "import optuna\n"
        "storage = optuna.storages.RDBStorage('sqlite:///runs.db')\n"
        "def objective(trial):\n"
        "    return trial.suggest_float('x', 0, 1)\n"
        "if __name__ == '__main__':\n"
        "    study = optuna.create_study(\n"
        "        storage=storage, study_name='mine', load_if_exists=True\n"
        "    )\n"
        "    study.optimize(objective, n_trials=10)\n",
    )
    # Four workers import a module that creates its database at import: the first import
    # runs before the others, so they do not race to create its tables.
    result = project.sweeper("run", "stored.py", "-n", "6", "-p", "4", "--no-track")
    assert result.returncode == 0, result.stderr
    with sqlite3.connect(project.path / "runs.db") as connection:
        (name,) = connection.execute("select study_name from studies").fetchone()
    assert name == "mine"
    study = optuna.load_study(study_name="mine", storage=f"sqlite:///{project.path / 'runs.db'}")
    assert states(study) == {"COMPLETE": 6}
    shown = project.sweeper("status", "stored.py")
    assert shown.returncode == 0, shown.stderr
    assert shown.stdout.startswith("Study 'mine' in sqlite:///runs.db")


def test_module_code_that_fails_is_shown_once_with_its_traceback(project: Project) -> None:
    project.write(
        "broken.py",
        "import json\nDATA = json.loads('[1')\n\ndef objective(trial):\n    return 1.0\n",
    )
    result = project.sweeper("run", "broken.py", "-n", "4", "-p", "3", "--no-track")
    assert result.returncode == 2
    assert result.stderr.count("while being imported") == 1  # once, not once per worker
    assert result.stderr.startswith("error: ") and "broken.py:2 raised JSONDecodeError" in (
        result.stderr
    )
    assert 'File "' in result.stderr and "DATA = json.loads('[1')" in result.stderr


FEASIBLE_ABOVE_HALF = """
import optuna


def objective(trial):
    x = trial.suggest_float("x", 0, 1)
    trial.set_user_attr("constraint", (LIMIT - x,))
    return x


def constraints(trial):
    return trial.user_attrs["constraint"]


if __name__ == "__main__":
    sampler = optuna.samplers.TPESampler(constraints_func=constraints, seed=3)
    study = optuna.create_study(sampler=sampler)
    study.enqueue_trial({"x": 0.9})
    study.enqueue_trial({"x": 0.01})
    study.optimize(objective, n_trials=8)
"""


def test_the_best_trial_is_the_best_feasible_one_and_none_feasible_is_said_so(
    project: Project,
) -> None:
    # x = 0.01 is the lowest value, but it breaks the constraint x >= 0.5: as in Optuna's
    # study.best_trial, the best is the lowest value among the trials that meet it.
    project.write("half.py", FEASIBLE_ABOVE_HALF.replace("LIMIT", "0.5"))
    result = project.sweeper("run", "half.py", "-p", "2", "--no-track")
    assert result.returncode == 0, result.stderr
    study = project.study("half")
    assert study.trials[1].params == {"x": 0.01}
    best = min((t for t in study.trials if t.params["x"] >= 0.5), key=lambda t: t.params["x"])
    assert f"from trial {best.number}:" in result.stdout, result.stdout
    assert f"best {best.value:.6g} (trial {best.number})" in result.stderr.splitlines()[-1]
    shown = project.sweeper("best", "half.py")
    assert f"from trial {best.number}" in shown.stdout, shown.stdout
    # No x meets x >= 2: the sweep still ends well, and says why there is no best.
    project.write("never.py", FEASIBLE_ABOVE_HALF.replace("LIMIT", "2.0"))
    result = project.sweeper("run", "never.py", "-p", "2", "--no-track")
    assert result.returncode == 0, result.stderr
    assert "Traceback" not in result.stderr
    assert "No completed trial meets the sampler's constraints" in result.stdout
    assert states(project.study("never")) == {"COMPLETE": 8}
    shown = project.sweeper("best", "never.py")
    assert shown.returncode == 0 and "meets the sampler's constraints" in shown.stdout
