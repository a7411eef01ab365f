"""RemoteTrial behaves like optuna.Trial, and answers what it can without a round trip.

The transport here is in-process: each call is pickled (as it would be on the wire) and
answered by the orchestrator's own ``answer_call`` against a live ``optuna.Trial``.
"""

from __future__ import annotations

import pickle
import warnings
from collections.abc import Callable, Sequence
from typing import Any

import optuna
import pytest

from sweeper.channel import Call, Transport, TrialChannel
from sweeper.orchestrator._calls import answer_call
from sweeper.orchestrator._spec import build_spec
from sweeper.trial import RemoteTrial, run_trial


class Loopback(Transport):
    def __init__(self, live: optuna.Trial) -> None:
        self.live = live
        self.replies: list[object] = []
        self.sent: list[Call] = []

    def send(self, messages: Sequence[object]) -> None:
        for message in pickle.loads(pickle.dumps(list(messages))):
            self.sent.append(message)
            reply = answer_call(message, self.live)
            if reply is not None:
                self.replies.append(pickle.loads(pickle.dumps(reply)))

    def receive(self, timeout: float | None = None) -> object:
        return self.replies.pop(0)

    @property
    def requests(self) -> list[str]:
        return [c.method for c in self.sent if c.wants_reply]


def run_remote(
    study: optuna.Study, objective: Callable[[Any], Any]
) -> tuple[optuna.trial.FrozenTrial, Loopback]:
    live = study.ask()
    transport = Loopback(live)
    result = run_trial(objective, build_spec(live), TrialChannel(transport, live.number))
    if result.state == "COMPLETE":
        study.tell(live, list(result.values or ()))
    elif result.state == "PRUNED":
        study.tell(live, state=optuna.trial.TrialState.PRUNED)
    else:
        study.tell(live, state=optuna.trial.TrialState.FAIL)
    return study.trials[-1], transport


def conditional(trial: Any) -> float:
    kind = trial.suggest_categorical("kind", ["a", "b"])
    x = trial.suggest_float("x", -5, 5)
    if kind == "a":
        n = trial.suggest_int("n", 1, 64, log=True)
        return x**2 + n
    step = trial.suggest_float("step", 0.0, 1.0, step=0.25)
    return (x - 1) ** 2 + step


@pytest.mark.parametrize(
    "make_sampler",
    [
        lambda: optuna.samplers.RandomSampler(seed=3),
        lambda: optuna.samplers.TPESampler(seed=3, n_startup_trials=4),
    ],
)
def test_same_trials_as_plain_optuna(make_sampler: Callable[[], Any]) -> None:
    plain = optuna.create_study(sampler=make_sampler())
    plain.optimize(conditional, n_trials=15)
    remote = optuna.create_study(sampler=make_sampler())
    for _ in range(15):
        run_remote(remote, conditional)
    assert [t.params for t in remote.trials] == [t.params for t in plain.trials]
    assert [t.values for t in remote.trials] == [t.values for t in plain.trials]


def test_jointly_sampled_params_cost_no_round_trip() -> None:
    def objective(trial: Any) -> float:
        return trial.suggest_float("x", 0, 1) + trial.suggest_float("y", 0, 1)

    study = optuna.create_study(
        sampler=optuna.samplers.TPESampler(seed=0, n_startup_trials=3, multivariate=True)
    )
    counts = [run_remote(study, objective)[1].requests for _ in range(6)]
    assert counts[0] == ["suggest_float", "suggest_float"]  # random start: sampled on demand
    assert counts[-1] == []  # then sampled up front, with the trial
    assert study.trials[-1].params.keys() == {"x", "y"}  # and still recorded in the study


def test_enqueued_params_cost_no_round_trip() -> None:
    study = optuna.create_study()
    study.enqueue_trial({"x": 0.25})
    frozen, transport = run_remote(study, lambda t: t.suggest_float("x", 0, 1))
    assert frozen.params == {"x": 0.25}
    assert transport.requests == []


def test_same_name_twice_returns_the_first_value_without_asking_again() -> None:
    study = optuna.create_study()

    def objective(trial: Any) -> float:
        first = trial.suggest_float("x", 0, 1)
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            second = trial.suggest_float("x", 0, 2)  # other bounds: warned, first value kept
        assert second == first
        assert "Inconsistent parameter values" in str(caught[0].message)
        with pytest.raises(ValueError):
            trial.suggest_int("x", 0, 1)  # another kind of distribution
        return first

    frozen, transport = run_remote(study, objective)
    assert frozen.state == optuna.trial.TrialState.COMPLETE
    assert transport.requests == ["suggest_float"]


def test_report_and_prune_like_optuna() -> None:
    study = optuna.create_study(pruner=optuna.pruners.ThresholdPruner(upper=1.0))

    def objective(trial: Any) -> float:
        with pytest.raises(ValueError, match="non-negative"):
            trial.report(1.0, -1)
        with pytest.raises(TypeError):
            trial.report("high", 0)
        trial.report(0.5, 0)
        with pytest.warns(UserWarning, match="already reported"):
            trial.report(0.7, 0)
        assert not trial.should_prune()
        trial.report(2.0, 1)
        if trial.should_prune():
            raise optuna.TrialPruned()
        return 0.0

    frozen, _ = run_remote(study, objective)
    assert frozen.state == optuna.trial.TrialState.PRUNED
    assert frozen.intermediate_values == {0: 0.5, 1: 2.0}


def test_multi_objective_report_is_refused_as_in_optuna() -> None:
    study = optuna.create_study(directions=["minimize", "maximize"])

    def objective(trial: Any) -> tuple[float, float]:
        with pytest.raises(NotImplementedError):
            trial.report(1.0, 0)
        with pytest.raises(NotImplementedError):
            trial.should_prune()
        return 1.0, 2.0

    frozen, _ = run_remote(study, objective)
    assert frozen.values == [1.0, 2.0]


def test_attributes_and_study_view() -> None:
    study = optuna.create_study(study_name="view")
    run_remote(study, lambda t: t.suggest_float("x", 0, 1))

    def objective(trial: Any) -> float:
        trial.set_user_attr("note", {"a": [1, 2]})
        assert trial.user_attrs == {"note": {"a": [1, 2]}}
        with pytest.raises(TypeError, match="JSON serializable"):
            trial.set_user_attr("bad", object())
        assert trial.study.study_name == "view"
        assert trial.study.best_value == study.best_value
        with pytest.raises(AttributeError, match="readable attributes"):
            trial.study.optimize  # noqa: B018
        assert trial.number == 1
        return 1.0

    frozen, _ = run_remote(study, objective)
    assert frozen.user_attrs == {"note": {"a": [1, 2]}}


def test_errors_on_the_orchestrator_are_raised_in_the_objective() -> None:
    study = optuna.create_study()

    def objective(trial: Any) -> float:
        with pytest.raises(ValueError):
            trial.study.best_value  # noqa: B018 - no trial has completed yet
        return 1.0

    frozen, _ = run_remote(study, objective)
    assert frozen.state == optuna.trial.TrialState.COMPLETE


def test_isinstance_base_trial() -> None:
    study = optuna.create_study()
    live = study.ask()
    trial = RemoteTrial(build_spec(live), TrialChannel(Loopback(live), live.number))
    assert isinstance(trial, optuna.trial.BaseTrial)


# -- Optuna's own helpers, given the worker's trial ----------------------------------------


def test_it_is_an_optuna_trial_with_the_storage_id() -> None:
    study = optuna.create_study()
    live = study.ask()
    trial = RemoteTrial(build_spec(live), TrialChannel(Loopback(live), live.number))
    assert isinstance(trial, optuna.trial.Trial)
    assert trial._trial_id == live._trial_id and trial.study._study_id == study._study_id
    assert trial.datetime_start == live.datetime_start


def test_optunas_artifacts_and_terminator_helpers_work_on_it(tmp_path: Any) -> None:
    import optuna.artifacts
    import optuna.terminator

    store = optuna.artifacts.FileSystemArtifactStore(str(tmp_path))
    (tmp_path / "model.txt").write_text("weights")
    study = optuna.create_study()
    seen: dict[str, Any] = {}

    def objective(trial: Any) -> float:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # the terminator's helper is deprecated
            optuna.terminator.report_cross_validation_scores(trial, [0.5, 0.7, 0.6])
        seen["id"] = optuna.artifacts.upload_artifact(
            artifact_store=store, file_path=str(tmp_path / "model.txt"), study_or_trial=trial
        )
        seen["metas"] = optuna.artifacts.get_all_artifact_meta(trial)
        return 1.0

    frozen, _ = run_remote(study, objective)
    assert frozen.state == optuna.trial.TrialState.COMPLETE, frozen.system_attrs
    assert frozen.system_attrs["terminator:cv_scores"] == [0.5, 0.7, 0.6]
    (meta,) = optuna.artifacts.get_all_artifact_meta(frozen, storage=study._storage)
    assert meta.artifact_id == seen["id"] and meta.filename == "model.txt"
    assert [m.artifact_id for m in seen["metas"]] == [seen["id"]]  # read in the worker
    with store.open_reader(seen["id"]) as reader:
        assert reader.read() == b"weights"


def test_the_study_and_storage_read_through_the_orchestrator() -> None:
    study = optuna.create_study(direction="maximize")
    study.set_user_attr("dataset", "iris")
    study.optimize(lambda t: t.suggest_float("x", 0, 1), n_trials=3)
    seen: dict[str, Any] = {}

    def objective(trial: Any) -> float:
        seen["direction"] = trial.study.direction
        seen["multi"] = trial.study._is_multi_objective()
        seen["best"] = trial.study.best_value
        seen["user_attrs"] = trial.study.user_attrs
        seen["complete"] = len(trial.study.get_trials(states=(optuna.trial.TrialState.COMPLETE,)))
        trial.storage.set_trial_user_attr(trial._trial_id, "via", "storage")
        seen["mine"] = trial.storage.get_trial(trial._trial_id).user_attrs
        with pytest.raises(ValueError, match="writes only its own attributes"):
            trial.storage.set_trial_user_attr(trial._trial_id - 1, "other", 1)
        return 0.5

    frozen, transport = run_remote(study, objective)
    assert seen == {
        "direction": optuna.study.StudyDirection.MAXIMIZE,
        "multi": False,
        "best": max(t.value for t in study.trials[:3]),
        "user_attrs": {"dataset": "iris"},
        "complete": 3,
        "mine": {"via": "storage"},
    }
    assert frozen.user_attrs == {"via": "storage"}
    # The directions travel with the trial: no round trip for them.
    assert "study_attribute" in transport.requests
    asked = [c.args[0] for c in transport.sent if c.method == "study_attribute"]
    assert "direction" not in asked and "directions" not in asked
