"""Interruptions: kill -9 of the orchestrator, Ctrl-C once and twice, and resuming after."""

from __future__ import annotations

import signal
import time
from collections.abc import Callable

import psutil
from conftest import Project, states
from optuna.trial import TrialState

SLOW = """
import time

def objective(trial):
    x = trial.suggest_float("x", 0, 1)
    for step in range(4):
        time.sleep({step_seconds})
        trial.report(x + step, step)
    return x
"""


def _wait_for(condition: Callable[[], bool], timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError("timed out waiting")
        time.sleep(0.05)


def _count(project: Project, state: TrialState) -> int:
    if "slow" not in project.study_names():
        return 0
    return sum(t.state == state for t in project.study("slow").get_trials(deepcopy=False))


def _on_workers(project: Project) -> int:
    """Running trials a worker has (the objective suggests x first); a trial asked ahead of
    demand is RUNNING too, but has no parameter yet."""
    if "slow" not in project.study_names():
        return 0
    trials = project.study("slow").get_trials(deepcopy=False, states=(TrialState.RUNNING,))
    return sum(bool(t.params) for t in trials)


def test_kill_9_loses_nothing_and_the_next_run_reruns_interrupted_trials(project: Project) -> None:
    project.write("slow.py", SLOW.format(step_seconds=0.1))
    process = project.start("run", "slow.py", "-n", "40", "-p", "2", "--pruner", "none")
    _wait_for(
        lambda: (
            _count(project, TrialState.COMPLETE) >= 3 and _count(project, TrialState.RUNNING) >= 2
        )
    )
    children = psutil.Process(process.pid).children()
    assert len(children) == 4  # two workers, the tracking hub, the auto sampler's process
    process.kill()
    process.wait()
    # They notice and exit; no orphan keeps training.
    _, alive = psutil.wait_procs(children, timeout=10)
    assert not alive

    before = {t.number: t for t in project.study("slow").trials}
    running = [n for n, t in before.items() if t.state == TrialState.RUNNING]
    # Trials that reached a worker (they have a parameter), and trials asked ahead of
    # demand (or killed before their first suggestion), which recorded nothing.
    interrupted = [n for n in running if before[n].params]
    unstarted = [n for n in running if not before[n].params]
    finished = {n: t for n, t in before.items() if t.state == TrialState.COMPLETE}
    assert 1 <= len(interrupted) <= 2  # a slot may have been between tell and ask

    result = project.sweeper("run", "slow.py", "-n", "4", "-p", "2", "--pruner", "none")
    assert result.returncode == 0, result.stderr
    assert "left RUNNING by a sweep that stopped" in result.stderr
    after = {t.number: t for t in project.study("slow").trials}
    for number, trial in finished.items():  # nothing finished was lost or changed
        assert after[number].state == TrialState.COMPLETE
        assert after[number].values == trial.values
        assert after[number].intermediate_values == trial.intermediate_values
    for number in interrupted:
        assert after[number].state == TrialState.FAIL
        assert "interrupted" in after[number].system_attrs["fail_reason"]
        reruns = [t for t in after.values() if t.system_attrs.get("sweeper:retry_of") == number]
        shown = [(t.number, t.state.name, t.params, t.system_attrs) for t in reruns]
        # run again exactly once, with the same parameters
        assert len(reruns) == 1, f"{number}: {shown}\n{result.stderr[-3000:]}"
        assert reruns[0].params == before[number].params
        assert reruns[0].state == TrialState.COMPLETE
    for number in unstarted:  # not failures: back in the queue, and run under their number
        assert after[number].state == TrialState.COMPLETE
        assert after[number].system_attrs.get("sweeper:returned") is True
    if unstarted:
        assert "never started: back in the queue" in result.stderr
    assert states(project.study("slow")).get("RUNNING", 0) == 0
    # This run's 4 trials: the unstarted ones (which carry the reruns first), then new ones.
    assert len(after) == len(before) + 4 - len(unstarted)
    for trial in after.values():
        if trial.state == TrialState.COMPLETE:
            assert sorted(trial.intermediate_values) == [0, 1, 2, 3]

    # A third run does not run them yet again.
    again = project.sweeper("run", "slow.py", "-n", "1", "-p", "1", "--pruner", "none")
    assert again.returncode == 0, again.stderr
    retried = [
        t
        for t in project.study("slow").trials
        if t.system_attrs.get("sweeper:retry_of") is not None
    ]
    assert len(retried) == len(interrupted)


def test_ctrl_c_lets_running_trials_finish(project: Project) -> None:
    project.write("slow.py", SLOW.format(step_seconds=0.25))
    # More trials than the test waits for: Ctrl-C ends the sweep, never its budget.
    process = project.start("run", "slow.py", "-n", "200", "-p", "2", "--pruner", "none")
    _wait_for(
        lambda: _count(project, TrialState.COMPLETE) >= 2 and _on_workers(project) == 2,
        timeout=90,
    )
    process.send_signal(signal.SIGINT)
    _, stderr = process.communicate(timeout=30)
    assert process.returncode == 130, stderr
    assert "Ctrl-C" in stderr
    counts = states(project.study("slow"))
    assert counts.get("RUNNING", 0) == 0
    assert counts.get("FAIL", 0) == 0
    assert counts["COMPLETE"] >= 4


def test_second_ctrl_c_stops_at_once_and_records_everything(project: Project) -> None:
    project.write("slow.py", SLOW.format(step_seconds=30))
    process = project.start("run", "slow.py", "-n", "40", "-p", "2", "--pruner", "none")
    _wait_for(lambda: _on_workers(project) == 2, timeout=90)  # both workers have a trial
    process.send_signal(signal.SIGINT)
    time.sleep(0.3)
    started = time.monotonic()
    process.send_signal(signal.SIGINT)
    stdout, stderr = process.communicate(timeout=90)
    # At once: the running trials had two minutes of sleeping left; stopping does not wait
    # for them (a minute leaves a busy machine room to write down what it stopped).
    assert time.monotonic() - started < 60
    assert process.returncode == 130, stderr
    trials = project.study("slow").trials
    ran = [t for t in trials if t.state != TrialState.WAITING]
    ahead = [t for t in trials if t.state == TrialState.WAITING]  # asked ahead, put back
    assert [t.state for t in ran] == [TrialState.FAIL, TrialState.FAIL]
    assert all(t.system_attrs.get("sweeper:interrupted") for t in ran)
    assert all(t.system_attrs.get("sweeper:returned") and not t.params for t in ahead)
    if ahead:  # and the summary says so
        assert "asked ahead did not start" in stdout

    project.write("slow.py", SLOW.format(step_seconds=0.01))
    result = project.sweeper("run", "slow.py", "-n", "2", "-p", "2", "--pruner", "none")
    assert result.returncode == 0, result.stderr
    # The interrupted trials run again first, in the trials put back before any new one.
    rerun = [
        t
        for t in project.study("slow").trials
        if t.system_attrs.get("sweeper:retry_of") is not None
    ]
    assert sorted(t.params["x"] for t in rerun) == sorted(t.params["x"] for t in ran)
    assert all(t.state == TrialState.COMPLETE for t in rerun)


def test_sigterm_stops_like_a_second_ctrl_c(project: Project) -> None:
    project.write("slow.py", SLOW.format(step_seconds=5))
    process = project.start("run", "slow.py", "-n", "4", "-p", "1", "--pruner", "none")
    _wait_for(lambda: _count(project, TrialState.RUNNING) >= 1)
    time.sleep(0.5)  # the worker has its trial
    process.send_signal(signal.SIGTERM)
    process.communicate(timeout=30)
    assert process.returncode == 130
    trials = project.study("slow").trials
    assert trials[0].state == TrialState.FAIL  # the running one; any other was put back
    assert all(t.state == TrialState.WAITING for t in trials[1:])
