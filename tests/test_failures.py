"""Each way a trial can fail is recorded as FAIL with the reason, and the sweep goes on."""

from __future__ import annotations

from pathlib import Path

import optuna
from conftest import Project
from optuna.trial import TrialState

# mode -> what the recorded reason must say
FAILURES = {
    "raise": "ValueError: bad value in trial",
    "exit": "exited with status 3",
    "segfault": "segmentation fault (SIGSEGV)",
    "killed": "SIGKILL",
    "nan": "NaN cannot be told",
    "none": "returned None",
    "text": "'fast', which is not a number",
    "sysexit": "sys.exit(4)",
    "sleep": "ran longer than the trial timeout of 3s",
}


def _enqueue(project: Project, modes: list[str]) -> None:
    storage = project.storage() if project.journal.exists() else None
    if storage is None:
        project.journal.parent.mkdir(parents=True, exist_ok=True)
        storage = project.storage()
    study = optuna.create_study(study_name="modes", storage=storage, load_if_exists=True)
    for mode in modes:
        study.enqueue_trial({"mode": mode})


def test_every_failure_mode_is_recorded_and_the_sweep_goes_on(project: Project) -> None:
    modes = [*FAILURES, "prune", "ok", "ok"]
    _enqueue(project, modes)
    result = project.sweeper(
        "run",
        project.objective("modes.py"),
        "-n",
        str(len(modes)),
        "-p",
        "3",
        "--trial-timeout",
        "3",
        "--progress",
        "plain",
    )
    assert result.returncode == 0, result.stderr
    study = project.study("modes")
    trials = {t.params["mode"]: t for t in study.trials}
    assert len(study.trials) == len(modes)
    for mode, reason in FAILURES.items():
        trial = trials[mode]
        assert trial.state == TrialState.FAIL, mode
        assert reason in trial.system_attrs["fail_reason"], (mode, trial.system_attrs)
        # The failure is shown to the user, and the trial's own output is kept.
        assert f"trial {trial.number} FAIL" in result.stderr
        log = Path(trial.system_attrs["sweeper:log"]).read_text()
        assert f"trial {trial.number} runs mode {mode}" in log
        if mode != "segfault" and mode != "killed" and mode != "exit":
            assert f"to stderr from trial {trial.number}" in log
    assert trials["prune"].state == TrialState.PRUNED
    assert trials["ok"].state == TrialState.COMPLETE
    # Exceptions keep their traceback, pointing into the user's file.
    assert "modes.py" in trials["raise"].system_attrs["fail_reason"]
    assert "Traceback" in trials["raise"].system_attrs["fail_reason"]
    # A segfault keeps the Python stack that faulthandler wrote.
    assert "in objective" in trials["segfault"].system_attrs["fail_reason"]


def test_crashed_workers_are_replaced(project: Project) -> None:
    _enqueue(project, ["exit", "segfault", "killed", "exit", "ok", "ok"])
    result = project.sweeper("run", project.objective("modes.py"), "-n", "6", "-p", "1")
    assert result.returncode == 0, result.stderr
    study = project.study("modes")
    assert [t.state for t in study.trials][-2:] == [TrialState.COMPLETE, TrialState.COMPLETE]


def test_all_failed_exits_nonzero(project: Project) -> None:
    _enqueue(project, ["raise", "raise"])
    result = project.sweeper("run", project.objective("modes.py"), "-n", "2", "-p", "1")
    assert result.returncode == 1
    assert "every trial failed" in result.stderr
    # The traceback is shown once; the second identical failure gets one line.
    assert result.stderr.count("Traceback") == 1


def test_wrong_number_of_values_after_a_good_trial_fails_that_trial(project: Project) -> None:
    _enqueue(project, ["ok", "pair", "ok"])
    result = project.sweeper("run", project.objective("modes.py"), "-n", "3", "-p", "1")
    assert result.returncode == 0, result.stderr
    trials = project.study("modes").trials
    assert [t.state for t in trials] == [TrialState.COMPLETE, TrialState.FAIL, TrialState.COMPLETE]
    assert (
        "returned 2 values but the study has 1 direction"
        in (trials[1].system_attrs["fail_reason"])
    )
