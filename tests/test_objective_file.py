"""Objective files are checked and their settings read without running them."""

from __future__ import annotations

from pathlib import Path

import pytest

from sweeper import ObjectiveError
from sweeper.objective import read_objective_file


def write(tmp_path: Path, source: str) -> Path:
    path = tmp_path / "objective_file.py"
    path.write_text(source)
    return path


def test_module_code_is_not_run(tmp_path: Path) -> None:
    marker = tmp_path / "ran"
    path = write(tmp_path, f"open({str(marker)!r}, 'w')\ndef objective(trial):\n    return 1\n")
    read_objective_file(path)
    assert not marker.exists()


def test_settings_from_optuna_calls(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        """
import optuna

def train(trial):
    return trial.suggest_float("x", 0, 1)

if __name__ == "__main__":
    study = optuna.create_study(
        direction="maximize",
        sampler=optuna.samplers.TPESampler(seed=10, n_startup_trials=5),
        pruner=optuna.pruners.MedianPruner(n_warmup_steps=2),
    )
    study.optimize(train, n_trials=100, timeout=600)
""",
    )
    info = read_objective_file(path)
    assert info.function == "train"  # the function passed to optimize()
    assert info.optuna_settings == {
        "directions": ["maximize"],
        "sampler": "TPESampler",
        "sampler_args": {"seed": 10, "n_startup_trials": 5},
        "pruner": "MedianPruner",
        "pruner_args": {"n_warmup_steps": 2},
        "n_trials": 100,
        "timeout": 600,
    }
    assert info.unreadable == {}
    assert info.main_block  # its main block sets up a study: a sweep runs it to read it


def test_settings_that_cannot_be_read_are_noted(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        """
import optuna
N = 10
def objective(trial):
    return 1.0
study = optuna.create_study(pruner=optuna.pruners.HyperbandPruner(max_resource=N))
study.optimize(objective, n_trials=N)
""",
    )
    info = read_objective_file(path)
    assert "pruner" not in info.optuna_settings
    assert "n_trials" not in info.optuna_settings
    # Not literals: by line, for running the code that builds them.
    assert info.unreadable == {"pruner": 6, "n_trials": 7}
    assert info.import_effects  # it builds its study at import


def test_sweep_dict(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        "SWEEP = {'n_trials': 5, 'objective': 'f', 'directions': ['minimize', 'maximize']}\n"
        "def f(trial):\n    return 1, 2\n",
    )
    info = read_objective_file(path)
    assert info.function == "f"
    assert info.settings == {"n_trials": 5, "directions": ["minimize", "maximize"]}


@pytest.mark.parametrize(
    "source",
    [
        "objective = lambda trial: 1.0\n",
        "from math import sqrt as objective\n",
        "class objective:\n    def __init__(self, trial):\n        pass\n",
        "try:\n    import numpy\n    def objective(trial):\n        return 1\n"
        "except ImportError:\n    pass\n",
        "def objective(trial, scale=2.0, *, verbose=False):\n    return 1\n",
        "def objective(*args):\n    return 1\n",
    ],
)
def test_other_ways_to_define_the_objective_are_accepted(tmp_path: Path, source: str) -> None:
    assert read_objective_file(write(tmp_path, source)).function == "objective"


def test_objective_only_in_main_block_is_missing(tmp_path: Path) -> None:
    path = write(
        tmp_path, "if __name__ == '__main__':\n    def objective(trial):\n        return 1\n"
    )
    with pytest.raises(ObjectiveError, match="has no function `objective`"):
        read_objective_file(path)


def test_unreadable_file(tmp_path: Path) -> None:
    path = write(tmp_path, "def objective(trial):\n    return 1\n")
    path.write_bytes(b"\xff\xfe\x00bad")
    with pytest.raises(ObjectiveError, match="not a UTF-8 text file"):
        read_objective_file(path)
