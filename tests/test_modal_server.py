"""sweeper's real Modal path against a fake Modal server (tests/fake_modal).

Here nothing of Modal is replaced on the client's side: ``app.run()``, ``Function.map.aio``,
``Function.spawn``, ``modal.Queue``, ``modal.Volume``, serialization and ``modal.Retries`` are
modal's own code, sending modal's own requests to a server that speaks Modal's gRPC API on a
local socket. Containers are processes that run modal's container entrypoint and sweeper's
``run_trial_remote``. Faults are injected on the server, where Modal produces them.
"""

from __future__ import annotations

import asyncio
import os
import queue
import threading
import traceback
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import contract_objectives as objectives
import fake_modal
import modal
import optuna
import pytest
from conftest import states
from fake_modal import FakeModal, InputView, Rpc, Running
from grpclib import Status
from modal_proto import api_pb2
from optuna.storages.journal._storage import JournalOperation
from optuna.trial import TrialState
from test_contract import max_outstanding

from sweeper import _api
from sweeper._errors import BackendError
from sweeper.backends._modal import RESTARTED_BY_MODAL, ModalBackend
from sweeper.backends._modal_setup import make_modal_backend
from sweeper.channel import _queue
from sweeper.orchestrator import SweepResult, sweep
from sweeper.progress import Reporter

TESTS = Path(__file__).parent

IDLE_RPCS_PER_SECOND = 0.5
"""What the orchestrator may send while its trials run and call nothing: renewals of its long
polls (30 s and 55 s) and Modal's app heartbeat (15 s). Polling the channel every 0.5 s, it
sent 4 a second."""


@pytest.fixture
def modal_server(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[FakeModal]:
    """A fake Modal server, with modal's client pointed at it (fake credentials)."""
    monkeypatch.chdir(tmp_path)
    for key in list(os.environ):
        if key.startswith("SWEEPER_"):
            monkeypatch.delenv(key)
    monkeypatch.setenv("SWEEPER_UI_HOST", "127.0.0.1")  # the hub's UI: only the tunnel
    with fake_modal.serving(monkeypatch) as server:
        yield server


def trial(number: int) -> Any:
    """Picks the input of sweeper's trial ``number`` (its ``TrialRequest``)."""

    def match(view: InputView) -> bool:
        return view.function == "run_trial" and view.args[0].spec.number == number

    return match


def calls_in(rpc: Rpc) -> list[str]:
    """The trial calls (their methods) that a QueuePut carries to the orchestrator."""
    if rpc.name != "QueuePut" or rpc.request.partition_key != _queue.UP.encode():
        return []
    return [
        call.method
        for item in map(fake_modal.decode, rpc.request.values)
        if item[0] == "calls"
        for call in item[1]
    ]


def after_delivered(method: str) -> Any:
    """The first batch of calls a container sends once one with ``method`` has arrived."""

    def on(rpc: Rpc, run: Running | None) -> bool:
        assert run is not None
        earlier = [c for r in run.rpcs[:-1] if not r.dropped for c in calls_in(r)]
        return bool(calls_in(rpc)) and method in earlier

    return on


class Sweep:
    """Runs sweeps through sweeper's real Modal backend (``make_modal_backend``)."""

    def __init__(self, workdir: Path) -> None:
        self.workdir = workdir
        self.backend: ModalBackend | None = None

    def run(self, objective: Any, **options: Any) -> SweepResult:
        options = {"parallel": 2, "track": False, "backend": "modal", **options}
        ref, config, notes = _api.prepare(objective, objective=None, options=options)
        self.backend = make_modal_backend(ref, config, config.parallel or 1)
        return sweep(
            ref,
            config,
            reporter=Reporter(),
            workdir=self.workdir,
            notes=notes,
            backend=self.backend,
        )

    def study(self, name: str) -> optuna.Study:
        storage = optuna.storages.journal.JournalStorage(
            optuna.storages.journal.JournalFileBackend(
                str(self.workdir / ".sweeper" / "optuna.journal")
            )
        )
        return optuna.load_study(study_name=name, storage=storage)


@pytest.fixture
def sweeps(tmp_path: Path) -> Sweep:
    return Sweep(tmp_path)


def assert_clean(server: FakeModal) -> None:
    """Every request was one Modal accepts, and the fake answered all of them."""
    assert server.invalid == []
    assert server.unimplemented == []
    assert server.errors == []


# -- a sweep, and what it sends ----------------------------------------------------------------


def test_a_sweep_runs_every_trial_once_with_parallel_in_flight(
    modal_server: FakeModal, sweeps: Sweep, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("CONTRACT_DIR", str(tmp_path))  # `timed` sleeps 0.2-0.5 s
    sweeps.run(objectives.timed, n_trials=6, parallel=2, study="t", sampler="random")
    study = sweeps.study("t")
    assert states(study) == {"COMPLETE": 6}
    assert [t.number for t in study.trials] == list(range(6))
    functions = modal_server.service.functions
    (run_trial,) = [f for f in functions.functions.values() if f.name == "run_trial"]
    calls = [c for c in functions.calls.values() if c.function is run_trial]
    # One call per trial (Function.spawn), so that each output says whose it is.
    assert len(calls) == 6
    assert all(c.call_type == api_pb2.FUNCTION_CALL_TYPE_UNARY for c in calls)
    assert all(c.invocation_type == api_pb2.FUNCTION_CALL_INVOCATION_TYPE_ASYNC for c in calls)
    inputs = [i for c in calls for i in c.inputs.values()]
    assert len(inputs) == 6 and all(i.done and i.starts == 1 for i in inputs)
    assert max_outstanding(modal_server) == 2  # exactly `parallel` inputs were out at once
    assert run_trial.max_running == 2  # and ran at once,
    assert len(run_trial.containers) == 2  # on two containers that took turns
    assert_clean(modal_server)


def test_each_trial_costs_two_requests_of_the_client_and_nothing_more(
    modal_server: FakeModal, sweeps: Sweep, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # What the client sends for the trials themselves: the call with its input
    # (FunctionMap, the input pipelined) and the long poll its output answers
    # (FunctionGetOutputs). An input of one map cost the same: FunctionPutInputs, and its
    # share of the map's polls.
    monkeypatch.setenv("CONTRACT_DIR", str(tmp_path))
    sweeps.run(objectives.timed, n_trials=8, parallel=2, study="rpcs", sampler="random")
    functions = modal_server.service.functions
    (run_trial,) = [f for f in functions.functions.values() if f.name == "run_trial"]
    calls = {c.call_id for c in functions.calls.values() if c.function is run_trial}
    maps = [
        r for r in modal_server.requests("FunctionMap") if r.function_id == run_trial.function_id
    ]
    polls = [r for r in modal_server.requests("FunctionGetOutputs") if r.function_call_id in calls]
    assert len(maps) == 8 and all(len(r.pipelined_inputs) == 1 for r in maps)
    assert len(polls) == 8  # one each: the trials are far shorter than a poll (55 s)
    assert modal_server.requests("FunctionPutInputs") == []
    assert_clean(modal_server)


def test_idle_polling_is_long_polling(
    modal_server: FakeModal, sweeps: Sweep, tmp_path: Path
) -> None:
    objective = tmp_path / "idle.py"
    objective.write_text(
        "import time\n\n"
        "def objective(trial):\n"
        "    x = trial.suggest_float('x', 0, 1)\n"
        "    time.sleep(8)\n"
        "    return x\n"
    )
    sweeps.run(str(objective), n_trials=1, parallel=1, study="idle")
    rpcs = list(modal_server.rpcs)
    # From the orchestrator's last answer to the trial (its parameter) until the trial's
    # result, the trial calls nothing: what the orchestrator sends then is its idle polling.
    answer = [r for r in rpcs if r.name == "QueuePut" and r.request.partition_key[:1] == b"r"][-1]
    (result,) = [r for r in rpcs if r.name == "FunctionPutOutputs"]
    quiet = [r for r in rpcs if answer.at < r.at < result.at and not r.from_container]
    seconds = result.at - answer.at
    assert seconds > 7  # so Modal's own periodic requests (15 s apart and more) stay under
    assert len(quiet) / seconds <= IDLE_RPCS_PER_SECOND, fake_modal.summary(quiet)
    assert_clean(modal_server)


# -- faults ------------------------------------------------------------------------------------


def journal_ops(sweeps: Sweep, op: Any) -> list[dict[str, Any]]:
    backend = optuna.storages.journal.JournalFileBackend(
        str(sweeps.workdir / ".sweeper" / "optuna.journal")
    )
    return [log for log in backend.read_logs(0) if log["op_code"] == op]


def test_a_preempted_trial_is_rerun_as_the_same_trial(
    modal_server: FakeModal, sweeps: Sweep
) -> None:
    # Trial 0's container dies as it sends the batch of calls after its first reports: those
    # arrived, the rest never leaves it. Modal runs the same input again on a new container.
    fault = modal_server.faults.add("preempt", match=trial(0), on=after_delivered("report"))
    sweeps.run(objectives.resumable, n_trials=2, parallel=1, study="pre")
    trials = sweeps.study("pre").trials
    assert states(sweeps.study("pre")) == {"COMPLETE": 2}
    first = trials[0]
    # The new attempt found the checkpoint the first one committed to the Volume.
    assert first.user_attrs["starts"] == 2
    assert first.intermediate_values == {s: first.params["x"] + s for s in range(4)}
    functions = modal_server.service.functions
    (rerun,) = [functions.inputs[i] for i in fault.fired]
    assert rerun.starts == 2 and rerun.retry_count == 0  # the same input, not a retry
    dead, new = rerun.runs
    assert dead != new and modal_server.requests("FunctionRetryInputs") == []
    # The first attempt's first reports reached the orchestrator; its last batch never did.
    (lost,) = [r for r in modal_server.rpcs if r.dropped]
    assert lost.peer == dead and lost.name == "QueuePut"
    delivered = [
        c for r in modal_server.rpcs if r.peer == dead and not r.dropped for c in calls_in(r)
    ]
    assert "report" in delivered and calls_in(lost)
    # The new attempt's reports replace the first one's (here they are the same values):
    # the study shows the curve of the attempt that finished.
    reports = journal_ops(sweeps, JournalOperation.SET_TRIAL_INTERMEDIATE_VALUE)
    trial_ids = {t.number: t._trial_id for t in trials}
    steps = [r["step"] for r in reports if r["trial_id"] == trial_ids[0]]
    assert sorted(set(steps)) == [0, 1, 2, 3] and steps[-4:] == [0, 1, 2, 3]
    # The restart is recorded on the trial: both attempts, the containers, and why.
    attempts = first.system_attrs["sweeper:attempts"]
    assert [(a["attempt"], a["why"]) for a in attempts] == [(1, None), (2, RESTARTED_BY_MODAL)]
    assert [a["worker"]["modal_task"] for a in attempts] == [dead, new]
    assert_clean(modal_server)


def test_a_crashed_container_fails_its_own_trial_and_frees_its_slot_at_once(
    modal_server: FakeModal, sweeps: Sweep, tmp_path: Path
) -> None:
    # Trial 1's container is killed (out of memory, say) while trial 0 runs: trial 1's own
    # call fails, so its slot frees at once and trial 2 starts while trial 0 still runs.
    # Trial 0 waits for trial 2 to start (up to 20 s: guessing which trial a failure of a
    # map was, by the silence of its heartbeats, took 25 s and more).
    released = tmp_path / "trial-2-started"
    objective = tmp_path / "waits.py"
    objective.write_text(
        "import os, time\n\n"
        "def objective(trial):\n"
        "    x = trial.suggest_float('x', 0, 1)\n"
        "    trial.report(x, 0)\n"
        "    time.sleep(0.7)  # the report goes out; trial 1's next batch is where it dies\n"
        "    trial.report(x, 1)\n"
        "    if trial.number == 2:\n"
        f"        open({str(released)!r}, 'w').close()\n"
        "    if trial.number == 0:\n"
        "        deadline = time.monotonic() + 20\n"
        f"        while not os.path.exists({str(released)!r}) and time.monotonic() < deadline:\n"
        "            time.sleep(0.05)\n"
        f"        trial.set_user_attr('waited_for_trial_2', os.path.exists({str(released)!r}))\n"
        "    time.sleep(0.5)\n"
        "    return x\n"
    )
    modal_server.faults.add("crash", match=trial(1), on=after_delivered("report"))
    sweeps.run(str(objective), n_trials=4, parallel=2, study="crash")
    trials = sweeps.study("crash").trials
    assert trials[1].state == TrialState.FAIL
    assert trials[0].user_attrs["waited_for_trial_2"] is True
    reason = trials[1].system_attrs["fail_reason"]
    assert reason.startswith("its Modal container was killed (exit code 137, SIGKILL)")
    assert "[RemoteError: Runner failed with exit code: 137]" in reason
    assert [t.state for t in trials if t.number != 1] == [TrialState.COMPLETE] * 3
    log = Path(trials[1].system_attrs["sweeper:log"]).read_text()
    assert "its Modal container was killed (exit code 137" in log
    assert modal_server.requests("FunctionRetryInputs") == []  # no retries were asked for
    assert_clean(modal_server)


def test_retries_rerun_a_crashed_trial_as_the_same_trial_and_record_why(
    modal_server: FakeModal, sweeps: Sweep, tmp_path: Path
) -> None:
    fault = modal_server.faults.add("crash", match=trial(0), on=after_delivered("report"))
    sweeps.run(objectives.resumable, n_trials=2, parallel=1, study="retried", retries=1)
    trials = sweeps.study("retried").trials
    assert states(sweeps.study("retried")) == {"COMPLETE": 2}
    assert trials[0].user_attrs["starts"] == 2
    assert trials[0].intermediate_values == {s: trials[0].params["x"] + s for s in range(4)}
    # sweeper handed trial 0 to Modal again (a second call, not Modal's retry of the
    # input), so it knows why, and says so on the trial.
    functions = modal_server.service.functions
    (crashed,) = [functions.inputs[i] for i in fault.fired]
    assert crashed.starts == 1 and crashed.retry_count == 0
    assert modal_server.requests("FunctionRetryInputs") == []
    trial_0_calls = [
        c
        for c in functions.calls.values()
        if c.function.name == "run_trial"
        and any(InputView(i).args[0].spec.number == 0 for i in c.inputs.values())
    ]
    assert len(trial_0_calls) == 2
    attempts = trials[0].system_attrs["sweeper:attempts"]
    assert [a["attempt"] for a in attempts] == [1, 2]
    assert attempts[1]["why"].startswith(
        "retried after: its Modal container was killed (exit code 137"
    )
    assert attempts[0]["worker"]["modal_task"] != attempts[1]["worker"]["modal_task"]
    log = (tmp_path / ".sweeper" / "logs" / "retried" / "trial-0.log").read_text()
    assert "running it again (retry 1 of --retries 1)" in log
    (created,) = [
        c
        for c in modal_server.requests("FunctionCreate")
        if c.function.function_name == "run_trial"
    ]
    assert created.function.retry_policy.retries == 0  # Modal's own retries are not used
    assert_clean(modal_server)


def test_an_input_past_modal_timeout_fails_with_function_timeout_error(
    modal_server: FakeModal, sweeps: Sweep
) -> None:
    # Every input of run_trial may run 2 s here (the function's own timeout is hours).
    modal_server.timeouts["run_trial"] = 2.0
    _enqueue(sweeps, "slow", [{"mode": m} for m in ("sleep", "ok", "ok", "ok")])
    sweeps.run(objectives.modes, n_trials=4, parallel=2, study="slow")
    trials = sweeps.study("slow").trials
    assert trials[0].state == TrialState.FAIL
    reason = trials[0].system_attrs["fail_reason"]
    assert "FunctionTimeoutError" in reason and "hit its timeout of 2s" in reason
    assert [t.state for t in trials[1:]] == [TrialState.COMPLETE] * 3
    assert_clean(modal_server)


def test_an_input_that_raises_in_its_container_fails_its_trial(
    modal_server: FakeModal, sweeps: Sweep
) -> None:
    # The queue refuses trial 1's first call: sweeper's run_trial_remote raises in the
    # container, and Modal returns the exception (pickled, with its traceback) as the output.
    def refuse(rpc: Rpc, run: Running | None) -> bool:
        return run is not None and trial(1)(run.input) and calls_in(rpc) == ["started"]

    modal_server.faults.add("error", on=refuse, status=Status.NOT_FOUND, message="no such queue")
    sweeps.run(objectives.quadratic, n_trials=3, parallel=1, study="raises")
    trials = sweeps.study("raises").trials
    assert trials[1].state == TrialState.FAIL
    reason = trials[1].system_attrs["fail_reason"]
    first_line = reason.split("\n", 1)[0]
    assert first_line == (
        "run_trial raised ChannelClosed: cannot reach the orchestrator: no such queue in its "
        "Modal container (outside the objective)"
    )
    # The container's traceback is kept, in the trial's fail_reason and its log.
    assert "Traceback" in reason and "run_trial_remote" in reason
    log = Path(trials[1].system_attrs["sweeper:log"]).read_text()
    assert "run_trial_remote" in log and "ChannelClosed" in log
    assert [t.state for t in trials if t.number != 1] == [TrialState.COMPLETE] * 2
    (failed,) = [
        item
        for rpc in modal_server.rpcs
        if rpc.name == "FunctionPutOutputs"
        for item in rpc.request.outputs
        if item.result.status == api_pb2.GenericResult.GENERIC_STATUS_FAILURE
    ]
    assert (
        "ChannelClosed" in failed.result.exception
        and "run_trial_remote" in failed.result.traceback
    )
    assert_clean(modal_server)


def _enqueue(sweeps: Sweep, name: str, params: list[dict[str, Any]]) -> None:
    (sweeps.workdir / ".sweeper").mkdir(exist_ok=True)
    storage = optuna.storages.journal.JournalStorage(
        optuna.storages.journal.JournalFileBackend(
            str(sweeps.workdir / ".sweeper" / "optuna.journal")
        )
    )
    study = optuna.create_study(study_name=name, storage=storage, load_if_exists=True)
    for item in params:
        study.enqueue_trial(item)


def test_a_failing_image_build_stops_the_sweep_with_modal_error(
    modal_server: FakeModal, sweeps: Sweep
) -> None:
    modal_server.faults.failing_builds.append("pip install")
    with pytest.raises(BackendError, match="ImageBuildError") as raised:
        sweeps.run(objectives.quadratic, n_trials=2, study="image")
    assert "failed" in str(raised.value)
    assert modal_server.service.functions.containers == {}
    (disconnect,) = modal_server.requests("AppClientDisconnect")
    assert disconnect.reason == api_pb2.APP_DISCONNECT_REASON_LOCAL_EXCEPTION
    assert_clean(modal_server)


def test_a_missing_secret_stops_the_sweep_with_its_name(
    modal_server: FakeModal, sweeps: Sweep
) -> None:
    with pytest.raises(BackendError, match="Secret 'wandb' not found"):
        sweeps.run(objectives.quadratic, n_trials=2, study="secret", secrets=["wandb"])
    assert modal_server.service.functions.containers == {}
    assert_clean(modal_server)


def test_a_secret_reaches_the_containers_environment(
    modal_server: FakeModal, sweeps: Sweep, tmp_path: Path
) -> None:
    modal_server.add_secret("api", {"API_TOKEN": "s3cret"})
    objective = tmp_path / "uses_secret.py"
    objective.write_text(
        "import os\n\n"
        "def objective(trial):\n"
        "    trial.set_user_attr('token', os.environ.get('API_TOKEN'))\n"
        "    return trial.suggest_float('x', 0, 1)\n"
    )
    sweeps.run(str(objective), n_trials=1, parallel=1, study="uses_secret", secrets=["api"])
    (only,) = sweeps.study("uses_secret").trials
    assert only.user_attrs["token"] == "s3cret"
    assert_clean(modal_server)


# -- the Aim hub: Function.spawn, a tunnel, the Volume -----------------------------------------


def test_the_aim_hub_serves_its_ui_through_a_tunnel_and_commits_the_repo(
    modal_server: FakeModal, sweeps: Sweep, tmp_path: Path
) -> None:
    aim = pytest.importorskip("aim")
    # The trial waits until the test has loaded the UI through the tunnel (the hub stops
    # when the sweep ends).
    loaded = tmp_path / "ui-loaded"
    objective = tmp_path / "waits.py"
    objective.write_text(
        "import os, time\n\n"
        "def objective(trial):\n"
        "    x = trial.suggest_float('x', 0, 1)\n"
        "    trial.report(x, 0)\n"
        f"    while not os.path.exists({str(loaded)!r}):\n"
        "        time.sleep(0.05)\n"
        "    return x\n"
    )
    pages: list[tuple[int, bytes]] = []

    def load_ui() -> None:
        try:
            url = modal_server.wait_until(lambda: sweeps.backend and sweeps.backend.hub_url, 120)
            secret = url.rstrip("/").rsplit("/", 1)[-1]
            pages.append(modal_server.fetch(url))
            pages.append(modal_server.fetch(url + "api/projects/"))
            pages.append(modal_server.fetch(url.replace(secret, "guess")))
        finally:
            loaded.touch()

    loader = threading.Thread(target=load_ui)
    loader.start()
    try:
        sweeps.run(str(objective), n_trials=2, parallel=1, study="waits", track=True)
    finally:
        loaded.touch()
        loader.join()
    (page, api, guessed) = pages
    assert page[0] == 200 and b"<html" in page[1].lower()
    assert api[0] == 200
    assert guessed[0] == 404  # without the secret path, no UI
    url = sweeps.backend.hub_url if sweeps.backend else None
    assert url is not None and url.startswith("https://127.0.0.1:")
    assert len(url.rstrip("/").rsplit("/", 1)[-1]) >= 24
    # The hub was spawned (one input, not a map), and it committed the repo to the Volume.
    hub_calls = [
        c for c in modal_server.service.functions.calls.values() if c.function.name == "aim_hub"
    ]
    assert [c.call_type for c in hub_calls] == [api_pb2.FUNCTION_CALL_TYPE_UNARY]
    assert hub_calls[0].invocation_type == api_pb2.FUNCTION_CALL_INVOCATION_TYPE_ASYNC
    volume = modal_server.service.volumes.by_name("sweeper")
    assert volume.commits >= 1
    repo = aim.Repo.from_path(str(volume.path / "aim"))
    runs = {
        item.run.name
        for item in repo.query_runs("run.experiment == 'waits'", report_mode=0).iter_runs()
    }
    assert runs == {"trial 0", "trial 1", "study"}
    assert_clean(modal_server)


# -- modal's own API against the fake ----------------------------------------------------------


class Examples:
    """An App of fake_modal.examples' functions (their image carries fake_modal)."""

    def __init__(self, **options: Any) -> None:
        from fake_modal import examples

        self.volume = modal.Volume.from_name("examples", create_if_missing=True)
        self.app = modal.App("examples")
        image = modal.Image.debian_slim().add_local_python_source("fake_modal")
        for name in ("square", "fail", "sleep", "where", "write", "read"):
            function = self.app.function(
                image=image, name=name, volumes={"/data": self.volume}, **options
            )(getattr(examples, name))
            setattr(self, name, function)


def test_map_returns_outputs_and_remote_exceptions_with_their_tracebacks(
    modal_server: FakeModal,
) -> None:
    examples = Examples()
    with examples.app.run():
        assert list(examples.square.map([1, 2, 3])) == [1, 4, 9]
        results = list(examples.fail.map([7], return_exceptions=True))
        where = examples.where.remote()
    (error,) = results
    assert isinstance(error, ValueError) and str(error) == "no square for 7"
    remote = "".join(traceback.format_exception(error))
    assert "examples.py" in remote and "in fail" in remote  # the container's frames
    # The container imported the module from the image's mount, in its own /root.
    fs = Path(where["cwd"])
    assert fs.name == "root" and Path(where["module"]).is_relative_to(fs)
    assert where["path0"] == where["cwd"]
    assert_clean(modal_server)


def test_a_container_that_cannot_import_its_function_fails_its_inputs(
    modal_server: FakeModal,
) -> None:
    from fake_modal import examples

    app = modal.App("broken")
    # Modal mounts the function's own package unless told not to: here nothing has
    # fake_modal, and the container cannot import the function.
    square = app.function(image=modal.Image.debian_slim(), name="square", include_source=False)(
        examples.square
    )
    with app.run(), pytest.raises(ModuleNotFoundError, match="fake_modal"):
        square.remote(3)
    (task_result,) = modal_server.requests("TaskResult")
    assert "ModuleNotFoundError" in task_result.result.exception
    assert_clean(modal_server)


def test_a_crashed_or_timed_out_input_is_an_exception_without_an_index(
    modal_server: FakeModal,
) -> None:
    modal_server.faults.add("crash", match=lambda view: view.args == (1.0,), after=0.2)
    modal_server.timeouts["sleep"] = 1.5
    examples = Examples()

    async def run() -> list[Any]:
        stream = examples.sleep.map.aio(
            [1.0, 0.1, 5.0], order_outputs=False, return_exceptions=True
        )
        return [output async for output in stream]

    with examples.app.run():
        outputs = asyncio.run(run())
    # In completion order (which a busy machine may shuffle), nothing saying which input
    # each output was.
    assert 0.1 in outputs and len(outputs) == 3
    (crashed,) = [o for o in outputs if isinstance(o, modal.exception.RemoteError)]
    (timed_out,) = [o for o in outputs if isinstance(o, modal.exception.FunctionTimeoutError)]
    assert type(crashed) is modal.exception.RemoteError
    assert str(crashed) == "Runner failed with exit code: 137"
    assert type(timed_out) is modal.exception.FunctionTimeoutError
    assert "hit its timeout of 1.5s" in str(timed_out)
    assert_clean(modal_server)


def test_queue_partitions_and_blocking_gets(modal_server: FakeModal) -> None:
    with modal.Queue.ephemeral() as channel:
        channel.put_many([1, 2, 3], partition="a")
        channel.put("default")
        assert channel.get_many(10, partition="a") == [1, 2, 3]
        assert channel.get() == "default"
        assert channel.get(block=False, partition="a") is None
        with pytest.raises(queue.Empty):
            channel.get(partition="a", timeout=0.3)
        # A blocking get is answered as soon as another client puts.
        threading.Timer(0.3, channel.put, ("late",), {"partition": "b"}).start()
        assert channel.get(partition="b", timeout=20) == "late"
        with pytest.raises(modal.exception.InvalidError):
            channel.put(1, partition="x" * 65)
    gets = modal_server.requests("QueueGet")
    assert [g.timeout for g in gets[:2]] == [pytest.approx(50.0)] * 2  # modal's longest wait
    assert gets[2].timeout == 0  # block=False
    assert_clean(modal_server)


def test_volume_writes_reach_others_when_committed_and_reloaded(
    modal_server: FakeModal,
) -> None:
    examples = Examples()
    args = ("examples", "/data")
    with examples.app.run():  # `write` and `read` run in containers of their own
        assert examples.read.remote(*args, "a.txt", False) is None
        examples.write.remote(*args, "a.txt", "one", True)
        assert examples.read.remote(*args, "a.txt", False) is None  # its view is as it was
        assert examples.read.remote(*args, "a.txt", True) == "one"  # until it reloads
        examples.write.remote(*args, "b.txt", "two", False)  # not committed
        assert examples.read.remote(*args, "b.txt", True) is None
    volume = modal_server.service.volumes.by_name("examples")
    assert (volume.path / "a.txt").read_text() == "one" and not (volume.path / "b.txt").exists()
    assert_clean(modal_server)


def test_a_gpu_fallback_list_is_sent_as_ranked_functions(
    modal_server: FakeModal, sweeps: Sweep
) -> None:
    sweeps.run(objectives.quadratic, n_trials=2, study="gpus", gpu=["H100", "A100-80GB"])
    creates = modal_server.requests("FunctionCreate")
    (trial_function,) = [c for c in creates if c.function_data.function_name == "run_trial"]
    ranked = trial_function.function_data.ranked_functions
    assert [r.function.resources.gpu_config.gpu_type for r in ranked] == ["H100", "A100-80GB"]
    assert states(sweeps.study("gpus")) == {"COMPLETE": 2}
    assert_clean(modal_server)


def test_storage_and_aim_show_the_curve_of_the_attempt_that_finished(
    modal_server: FakeModal, sweeps: Sweep, tmp_path: Path
) -> None:
    # A non-deterministic objective: each attempt reports other values. The first attempt
    # of trial 0 reports steps 0 and 1, and its container is preempted as it sends step 2;
    # the second resumes from its checkpoint at step 1 and reports steps 1 to 3. Both the
    # study and the trial's Aim run show step 0 of the first attempt (nobody reported it
    # again) and steps 1 to 3 of the second: Optuna's report would have kept step 1 of the
    # dead attempt.
    aim = pytest.importorskip("aim")
    from aim.storage.context import Context

    objective = tmp_path / "noisy.py"
    objective.write_text(
        "import time\n\n"
        "def objective(trial):\n"
        "    starts = trial.checkpoint_dir / 'starts'\n"
        "    count = int(starts.read_text()) + 1 if starts.exists() else 1\n"
        "    starts.write_text(str(count))\n"
        "    trial.commit_checkpoint()\n"
        "    x = trial.suggest_float('x', 0, 1)\n"
        "    for step in range(0 if count == 1 else 1, 4):\n"
        "        trial.report(x + step + 10 * count, step)\n"
        "        time.sleep(0.7)  # each report goes out in a batch of its own\n"
        "    return x\n"
    )

    def after_two_reports(rpc: Rpc, run: Running | None) -> bool:
        assert run is not None
        earlier = [c for r in run.rpcs[:-1] if not r.dropped for c in calls_in(r)]
        return bool(calls_in(rpc)) and earlier.count("report") >= 2

    modal_server.faults.add("preempt", match=trial(0), on=after_two_reports)
    sweeps.run(str(objective), n_trials=1, parallel=1, study="noisy", track=True)
    (only,) = sweeps.study("noisy").trials
    x = only.params["x"]
    expected = {0: x + 10, 1: x + 21, 2: x + 22, 3: x + 23}
    assert only.intermediate_values == pytest.approx(expected)
    assert [a["attempt"] for a in only.system_attrs["sweeper:attempts"]] == [1, 2]
    volume = modal_server.service.volumes.by_name("sweeper")
    repo = aim.Repo.from_path(str(volume.path / "aim"))
    found = repo.query_runs("run.experiment == 'noisy'", report_mode=0).iter_runs()
    runs = {item.run.name: item.run for item in found}
    steps, (values, *_) = runs["trial 0"].get_metric("objective", Context({})).data.items_list()
    assert dict(zip(steps, values, strict=True)) == pytest.approx(expected)
    assert [a["attempt"] for a in runs["trial 0"]["sweeper"]["attempts"]] == [1, 2]
    assert runs["trial 0"]["result"]["container_seconds"] > 0
    assert_clean(modal_server)


def test_a_trial_past_its_timeout_is_cancelled_and_its_container_stopped(
    modal_server: FakeModal, sweeps: Sweep
) -> None:
    # Trial 0 sleeps 4 s, past --trial-timeout 3: its call is cancelled and its container
    # stopped (no GPU billed for a trial that is over), and its slot frees for trial 1. (The
    # timeout runs from the call, a new container's start included: 3 s leaves the instant
    # trials room for that on a busy machine.)
    _enqueue(sweeps, "late", [{"mode": m} for m in ("sleep", "ok", "ok")])
    sweeps.run(objectives.modes, n_trials=3, parallel=1, study="late", trial_timeout=3.0)
    trials = sweeps.study("late").trials
    assert "ran longer than the trial timeout of 3s" in trials[0].system_attrs["fail_reason"]
    assert [t.state for t in trials[1:]] == [TrialState.COMPLETE] * 2
    (cancel,) = modal_server.requests("FunctionCallCancel")
    assert cancel.terminate_containers
    (run_trial,) = [
        f for f in modal_server.service.functions.functions.values() if f.name == "run_trial"
    ]
    assert [c.killed_for for c in run_trial.containers].count("cancelled") == 1
    assert_clean(modal_server)
