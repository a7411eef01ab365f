"""sweeper.run from Python: objectives from __main__, event loops, interrupts, options.

In a Jupyter kernel: tests/test_kernel.py.
"""

from __future__ import annotations

import inspect
import signal
import subprocess
import sys
import time
import traceback
from pathlib import Path

import optuna
import pytest
from conftest import Project, states

import sweeper
from sweeper._config import OPTION_NAMES

MAIN_OBJECTIVE = """
import sys
import sweeper

OFFSET = 3.0  # a global the objective uses


def shifted(x):  # a helper the objective uses
    return (x - OFFSET) ** 2


def objective(trial):
    return shifted(trial.suggest_float("x", -10, 10))


study = sweeper.run(objective, study="main", n_trials=6, parallel=2, progress=False)
print("TRIALS", len(study.trials), "BEST", round(study.best_value, 3))
"""


def _python(project: Project, source: str, *args: str) -> subprocess.Popen[str]:
    path = project.write("script.py", source)
    return subprocess.Popen(
        [sys.executable, str(path), *args],
        cwd=project.path,
        env=project.env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def test_objective_defined_in_main_with_helpers_and_globals(project: Project) -> None:
    process = _python(project, MAIN_OBJECTIVE)
    out, err = process.communicate(timeout=120)
    assert process.returncode == 0, err
    assert "TRIALS 6" in out
    for trial in project.study("main").trials:
        assert trial.value == pytest.approx((trial.params["x"] - 3.0) ** 2)


def test_inside_a_running_event_loop(project: Project) -> None:
    source = MAIN_OBJECTIVE.replace(
        'study = sweeper.run(objective, study="main", n_trials=6, parallel=2, progress=False)',
        "import asyncio\n\n"
        "async def main():\n"
        '    return sweeper.run(objective, study="main", n_trials=6, parallel=2, progress=False)\n'
        "\n"
        "study = asyncio.run(main())",
    )
    process = _python(project, source)
    out, err = process.communicate(timeout=120)
    assert process.returncode == 0, err
    assert "TRIALS 6" in out


def test_interrupt_stops_gracefully_then_raises_keyboard_interrupt(project: Project) -> None:
    source = """
import time
import sweeper

def objective(trial):
    time.sleep(0.5)
    return trial.suggest_float("x", 0, 1)

try:
    study = sweeper.run(objective, study="stopped", n_trials=100, parallel=2, progress="plain")
except KeyboardInterrupt as interrupted:  # as study.optimize raises it
    print("RAISED", type(interrupted).__name__)
    study = interrupted.study
states = sorted({t.state.name for t in study.trials})
print("RETURNED", len(study.trials), states)
"""
    process = _python(project, source)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if "stopped" in project.study_names() and len(project.study("stopped").trials) >= 4:
            break
        time.sleep(0.1)
    process.send_signal(signal.SIGINT)
    out, err = process.communicate(timeout=60)
    assert process.returncode == 0, err
    assert "RAISED SweepInterrupted" in out, out + err
    assert "RETURNED" in out, out + err
    assert "Interrupted" in err
    # Nothing left running or failed; the trial asked ahead waits in the queue.
    counts = states(project.study("stopped"))
    assert counts.keys() <= {"COMPLETE", "WAITING"} and counts.get("WAITING", 0) <= 1


def test_a_sweep_whose_every_trial_fails_raises_with_the_first_traceback(
    project: Project,
) -> None:
    source = """
import sweeper

def objective(trial):
    x = trial.suggest_float("x", 0, 1)
    raise ValueError(f"bad x {x}")

sweeper.run(objective, n_trials=3, parallel=2, track=False, progress=False)
print("GOES ON")
"""
    process = _python(project, source)
    out, err = process.communicate(timeout=120)
    assert process.returncode == 1 and "GOES ON" not in out
    assert "sweeper._errors.SweepFailed: every trial of this sweep failed (3)" in err
    # The first failure's traceback, with the user's file and line, not sweeper's frames.
    assert f'File "{project.path / "script.py"}", line 6, in objective' in err
    assert 'raise ValueError(f"bad x {x}")' in err
    assert "_runner.py" not in err and "_orchestrator.py" not in err


def test_errors_are_in_the_apis_words_and_raised_from_run(project: Project) -> None:
    def objective(trial: optuna.Trial) -> float:
        return trial.suggest_float("x", 0, 1)

    sweeper.run(objective, study="words", n_trials=1, track=False, progress=False)
    with pytest.raises(sweeper.StorageError) as raised:
        sweeper.run(objective, study="words", direction="maximize", n_trials=1, progress=False)
    message = str(raised.value)
    assert "Drop direction= to continue the study, or name a new one with study=." in message
    assert "--" not in message
    frames = traceback.extract_tb(raised.value.__traceback__)
    assert [Path(f.filename).name for f in frames] == ["test_api.py", "_api.py"]


def test_a_continued_study_keeps_its_sampler_and_pruner(project: Project) -> None:
    def objective(trial: optuna.Trial) -> float:
        return trial.suggest_float("x", 0, 1)

    options = {"n_trials": 2, "parallel": 2, "track": False, "progress": False}
    first = sweeper.run(
        objective,
        sampler="random",
        pruner="percentile",
        pruner_args={"percentile": 30.0, "n_warmup_steps": 2},
        **options,
    )
    assert isinstance(first.sampler, optuna.samplers.RandomSampler)
    again = sweeper.run(objective, **options)  # as study.optimize called again
    assert len(again.trials) == 4
    assert isinstance(again.sampler, optuna.samplers.RandomSampler)
    assert isinstance(again.pruner, optuna.pruners.PercentilePruner)
    assert again.pruner._percentile == 30.0 and again.pruner._n_warmup_steps == 2
    other = sweeper.run(objective, pruner="none", **options)  # named again: that one
    assert isinstance(other.pruner, optuna.pruners.NopPruner)
    assert isinstance(other.sampler, optuna.samplers.RandomSampler)


LAMBDAS = (lambda t: t.suggest_float("x", 0, 1), lambda t: -t.suggest_float("x", 0, 1))


def _closure(low: float):  # type: ignore[no-untyped-def]
    def objective(trial: optuna.Trial) -> float:
        return trial.suggest_float("x", low, 10)

    return objective


def test_lambdas_closures_and_edited_functions_get_studies_of_their_own(
    project: Project,
) -> None:
    options = {"n_trials": 1, "sampler": "random", "track": False, "progress": False}
    names = [
        sweeper.run(LAMBDAS[0], **options).study_name,
        sweeper.run(LAMBDAS[1], **options).study_name,
        sweeper.run(_closure(1.0), **options).study_name,
        sweeper.run(_closure(2.0), **options).study_name,
        sweeper.run(_closure(1.0), **options).study_name,  # the same objective again
    ]
    closure = "_closure.objective"
    assert names == ["lambda", "lambda-2", closure, f"{closure}-2", closure]
    assert len(project.study("_closure.objective").trials) == 2


def test_print_in_the_objective_shows_prefixed_by_the_trial(
    project: Project, capsys: pytest.CaptureFixture[str]
) -> None:
    def objective(trial: optuna.Trial) -> float:
        print(f"printed by {trial.number}")
        print("to stderr", file=sys.stderr)
        return trial.suggest_float("x", 0, 1)

    study = sweeper.run(
        objective, n_trials=2, parallel=1, sampler="random", track=False, progress="plain"
    )
    err = capsys.readouterr().err
    assert "[trial 0] printed by 0" in err and "[trial 1] printed by 1" in err
    assert "[trial 0] to stderr" in err
    log = project.path / ".sweeper" / "logs" / study.study_name / "trial-0.log"
    assert "printed by 0" in log.read_text()  # and kept in the trial's log


def test_every_cli_option_is_a_keyword_argument() -> None:
    parameters = inspect.signature(sweeper.run).parameters
    for name in OPTION_NAMES:
        assert {"directions": "direction"}.get(name, name) in parameters, name
    assert "objective" in parameters  # --objective


def test_run_a_file_with_an_optuna_sampler_object(project: Project) -> None:
    objective_file = Path(project.objective("attrs.py"))
    study = sweeper.run(
        f"{objective_file}:objective",
        n_trials=4,
        parallel=2,
        sampler=optuna.samplers.RandomSampler(seed=0),
        track=False,
        progress=False,
    )
    assert study.study_name == "attrs"
    assert states(study) == {"COMPLETE": 4}


def test_bad_options_raise_a_usage_error(project: Project) -> None:
    with pytest.raises(sweeper.UsageError, match="n_trials must be at least 1"):
        sweeper.run(lambda trial: 1.0, n_trials=0)
    with pytest.raises(sweeper.ObjectiveError, match="cannot be called with one argument"):
        sweeper.run(lambda: 1.0, n_trials=1, progress=False)
