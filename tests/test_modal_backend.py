"""What only the Modal backend has to get right, offline: lost and preempted containers,
the Aim hub, the trial channel over a queue, and the Modal definitions themselves."""

from __future__ import annotations

import logging
import queue
import threading
from pathlib import Path
from typing import Any

import contract_objectives as objectives
import modal
import numpy
import optuna
import pytest
from conftest import states
from modal_standin import FakeQueue, Faults, fake_tunnels
from optuna.trial import TrialState
from test_contract import Harness

from sweeper.backends import _modal
from sweeper.backends._modal_app import (
    DEFAULT_TIMEOUT,
    ModalSettings,
    TrialRequest,
    build,
    plan_images,
)
from sweeper.channel._base import ChannelClosed, TrialChannel
from sweeper.channel._messages import Reply
from sweeper.channel._queue import UP, QueueTransport, reply_partition
from sweeper.objective._ref import ObjectiveRef


@pytest.fixture
def harness(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Harness:
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("SWEEPER_VOLUME_MOUNT", str(tmp_path / "volume"))
    monkeypatch.setenv("SWEEPER_UI_HOST", "127.0.0.1")
    return Harness("modal", tmp_path)


def test_a_lost_container_fails_its_own_trial(harness: Harness, tmp_path: Path) -> None:
    # Trials 0-3 run two at a time; trial 1's container is killed. Each trial is a call of
    # its own, so the failure Modal returns is trial 1's, and says what happened.
    harness.run(objectives.resumable, Faults(lose={1}, after=0.3), n_trials=4, study="lost")
    trials = harness.study("lost").trials
    assert trials[1].state == TrialState.FAIL
    reason = trials[1].system_attrs["fail_reason"]
    assert reason.startswith("its Modal container was killed (exit code 137, SIGKILL)")
    assert "running out of memory" in reason and "--memory" in reason
    assert "[RemoteError: Runner failed with exit code: 137]" in reason
    assert [t.state for t in trials if t.number != 1] == [TrialState.COMPLETE] * 3
    # The trial's log has it too, where local workers' output goes.
    log = Path(trials[1].system_attrs["sweeper:log"]).read_text()
    assert "its Modal container was killed (exit code 137" in log
    assert len(harness.transport.sessions[0].calls) == 4  # one call per trial, none extra


def test_a_retried_trial_records_why_and_where_each_attempt_ran(
    harness: Harness, tmp_path: Path
) -> None:
    # --retries 1: trial 0's container is killed once; sweeper hands the trial to Modal
    # again, as the same Optuna trial, and records both attempts on it.
    harness.run(
        objectives.resumable,
        Faults(crash_once={0}, after=0.3),
        n_trials=2,
        study="retried",
        parallel=1,
        retries=1,
    )
    trials = harness.study("retried").trials
    assert states(harness.study("retried")) == {"COMPLETE": 2}
    first = trials[0]
    assert first.user_attrs["starts"] == 2  # the retry found the first attempt's checkpoint
    assert first.intermediate_values == {s: first.params["x"] + s for s in range(4)}
    attempts = first.system_attrs["sweeper:attempts"]
    assert [a["attempt"] for a in attempts] == [1, 2]
    assert attempts[0]["why"] is None
    assert attempts[1]["why"].startswith(
        "retried after: its Modal container was killed (exit code 137"
    )
    assert all("host" in a["worker"] for a in attempts)
    assert "sweeper:attempts" not in trials[1].system_attrs  # it ran once
    log = (tmp_path / ".sweeper" / "logs" / "retried" / "trial-0.log").read_text()
    assert "running it again (retry 1 of --retries 1)" in log and "attempt 2 started" in log
    assert len(harness.transport.sessions[0].calls) == 3  # trial 0 twice, trial 1 once


def test_a_preempted_trial_restarts_as_the_same_trial(harness: Harness, tmp_path: Path) -> None:
    aim = pytest.importorskip("aim")
    with fake_tunnels():
        harness.run(
            objectives.resumable,
            Faults(preempt={0}, after=0.3),
            n_trials=2,
            study="pre",
            parallel=1,
            track=True,
        )
    session = harness.transport.sessions[0]
    assert session.started.count(0) == 2  # Modal ran trial 0's input twice
    trials = harness.study("pre").trials
    assert states(harness.study("pre")) == {"COMPLETE": 2}  # still one Optuna trial each
    first = trials[0]
    # The restart is recorded on the trial: each attempt, where it ran, and why.
    attempts = first.system_attrs["sweeper:attempts"]
    assert [(a["attempt"], a["why"]) for a in attempts] == [
        (1, None),
        (2, _modal.RESTARTED_BY_MODAL),
    ]
    # The restart kept the parameter, found the checkpoint the first attempt left, and its
    # reports were not counted twice.
    assert first.user_attrs["starts"] == 2
    assert first.intermediate_values == {s: first.params["x"] + s for s in range(4)}
    assert trials[1].user_attrs["starts"] == 1
    # One Aim run for the trial, each step once (the first attempt's steps overwritten).
    from aim.storage.context import Context

    repo = aim.Repo.from_path(str(tmp_path / "volume" / "aim"))
    found = repo.query_runs("run.experiment == 'pre'", report_mode=0).iter_runs()
    runs = {item.run.name: item.run for item in found}
    assert set(runs) == {"trial 0", "trial 1", "study"}
    steps, (values, *_) = runs["trial 0"].get_metric("objective", Context({})).data.items_list()
    assert steps == [0, 1, 2, 3]
    assert values == pytest.approx([first.params["x"] + s for s in range(4)])


def test_results_that_overtake_their_calls_wait_for_them(
    harness: Harness, caplog: pytest.LogCaptureFixture
) -> None:
    # Calls travel over the queue, results through map: here every message on the queue is
    # slower than the result behind it. Once parameters are drawn ahead, a trial's last
    # calls (the parameters it used) are still on their way when its result arrives; the
    # result waits for them, and nothing is lost.
    with caplog.at_level(logging.WARNING, logger="sweeper"):
        harness.run(
            objectives.quadratic,
            Faults(slow_channel=0.3),
            n_trials=10,
            study="slow",
            sampler="random",
        )
    assert "never arrived" not in caplog.text  # no result was told without its calls
    study = harness.study("slow")
    assert states(study) == {"COMPLETE": 10}
    for trial in study.trials:
        assert trial.value == objectives.quadratic(optuna.trial.FixedTrial(trial.params))


def test_the_aim_hub_writes_the_repo_on_the_volume(harness: Harness, tmp_path: Path) -> None:
    pytest.importorskip("aim")
    with fake_tunnels():
        result = harness.run(
            objectives.learning, n_trials=4, study="hub", track=True, direction="maximize"
        )
    assert result.study is not None
    repo = tmp_path / "volume" / "aim"
    import aim

    runs = {
        item.run.name: item.run
        for item in aim.Repo.from_path(str(repo))
        .query_runs("run.experiment == 'hub'", report_mode=0)
        .iter_runs()
    }
    assert set(runs) == {f"trial {n}" for n in range(4)} | {"study"}
    spawned = harness.transport.sessions[0].spawned
    assert [name for name, _ in spawned if name != "run_trial"] == ["aim_hub"]
    assert [name for name, _ in spawned].count("run_trial") == 4


def test_hub_url_is_announced_with_a_secret_path(harness: Harness) -> None:
    pytest.importorskip("aim")
    with fake_tunnels():
        backend_notes = []
        original = _modal.ModalBackend._route

        def route(self: Any, item: Any) -> None:
            if item[0] == "url":
                backend_notes.append(item[1])
            original(self, item)

        _modal.ModalBackend._route = route  # type: ignore[method-assign]
        try:
            harness.run(objectives.quadratic, n_trials=2, study="url", track=True)
        finally:
            _modal.ModalBackend._route = original  # type: ignore[method-assign]
    assert len(backend_notes) == 1
    url = backend_notes[0]
    secret = url.rstrip("/").rsplit("/", 1)[-1]
    assert len(secret) >= 24  # unguessable path segment


# -- the channel over a queue ----------------------------------------------------------------


def test_queue_transport_round_trip_and_timeouts() -> None:
    channel_queue = FakeQueue()
    transport = QueueTransport(channel_queue, number=7, attempt=42, reply_timeout=10, heartbeat=0)
    channel = TrialChannel(transport, 7, attempt=42)
    channel.notify("report", 0.5, 0)

    answered = threading.Event()

    def orchestrator() -> None:
        kind, calls = channel_queue.get(partition=UP, timeout=5)
        assert kind == "calls" and [c.method for c in calls] == ["report"]
        kind, calls = channel_queue.get(partition=UP, timeout=5)
        (call,) = calls
        assert call.method == "should_prune" and call.attempt == 42
        channel_queue.put(
            Reply(7, call.seq, value=True, attempt=42), partition=reply_partition(7, 42)
        )
        answered.set()

    thread = threading.Thread(target=orchestrator)
    thread.start()
    assert channel.request("should_prune") is True
    thread.join()
    assert answered.is_set()
    # Nobody answers: the worker gives up with ChannelClosed, not a hang.
    impatient = QueueTransport(channel_queue, number=7, attempt=42, reply_timeout=0.2, heartbeat=0)
    with pytest.raises(ChannelClosed, match="no answer"):
        TrialChannel(impatient, 7, attempt=42).request("should_prune")


def test_queue_stand_in_has_modal_queue_semantics() -> None:
    channel_queue = FakeQueue()
    channel_queue.put_many([1, 2, 3], partition="a")
    channel_queue.put(4)
    assert channel_queue.get_many(10, partition="a") == [1, 2, 3]
    assert channel_queue.get() == 4
    with pytest.raises(queue.Empty):
        channel_queue.get(partition="a", timeout=0.05)
    with pytest.raises(modal.exception.InvalidError):
        channel_queue.put(1, partition="x" * 65)
    with pytest.raises(modal.exception.RequestSizeError):
        channel_queue.put(b"x" * (2 * 1024 * 1024))


def test_heartbeats_reach_the_up_partition() -> None:
    channel_queue = FakeQueue()
    transport = QueueTransport(channel_queue, number=3, attempt=9, heartbeat=0.05)
    try:
        item = channel_queue.get(partition=UP, timeout=2)
    finally:
        transport.close()
    assert item == ("beat", 3, 9)


# -- the Modal definitions, offline ----------------------------------------------------------


def _settings(**changes: Any) -> ModalSettings:
    return ModalSettings(**changes)


def test_trial_function_definition() -> None:
    ref = ObjectiveRef.from_file(
        str(Path(objectives.__file__).parent / "objectives" / "modes.py"), "objective"
    )
    deployment = build(
        _settings(
            gpu=["H100", "A100-80GB"],
            cpu=4.0,
            memory=16384,
            timeout=900,
            retries=2,
            secrets=("wandb", "hf"),
            volume="sweeps",
        ),
        ref,
    )
    info = deployment.run_trial.info()
    assert info.gpus == [("H100", 1), ("A100-80GB", 1)]
    # Sweeper hands a failed trial to Modal again itself (--retries), so that it knows why;
    # Modal's own retries would do it out of sight.
    assert (info.cpu, info.memory_mib, info.timeout) == (4.0, 16384, 900)
    assert info.max_retries in (0, None)
    assert set(info.volumes) == {"/sweeper"} and info.volumes["/sweeper"].name == "sweeps"
    assert info.secrets == ["modal.Secret.from_name('wandb')", "modal.Secret.from_name('hf')"]
    hub = deployment.aim_hub.info()
    assert hub.gpus in ([], None) and hub.timeout == 24 * 3600
    assert deployment.objective.path == "/root/sweeper_objective/modes.py"


def test_defaults_are_cpu_containers_without_retries() -> None:
    ref = ObjectiveRef.from_function(objectives.quadratic)
    info = build(_settings(), ref).run_trial.info()
    assert not info.gpus and info.max_retries in (0, None) and info.timeout == DEFAULT_TIMEOUT


def test_with_options_keeps_the_definition_usable() -> None:
    ref = ObjectiveRef.from_function(objectives.quadratic)
    function = build(_settings(gpu="A10G"), ref).run_trial
    variant = function.with_options(timeout=120, retries=1)
    info = variant.info()
    assert (info.timeout, info.max_retries, info.gpus) == (120, 1, [("A10G", 1)])


def test_image_contents(tmp_path: Path) -> None:
    objective = tmp_path / "train.py"
    helper = tmp_path / "helpers.py"
    objective.write_text(
        "import torch\nimport helpers\nimport optuna\ndef objective(trial):\n    return 1.0\n"
    )
    helper.write_text("VALUE = 1\n")
    trial_plan, hub_plan, remote = plan_images(
        _settings(python_version="3.11"), ObjectiveRef.from_file(objective, "objective")
    )
    packages = set(trial_plan.packages)
    assert f"optuna=={optuna.__version__}" in packages
    assert any(p.startswith("cloudpickle==") for p in packages)
    assert any(p.startswith("torch==") and "+" not in p for p in packages)  # not the CPU tag
    assert trial_plan.python_version == "3.11" and trial_plan.sources == ("sweeper",)
    assert dict(trial_plan.files) == {
        str(objective): "/root/sweeper_objective/train.py",
        str(helper): "/root/sweeper_objective/helpers.py",
    }
    assert remote.path == "/root/sweeper_objective/train.py"
    assert any(p.startswith("aim==") for p in hub_plan.packages)
    # What the user asks for replaces the guess.
    chosen, _, _ = plan_images(
        _settings(pip=("jax==0.4.30",)), ObjectiveRef.from_file(objective, "objective")
    )
    assert "jax==0.4.30" in chosen.packages and not any(
        p.startswith("torch") for p in chosen.packages
    )
    assert isinstance(trial_plan.to_image(), modal.Image)


def _uses_numpy(trial: Any) -> float:
    return float(numpy.sqrt(trial.suggest_float("x", 0, 4)))


def test_function_objective_packages() -> None:
    ref = ObjectiveRef.from_function(_uses_numpy)
    trial_plan, _, remote = plan_images(_settings(), ref)
    assert remote.pickled == ref.pickled  # sent by value with each trial
    assert ref.imports == ("numpy",)
    assert f"numpy=={numpy.__version__}" in trial_plan.packages
    assert ObjectiveRef.from_function(objectives.timed).imports == ()  # stdlib and sweeper


def test_trial_request_survives_a_pickle_round_trip() -> None:
    import cloudpickle

    from sweeper.trial import TrialSpec

    request = TrialRequest(
        spec=TrialSpec(number=1, study_name="s", directions=("minimize",)),
        objective=ObjectiveRef.from_function(objectives.quadratic),
        queue=FakeQueue(),
        study="s",
        root=1,
    )
    assert cloudpickle.loads(cloudpickle.dumps(request)).spec == request.spec


def test_importing_sweeper_and_examples_needs_no_credentials(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    import subprocess
    import sys

    env = {k: v for k, v in __import__("os").environ.items() if not k.startswith("MODAL_")}
    env["HOME"] = str(tmp_path)  # no ~/.modal.toml
    code = (
        "import sweeper, sweeper.backends._modal_app as m, runpy\n"
        "for f in ('quadratic', 'multi_objective'):\n"
        "    runpy.run_path(f'objectives/{f}.py', run_name='example')\n"
        "print('ok', m.has_credentials())"
    )
    out = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        env=env,
        cwd=Path(__file__).resolve().parent.parent,
        timeout=120,
    )
    assert out.stdout.strip() == "ok False", out.stderr


def test_most_suggestions_cost_no_round_trip(harness: Harness) -> None:
    harness.run(objectives.quadratic, n_trials=12, study="ahead", sampler="random")
    session = harness.transport.sessions[0]
    trials = harness.study("ahead").trials
    assert len(trials) == 12
    asked = session.queue.asked_suggestions  # suggest_* calls that waited for an answer
    # The first trials ask: the two in flight and the one asked ahead, all prepared before
    # any parameter was seen. Once the study has seen them, values come with the trial;
    # conditional `shift` may still be asked when a trial takes that branch first.
    later = [(number, name) for number, name in asked if number >= 3]
    assert all(name == "shift" for _, name in later) and len(later) <= 2, asked
    for trial in trials:  # and every parameter is still recorded as the objective saw it
        assert trial.value == objectives.quadratic(optuna.trial.FixedTrial(trial.params))
