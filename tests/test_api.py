"""sweeper.run from Python: objectives from __main__, event loops, interrupts, options."""

from __future__ import annotations

import inspect
import signal
import subprocess
import sys
import time
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


def test_interrupt_stops_gracefully_and_returns_the_study(project: Project) -> None:
    source = """
import time
import sweeper

def objective(trial):
    time.sleep(0.5)
    return trial.suggest_float("x", 0, 1)

study = sweeper.run(objective, study="stopped", n_trials=100, parallel=2, progress="plain")
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
    assert "RETURNED" in out, out + err
    assert "Interrupted" in err
    # Nothing left running or failed; the trial asked ahead waits in the queue.
    counts = states(project.study("stopped"))
    assert counts.keys() <= {"COMPLETE", "WAITING"} and counts.get("WAITING", 0) <= 1


def test_interrupting_a_jupyter_kernel(project: Project) -> None:
    jupyter_client = pytest.importorskip("jupyter_client")
    manager = jupyter_client.KernelManager(kernel_name="python3")
    manager.start_kernel(cwd=str(project.path), env=project.env)
    client = manager.client()
    client.start_channels()
    try:
        client.wait_for_ready(timeout=60)
        client.execute(
            "import time, sweeper\n"
            "def objective(trial):\n"
            "    time.sleep(0.5)\n"
            "    return trial.suggest_float('x', 0, 1)\n"
            "study = sweeper.run(objective, study='kernel', n_trials=100, parallel=2)\n"
        )
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            if "kernel" in project.study_names() and len(project.study("kernel").trials) >= 4:
                break
            time.sleep(0.1)
        manager.interrupt_kernel()
        reply = client.execute_interactive(
            "print(len(study.trials), sorted({t.state.name for t in study.trials}))",
            timeout=60,
        )
        assert reply["content"]["status"] == "ok"
    finally:
        client.stop_channels()
        manager.shutdown_kernel(now=True)
    study = project.study("kernel")
    assert 4 <= len(study.trials) < 100
    counts = states(study)  # nothing left running or failed; one asked ahead may wait
    assert counts.keys() <= {"COMPLETE", "WAITING"} and counts.get("WAITING", 0) <= 1


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
