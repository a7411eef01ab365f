"""Bad input: one line naming the problem and the fix, exit status 2, no traceback, and the
study left exactly as it was."""

from __future__ import annotations

import pytest
from conftest import Project

GOOD = "def objective(trial):\n    return trial.suggest_float('x', 0, 1)\n"


def _assert_usage_error(result, *fragments: str, after_start: bool = False) -> None:
    """Exit 2 and one error line; a sweep that had started may have printed its header."""
    assert result.returncode == 2, (result.stdout, result.stderr)
    lines = result.stderr.strip().splitlines()
    assert "Traceback" not in result.stderr
    assert lines[-1].startswith("error: "), result.stderr
    if after_start:
        assert all(line.startswith("[") for line in lines[:-1]), result.stderr
    else:
        assert len(lines) == 1, result.stderr
    for fragment in fragments:
        assert fragment in lines[-1], lines[-1]


@pytest.mark.parametrize(
    ("source", "args", "fragments"),
    [
        (None, [], ["not found", "missing.py"]),
        ("def objective(trial)\n    return 1\n", [], ["bad.py:1", "syntax error"]),
        (GOOD, ["--objective", "nope"], ["has no function `nope`"]),
        (
            "def train(trial):\n    return 1\n",
            [],
            ["has no function `objective`", "train", "--objective"],
        ),
        (
            "def objective(a, b):\n    return 1\n",
            [],
            ["2 required arguments", "def objective(trial)"],
        ),
        ("def objective():\n    return 1\n", [], ["takes no arguments"]),
        ("async def objective(trial):\n    return 1\n", [], ["async"]),
        ("SWEEP = {'n_trials': N}\n" + GOOD, [], ["SWEEP must be a literal dict"]),
        ("SWEEP = {'trials': 3}\n" + GOOD, [], ["unknown setting 'trials'", "n_trials"]),
        (
            "import not_a_real_package\n" + GOOD,
            [],
            ["ModuleNotFoundError", "bad.py:1", "not_a_real_package"],
        ),
        ("raise RuntimeError('no data')\n" + GOOD, [], ["RuntimeError", "no data"]),
        (GOOD, ["--sampler", "annealing"], ["unknown sampler 'annealing'", "tpe"]),
        (GOOD, ["--pruner", "early"], ["unknown pruner 'early'", "median"]),
        (GOOD, ["--n-trials", "lots"], ["n_trials must be a whole number", "'lots'"]),
        (GOOD, ["--n-trials", "0"], ["n_trials must be at least 1"]),
        (GOOD, ["--parallel", "-2"], ["parallel must be at least 1"]),
        (GOOD, ["--timeout", "soon"], ["timeout must be a number of seconds"]),
        (GOOD, ["--trial-timeout", "-1"], ["trial_timeout must be a positive number"]),
        (GOOD, ["--direction", "up"], ["'minimize' or 'maximize'", "'up'"]),
        (GOOD, ["--backend", "cloud"], ["backend must be one of", "'cloud'"]),
        (GOOD, ["--sampler-args", "{nope"], ["sampler_args must be a JSON object"]),
        (
            GOOD,
            ["--sampler", "tpe", "--sampler-args", '{"bogus": 1}'],
            ["cannot build TPESampler", "bogus"],
        ),
        (GOOD, ["--storage", "nosuchdb://x/y"], ["not a storage URL", "sqlite:///"]),
        (GOOD, ["--storage", "."], ["is a directory"]),
        (GOOD, ["--bogus-flag"], ["unrecognized arguments: --bogus-flag"]),
    ],
)
def test_bad_input(project: Project, source, args, fragments) -> None:
    if source is not None:
        project.write("bad.py", source)
    target = "bad.py" if source is not None else "missing.py"
    result = project.sweeper("run", target, "-n", "2", "-p", "1", *args)
    _assert_usage_error(result, *fragments)
    assert project.study_names() == []


def test_direction_count_mismatch_leaves_no_study(project: Project) -> None:
    project.write(
        "pair.py", "def objective(trial):\n    return trial.suggest_float('x', 0, 1), 1.0\n"
    )
    result = project.sweeper("run", "pair.py", "-n", "4", "-p", "2")
    _assert_usage_error(
        result,
        "returned 2 values but the study has 1 direction",
        "--direction minimize --direction maximize",
        after_start=True,
    )
    assert "pair" not in project.study_names()


def test_direction_count_mismatch_on_an_existing_study_keeps_it(project: Project) -> None:
    project.write("one.py", GOOD)
    assert project.sweeper("run", "one.py", "-n", "2", "--study", "s").returncode == 0
    project.write("pair.py", "def objective(trial):\n    return 1.0, 2.0\n")
    # The study has complete trials, so a pair is that trial's failure, not a usage error.
    result = project.sweeper("run", "pair.py", "-n", "1", "--study", "s")
    assert result.returncode == 1
    assert len(project.study("s").trials) == 3


def test_directions_that_contradict_the_study(project: Project) -> None:
    project.write("one.py", GOOD)
    assert project.sweeper("run", "one.py", "-n", "2").returncode == 0
    result = project.sweeper("run", "one.py", "-n", "2", "--direction", "maximize")
    _assert_usage_error(result, "optimizes minimize", "--study")
    assert len(project.study("one").trials) == 2


def test_status_without_sweeps(project: Project) -> None:
    result = project.sweeper("status")
    _assert_usage_error(result, "no sweeps here")
    assert not project.journal.exists()


def test_status_of_unknown_study(project: Project) -> None:
    project.write("one.py", GOOD)
    assert project.sweeper("run", "one.py", "-n", "1").returncode == 0
    result = project.sweeper("best", "--study", "other")
    _assert_usage_error(result, "no study 'other'", "one")


def test_modal_without_credentials(project: Project, monkeypatch: pytest.MonkeyPatch) -> None:
    project.write("one.py", GOOD)
    env = {"HOME": str(project.path), "MODAL_TOKEN_ID": "", "MODAL_TOKEN_SECRET": ""}
    result = project.sweeper("run", "one.py", "-n", "2", "--backend", "modal", env=env)
    _assert_usage_error(result, "needs Modal credentials", "modal setup", "MODAL_TOKEN_ID")
    assert project.study_names() == []
    result = project.sweeper("ui", "--backend", "modal", env=env)
    _assert_usage_error(result, "needs Modal credentials")
