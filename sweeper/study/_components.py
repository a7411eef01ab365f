"""Samplers and pruners by name, as the CLI and objective files spell them."""

from __future__ import annotations

import inspect
from collections.abc import Mapping
from typing import Any

import optuna

from sweeper._errors import ConfigError

# name -> optuna class name. Class names (as written in `optuna.create_study(sampler=...)`)
# are accepted too.
SAMPLERS: dict[str, str] = {
    "auto": "AutoSampler",
    "tpe": "TPESampler",
    "random": "RandomSampler",
    "cmaes": "CmaEsSampler",
    "gp": "GPSampler",
    "qmc": "QMCSampler",
    "nsga2": "NSGAIISampler",
    "nsga3": "NSGAIIISampler",
    "bruteforce": "BruteForceSampler",
    "grid": "GridSampler",
}
PRUNERS: dict[str, str] = {
    "median": "MedianPruner",
    "percentile": "PercentilePruner",
    "halving": "SuccessiveHalvingPruner",
    "hyperband": "HyperbandPruner",
    "threshold": "ThresholdPruner",
    "wilcoxon": "WilcoxonPruner",
    "none": "NopPruner",
}
# Arguments a component cannot be built without, and the value sweeper uses.
_REQUIRED_DEFAULTS: dict[str, dict[str, Any]] = {"PercentilePruner": {"percentile": 25.0}}
# Packages some samplers need beyond optuna.
_EXTRA_PACKAGES = {
    "AutoSampler": "torch scipy",
    "CmaEsSampler": "cmaes",
    "GPSampler": "torch scipy",
    "QMCSampler": "scipy",
}


def canonical_name(kind: str, name: str) -> str:
    """Map a name or an Optuna class name to the short name; raise ConfigError if unknown."""
    table = SAMPLERS if kind == "sampler" else PRUNERS
    lowered = name.strip().lower()
    if lowered in table:
        return lowered
    for short, class_name in table.items():
        if name.strip() == class_name:
            return short
    raise ConfigError(f"unknown {kind} {name!r}; choose one of: {', '.join(table)}.")


def make_sampler(
    name: str, arguments: Mapping[str, Any], seed: int | None
) -> optuna.samplers.BaseSampler:
    """Build the sampler called ``name`` with ``arguments`` (and ``seed`` if it takes one)."""
    class_name = SAMPLERS[canonical_name("sampler", name)]
    if class_name == "AutoSampler":
        from sweeper.study._auto import AutoSampler

        cls: type = AutoSampler
    else:
        cls = getattr(optuna.samplers, class_name)
    built: optuna.samplers.BaseSampler = _build(cls, "sampler", arguments, seed)
    return built


def make_pruner(name: str, arguments: Mapping[str, Any]) -> optuna.pruners.BasePruner:
    class_name = PRUNERS[canonical_name("pruner", name)]
    cls = getattr(optuna.pruners, class_name)
    built: optuna.pruners.BasePruner = _build(cls, "pruner", arguments, None)
    return built


def _build(cls: type, kind: str, arguments: Mapping[str, Any], seed: int | None) -> Any:
    kwargs = {**_REQUIRED_DEFAULTS.get(cls.__name__, {}), **arguments}
    takes_seed = "seed" in inspect.signature(cls).parameters
    if seed is not None and "seed" not in kwargs and takes_seed:
        kwargs["seed"] = seed
    try:
        return cls(**kwargs)
    except ImportError as error:
        packages = _EXTRA_PACKAGES.get(cls.__name__, "")
        raise ConfigError(
            f"the {kind} {cls.__name__} needs packages that are not installed ({error}). "
            f"Install them: pip install {packages}".rstrip()
        ) from None
    except (TypeError, ValueError) as error:
        raise ConfigError(
            f"cannot build {cls.__name__} from {kind}_args {dict(arguments)!r}: {error}. "
            f"Fix the {kind}_args."
        ) from None
