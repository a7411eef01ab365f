"""Options: one definition, validated where they enter, merged in a fixed order."""

from __future__ import annotations

import pytest

from sweeper import ConfigError
from sweeper._config import SweepConfig, resolve_config


def test_precedence_flag_env_file_optuna_call() -> None:
    config = resolve_config(
        default_study="stem",
        explicit={"n_trials": 3, "parallel": None},
        file_settings={"n_trials": 5, "parallel": 4, "timeout": 60, "direction": "maximize"},
        optuna_settings={"n_trials": 100, "timeout": 600, "seed": 7, "directions": ["minimize"]},
        environ={"SWEEPER_PARALLEL": "2", "SWEEPER_STUDY": "from-env"},
    )
    assert config.n_trials == 3  # flag
    assert config.parallel == 2  # env beats the file
    assert config.timeout is None  # the budget is one setting: the flag's replaces the file's
    assert config.seed == 7  # only in the optuna call
    assert config.directions == ("maximize",)
    assert config.study == "from-env"
    assert config.sources["n_trials"] == "flag"
    assert config.sources["parallel"] == "env"


def test_sampler_args_do_not_follow_a_sampler_chosen_elsewhere() -> None:
    config = resolve_config(
        default_study="s",
        explicit={"sampler": "random"},
        optuna_settings={"sampler": "TPESampler", "sampler_args": {"n_startup_trials": 3}},
    )
    assert config.sampler == "random"
    assert config.sampler_args == {}


def test_naming_the_same_pruner_again_keeps_its_arguments() -> None:
    config = resolve_config(
        default_study="s",
        explicit={"pruner": "median"},
        file_settings={"pruner": "MedianPruner", "pruner_args": {"n_warmup_steps": 3}},
    )
    assert config.pruner_args == {"n_warmup_steps": 3}


def test_optuna_class_names_are_accepted() -> None:
    config = resolve_config(
        default_study="s",
        explicit={},
        optuna_settings={"sampler": "CmaEsSampler", "pruner": "SuccessiveHalvingPruner"},
    )
    assert (config.sampler, config.pruner) == ("cmaes", "halving")


@pytest.mark.parametrize(
    ("field", "value", "message"),
    [
        ("n_trials", 2.5, "whole number"),
        ("n_trials", True, "whole number"),
        ("timeout", float("inf"), "positive number"),
        ("directions", ["minimize", "upward"], "'upward'"),
        ("directions", [], "at least one"),
        ("sampler", 3, "must be a name"),
        ("sampler_args", [1], "dict of keyword arguments"),
        ("backend", "k8s", "local, modal"),
        ("study", " ", "non-empty"),
    ],
)
def test_invalid_values(field: str, value: object, message: str) -> None:
    kwargs = {"study": "s", field: value}
    with pytest.raises(ConfigError, match=message):
        SweepConfig(**kwargs)  # type: ignore[arg-type]


def test_unknown_setting_in_file() -> None:
    with pytest.raises(ConfigError, match="unknown setting 'ntrials'"):
        resolve_config(default_study="s", explicit={}, file_settings={"ntrials": 1})
