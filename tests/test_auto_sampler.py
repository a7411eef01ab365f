"""The default sampler: GP for a fixed numerical space with one objective, TPE otherwise."""

from __future__ import annotations

import optuna

from sweeper.study import make_sampler
from sweeper.study._auto import AutoSampler


def _run(objective, n: int, directions=("minimize",)) -> tuple[optuna.Study, AutoSampler]:
    sampler = make_sampler("auto", {}, seed=1)
    assert isinstance(sampler, AutoSampler)
    study = optuna.create_study(sampler=sampler, directions=list(directions))
    study.optimize(objective, n_trials=n)
    return study, sampler


def test_gp_for_a_fixed_numeric_space() -> None:
    study, sampler = _run(
        lambda t: t.suggest_float("x", -2, 2) ** 2 + t.suggest_int("n", 0, 3), 14
    )
    assert sampler.choose(study) == "gp"
    assert len(study.trials) == 14 and study.best_value < 1.0


def test_tpe_while_starting_and_for_conditional_spaces() -> None:
    study, sampler = _run(lambda t: t.suggest_float("x", 0, 1), 5)
    assert sampler.choose(study) == "tpe"  # fewer finished trials than the random start

    def conditional(trial: optuna.Trial) -> float:
        if trial.suggest_categorical("kind", ["a", "b"]) == "a":
            return trial.suggest_float("a", 0, 1)
        return trial.suggest_int("b", 0, 3)

    study, sampler = _run(conditional, 14)
    assert sampler.choose(study) == "tpe"


def test_tpe_for_several_objectives() -> None:
    study, sampler = _run(
        lambda t: (t.suggest_float("x", 0, 1), 1.0), 12, directions=("minimize", "minimize")
    )
    assert sampler.choose(study) == "tpe"


def test_the_filler_samples_with_tpe_where_the_sampler_uses_gp() -> None:
    study, sampler = _run(lambda t: t.suggest_float("x", -2, 2) ** 2, 14)
    filler = sampler.filler()
    assert sampler.choose(study) == "gp" and filler.choose(study) == "tpe"
    assert sampler.uses_gp and not filler.uses_gp
    # Its random numbers are its own: two copies of one seeded sampler would draw alike.
    first, second = optuna.create_study(sampler=sampler), optuna.create_study(sampler=filler)
    first.optimize(lambda t: t.suggest_float("x", 0, 1), n_trials=3)
    second.optimize(lambda t: t.suggest_float("x", 0, 1), n_trials=3)
    assert [t.params for t in first.trials] != [t.params for t in second.trials]
    import pickle

    assert pickle.loads(pickle.dumps(sampler)).choose(study) == "gp"  # sent to a process
