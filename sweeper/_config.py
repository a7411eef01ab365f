"""The sweep's options: one definition, shared by the CLI, the Python API and objective files.

Each option is documented once, in :data:`OPTIONS`. Values come from, highest first:
command-line flags or keyword arguments, ``SWEEPER_<NAME>`` environment variables, the
objective file's ``SWEEP`` dict, settings the file wrote for plain Optuna, then defaults.
Every value is checked where it enters, with a message that names the option and the fix.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from typing import Any

import optuna

from sweeper._errors import ConfigError
from sweeper.study._components import canonical_name

ENV_PREFIX = "SWEEPER_"
BUDGET = frozenset({"n_trials", "timeout"})
DIRECTIONS = ("minimize", "maximize")
BACKENDS = ("local", "modal")


def _positive_int(name: str, value: Any) -> int:
    try:
        number = int(value)
        if isinstance(value, float) and number != value:
            raise ValueError
        if isinstance(value, bool):
            raise ValueError
    except (TypeError, ValueError):
        raise ConfigError(f"{name} must be a whole number; got {value!r}.") from None
    if number < 1:
        raise ConfigError(f"{name} must be at least 1; got {number}.")
    return number


def _seconds(name: str, value: Any) -> float:
    try:
        if isinstance(value, bool):
            raise ValueError
        seconds = float(value)
    except (TypeError, ValueError):
        raise ConfigError(f"{name} must be a number of seconds; got {value!r}.") from None
    if not seconds > 0 or seconds == float("inf"):
        raise ConfigError(f"{name} must be a positive number of seconds; got {value!r}.")
    return seconds


def _integer(name: str, value: Any) -> int:
    try:
        if isinstance(value, bool) or (isinstance(value, float) and int(value) != value):
            raise ValueError
        return int(value)
    except (TypeError, ValueError):
        raise ConfigError(f"{name} must be an integer; got {value!r}.") from None


def _name(name: str, value: Any) -> str:
    if not isinstance(value, str) or not value.strip():
        raise ConfigError(f"{name} must be a non-empty string; got {value!r}.")
    return value.strip()


def _directions(name: str, value: Any) -> tuple[str, ...]:
    if isinstance(value, str):
        items = [v for v in value.replace(",", " ").split() if v]
    elif isinstance(value, (list, tuple)):
        items = list(value)
    else:
        items = [value]
    result = []
    for item in items:
        if isinstance(item, optuna.study.StudyDirection):
            item = item.name
        text = str(item).strip().lower()
        if text not in DIRECTIONS:
            raise ConfigError(
                f"direction must be 'minimize' or 'maximize'; got {item!r}. Repeat --direction "
                "once per value the objective returns."
            )
        result.append(text)
    if not result:
        raise ConfigError("direction needs at least one of 'minimize' or 'maximize'.")
    return tuple(result)


def _component(kind: str) -> Callable[[str, Any], Any]:
    base = optuna.samplers.BaseSampler if kind == "sampler" else optuna.pruners.BasePruner

    def convert(name: str, value: Any) -> Any:
        if isinstance(value, base):
            return value
        if not isinstance(value, str):
            raise ConfigError(
                f"{kind} must be a name (like 'tpe') or an optuna {base.__name__}; got {value!r}."
            )
        return canonical_name(kind, value)

    return convert


def _arguments(name: str, value: Any) -> dict[str, Any]:
    if isinstance(value, str):
        try:
            value = json.loads(value)
        except json.JSONDecodeError:
            raise ConfigError(
                f"{name} must be a JSON object like '{{\"n_startup_trials\": 5}}'; got {value!r}."
            ) from None
    if not isinstance(value, Mapping) or not all(isinstance(k, str) for k in value):
        raise ConfigError(f"{name} must be a dict of keyword arguments; got {value!r}.")
    return dict(value)


def _flag(name: str, value: Any) -> bool:
    if isinstance(value, bool):
        return value
    text = str(value).strip().lower()
    if text in ("1", "true", "yes", "on"):
        return True
    if text in ("0", "false", "no", "off"):
        return False
    raise ConfigError(f"{name} must be true or false; got {value!r}.")


def _non_negative_int(name: str, value: Any) -> int:
    if value in (0, "0"):
        return 0
    return _positive_int(name, value)


def _positive_number(name: str, value: Any) -> float:
    try:
        if isinstance(value, bool):
            raise ValueError
        number = float(value)
    except (TypeError, ValueError):
        raise ConfigError(f"{name} must be a number; got {value!r}.") from None
    if not number > 0:
        raise ConfigError(f"{name} must be positive; got {value!r}.")
    return number


def _dollars(name: str, value: Any) -> float:
    """An amount of US dollars: ``10``, ``12.5``, ``"$12.50"``."""
    if isinstance(value, str):
        value = value.strip().removeprefix("$").replace(",", "")
    amount = _positive_number(name, value)
    if amount == float("inf"):
        raise ConfigError(f"{name} must be a finite amount of US dollars; got {value!r}.")
    return amount


def _names(name: str, value: Any) -> tuple[str, ...]:
    """One name, a comma-separated string, or a list of names."""
    items = value.split(",") if isinstance(value, str) else value
    if not isinstance(items, (list, tuple)) or not all(isinstance(i, str) for i in items):
        raise ConfigError(f"{name} must be a name or a list of names; got {value!r}.")
    names = tuple(i.strip() for i in items if i.strip())
    if not names:
        raise ConfigError(f"{name} must not be empty.")
    return names


def _backend(name: str, value: Any) -> str:
    text = str(value).strip().lower()
    if text not in BACKENDS:
        raise ConfigError(f"backend must be one of {', '.join(BACKENDS)}; got {value!r}.")
    return text


@dataclass(frozen=True)
class Option:
    name: str
    convert: Callable[[str, Any], Any]
    help: str


OPTIONS: tuple[Option, ...] = (
    Option("n_trials", _positive_int, "Trials to run in this invocation (default: no limit)."),
    Option(
        "timeout",
        _seconds,
        "Stop asking for trials after this many seconds; running trials finish.",
    ),
    Option(
        "parallel",
        _positive_int,
        "Trials in flight at once (default: one per GPU, else one per CPU core).",
    ),
    Option("study", _name, "Study name (default: the objective file's name)."),
    Option(
        "storage",
        _name,
        "Optuna storage: a database URL (sqlite:///x.db, "
        "postgresql://...) or a journal file path (default: .sweeper/optuna.journal).",
    ),
    Option(
        "directions",
        _directions,
        "minimize or maximize; repeat for multi-objective (default: the study's, else minimize).",
    ),
    Option(
        "sampler",
        _component("sampler"),
        "auto, tpe, random, cmaes, gp, qmc, nsga2, nsga3, bruteforce or grid (default: auto: "
        "GP for a fixed numerical search space with one objective, TPE otherwise).",
    ),
    Option("sampler_args", _arguments, "Keyword arguments for the sampler, as JSON."),
    Option(
        "pruner",
        _component("pruner"),
        "median, percentile, halving, hyperband, threshold, wilcoxon or none (default: median).",
    ),
    Option("pruner_args", _arguments, "Keyword arguments for the pruner, as JSON."),
    Option("seed", _integer, "Seed for the sampler."),
    Option("trial_timeout", _seconds, "Fail a trial that runs longer than this many seconds."),
    Option(
        "budget",
        _dollars,
        "Modal: stop asking for trials once the estimated cost in US dollars (spent, plus "
        "what the running trials are expected to cost) would pass this; running trials finish.",
    ),
    Option("backend", _backend, "Where trials run: local (worker processes) or modal."),
    Option("track", _flag, "Track every trial in Aim (default: true)."),
    Option("aim_repo", _name, "Folder of the Aim repo (default: .sweeper/aim)."),
    Option(
        "gpu",
        _names,
        "Modal: GPU type per trial, e.g. A10G, H100, or a fallback list "
        "H100,A100-80GB (default: none, CPU containers).",
    ),
    Option("cpu", _positive_number, "Modal: CPU cores per trial container."),
    Option("memory", _positive_int, "Modal: memory per trial container, in MiB."),
    Option(
        "retries",
        _non_negative_int,
        "Modal: times Modal retries a trial whose container "
        "failed (default: 0; preempted trials are restarted regardless).",
    ),
    Option(
        "secrets",
        _names,
        "Modal: secrets (by name) whose keys become environment variables in trial containers.",
    ),
    Option(
        "volume", _name, "Modal: the Volume for the Aim repo and checkpoints (default: sweeper)."
    ),
    Option(
        "pip",
        _names,
        "Modal: packages to install in the trial image (default: the "
        "packages the objective imports, at the versions installed here).",
    ),
    Option("requirements", _name, "Modal: a requirements file to install in the trial image."),
)
OPTION_NAMES = tuple(o.name for o in OPTIONS)
_ALIASES = {"direction": "directions", "n_jobs": "parallel", "secret": "secrets"}


@dataclass(frozen=True)
class SweepConfig:
    """The options of one sweep, validated. Build it with :func:`resolve_config`."""

    study: str
    n_trials: int | None = None
    timeout: float | None = None
    parallel: int | None = None
    storage: str | None = None
    directions: tuple[str, ...] | None = None
    sampler: Any = "auto"
    sampler_args: dict[str, Any] = field(default_factory=dict)
    pruner: Any = "median"
    pruner_args: dict[str, Any] = field(default_factory=dict)
    seed: int | None = None
    trial_timeout: float | None = None
    budget: float | None = None
    backend: str = "local"
    track: bool = True
    aim_repo: str | None = None
    gpu: tuple[str, ...] | None = None
    cpu: float | None = None
    memory: int | None = None
    retries: int | None = None
    secrets: tuple[str, ...] | None = None
    volume: str | None = None
    pip: tuple[str, ...] | None = None
    requirements: str | None = None
    sources: dict[str, str] = field(default_factory=dict, compare=False)
    """Where each option's value came from (for messages): flag, env, file, optuna-call."""
    file_study: Any = field(default=None, compare=False)
    """What the objective file's main block built beyond the options (its callbacks, its
    enqueued trials, the study's user attributes): a :class:`~sweeper.objective.FileStudy`."""

    def __post_init__(self) -> None:
        for option in OPTIONS:
            value = getattr(self, option.name)
            if value is not None:
                object.__setattr__(self, option.name, option.convert(option.name, value))
        _name("study", self.study)

    def with_(self, **changes: Any) -> SweepConfig:
        return replace(self, **changes)


def normalize_keys(settings: Mapping[str, Any], where: str) -> dict[str, Any]:
    """Map aliases (``direction``) to option names; reject unknown keys with the valid ones."""
    result: dict[str, Any] = {}
    for key, value in settings.items():
        name = _ALIASES.get(key, key)
        if name not in OPTION_NAMES:
            raise ConfigError(
                f"{where}: unknown setting {key!r}. Known settings: "
                f"{', '.join(sorted((*OPTION_NAMES, 'direction')))}."
            )
        result[name] = value
    return result


def env_settings(environ: Mapping[str, str] | None = None) -> dict[str, Any]:
    """Options set as ``SWEEPER_<NAME>`` environment variables."""
    environ = os.environ if environ is None else environ
    found = {}
    for name in (*OPTION_NAMES, "direction"):
        value = environ.get(ENV_PREFIX + name.upper())
        if value is not None and value != "":
            found[_ALIASES.get(name, name)] = value
    return found


def resolve_config(
    *,
    default_study: str,
    explicit: Mapping[str, Any],
    file_settings: Mapping[str, Any] | None = None,
    optuna_settings: Mapping[str, Any] | None = None,
    environ: Mapping[str, str] | None = None,
) -> SweepConfig:
    """Merge the sources of options (highest first: explicit, env, file, optuna calls)."""
    layers = [
        ("flag", normalize_keys({k: v for k, v in explicit.items() if v is not None}, "options")),
        ("env", env_settings(environ)),
        ("file", normalize_keys(file_settings or {}, "SWEEP")),
        ("optuna-call", normalize_keys(optuna_settings or {}, "optuna call")),
    ]
    merged: dict[str, Any] = {}
    sources: dict[str, str] = {}
    # The budget is one setting: the layer that gives any of n_trials and timeout gives
    # both (`-n 20` over a file's optimize(n_trials=500, timeout=1) runs 20 trials, no timeout).
    budget = next((layer for _, layer in layers if BUDGET.intersection(layer)), {})
    for source, layer in layers:
        for key, value in layer.items():
            if key in BUDGET and layer is not budget:
                continue
            if key not in merged:
                merged[key] = value
                sources[key] = source
    # A sampler or pruner chosen in a higher layer does not take arguments meant for
    # another one (the same one, named again, keeps them).
    for kind in ("sampler", "pruner"):
        args_key = f"{kind}_args"
        if (
            args_key in merged
            and kind in merged
            and _layer_rank(sources[args_key]) > _layer_rank(sources[kind])
            and _named_in(layers, sources[args_key], kind) != _canonical(kind, merged[kind])
        ):
            del merged[args_key]
    study = merged.pop("study", None) or default_study
    return SweepConfig(study=study, sources=sources, **merged)


def _canonical(kind: str, value: Any) -> Any:
    return canonical_name(kind, value) if isinstance(value, str) else value


def _named_in(layers: list[tuple[str, dict[str, Any]]], source: str, kind: str) -> Any:
    """The sampler or pruner the layer ``source`` names, if it names one."""
    for name, layer in layers:
        if name == source and kind in layer:
            return _canonical(kind, layer[kind])
    return None


def _layer_rank(source: str) -> int:
    return ("flag", "env", "file", "optuna-call").index(source)


def option_help(name: str) -> str:
    for option in OPTIONS:
        if option.name == name:
            return option.help
    raise KeyError(name)
