"""What a study remembers of the sweeps that made it, so that running again goes on as it
was, and another objective never joins it unnoticed.

- The fingerprint of a function objective (:func:`sweeper.objective.fingerprint`): the
  study a function's sweep goes to is named after the function, and among the studies of
  that name (``objective``, ``objective-2``, ...) it is the one whose fingerprint matches;
  a function that matches none (it was edited, or is another function of the same name)
  starts the next one, and says so. A study named with ``study=`` is never renamed: one
  run with another objective is refused with the fix (``resume=True``). A file objective
  has no fingerprint: the file's study goes on whatever its code is now, as the CLI
  documents.
- The sampler and pruner settings by name: a sweep that continues a study and names no
  sampler or pruner (nor their arguments) uses the study's, as ``study.optimize`` called
  again uses the study's sampler and pruner.
"""

from __future__ import annotations

import itertools
import json
from collections.abc import Mapping
from typing import Any

import optuna

from sweeper._config import SweepConfig
from sweeper._errors import StorageError
from sweeper.objective._ref import ObjectiveRef

OBJECTIVE_KEY = "sweeper:objective"
"""The study's system attribute with the fingerprint (and label) of its function objective."""
SETTINGS_KEY = "sweeper:settings"
"""The study's system attribute with the sampler and pruner settings of its last sweep."""
_COMPONENTS = ("sampler", "pruner")


def choose_study(
    storage: optuna.storages.BaseStorage,
    config: SweepConfig,
    objective: ObjectiveRef,
    *,
    resume: bool,
    where: str,
) -> tuple[SweepConfig, str | None]:
    """The config with the study this objective's sweep goes to, and a note when that is a
    new study beside one of the name it would have had.

    Raises StorageError when ``study=`` names a study that a different function objective
    made (unless ``resume``).
    """
    mark = objective.fingerprint
    if mark is None:
        return config, None
    name = config.study
    if "study" in config.sources or resume:
        recorded = _recorded(storage, name)
        if resume or recorded in (None, _NO_RECORD) or recorded == mark:
            return config, None
        raise StorageError(
            f"study {name!r} in {where} was made by another objective than {objective.label} "
            "is now (its code, a function of yours it calls or a constant they read "
            "differs). Pass resume=True to add this objective's trials to it all the same, "
            f"or another study= name (study={name + '-2'!r}) for a study of its own."
        )
    for number in itertools.count(1):
        candidate = name if number == 1 else f"{name}-{number}"
        recorded = _recorded(storage, candidate)
        if recorded is None or recorded == mark or (number == 1 and recorded == _EMPTY):
            if number == 1 or recorded == mark:
                return config.with_(study=candidate), None
            return config.with_(study=candidate), (
                f"{objective.label} is not the objective study {name!r} was made by (its "
                "code, a function of yours it calls or a constant they read differs): this "
                f"sweep starts study {candidate!r}. Pass resume=True to add to {name!r} "
                "instead."
            )
    raise AssertionError("unreachable")


_NO_RECORD = "no record"
"""The study exists and has trials, but no record of the objective (made by a file's
sweep, by plain Optuna, or by an earlier sweeper)."""
_EMPTY = "empty"
"""The study exists, has no trials and no record: any objective may take it."""


def _recorded(storage: optuna.storages.BaseStorage, name: str) -> str | None:
    """The fingerprint the study ``name`` remembers; None: there is no such study."""
    try:
        study_id = storage.get_study_id_from_name(name)
    except KeyError:
        return None
    record = storage.get_study_system_attrs(study_id).get(OBJECTIVE_KEY)
    if isinstance(record, Mapping) and isinstance(record.get("fingerprint"), str):
        return str(record["fingerprint"])
    return _NO_RECORD if storage.get_n_trials(study_id) else _EMPTY


def remembered_settings(
    storage: optuna.storages.BaseStorage, config: SweepConfig
) -> tuple[SweepConfig, list[str]]:
    """``config`` with the sampler and pruner the existing study was last swept with, where
    this sweep names neither the component nor its arguments; and notes about components
    the study could not keep (objects)."""
    try:
        study_id = storage.get_study_id_from_name(config.study)
    except KeyError:
        return config, []
    stored = storage.get_study_system_attrs(study_id).get(SETTINGS_KEY)
    if not isinstance(stored, Mapping):
        return config, []
    changes: dict[str, Any] = {}
    notes = []
    for kind in _COMPONENTS:
        args = f"{kind}_args"
        if kind in config.sources:
            continue
        value = stored.get(kind)
        if isinstance(value, str):
            changes[kind] = value
            if args not in config.sources:
                changes[args] = dict(stored.get(args) or {})
        elif isinstance(stored.get(f"{kind}_class"), str):
            notes.append(
                f"study {config.study!r} was last swept with a {stored[f'{kind}_class']} "
                f"object, which a study cannot keep; this sweep uses the {kind} "
                f"{getattr(config, kind)!r}. Pass the object again ({kind}=...) to use it."
            )
    return (config.with_(**changes) if changes else config), notes


def remember(
    storage: optuna.storages.BaseStorage,
    study_id: int,
    config: SweepConfig,
    objective: ObjectiveRef,
) -> None:
    """Record this sweep's objective fingerprint and settings in the study."""
    if objective.fingerprint is not None:
        storage.set_study_system_attr(
            study_id,
            OBJECTIVE_KEY,
            {"fingerprint": objective.fingerprint, "label": objective.label},
        )
    settings: dict[str, Any] = {}
    for kind in _COMPONENTS:
        value, args = getattr(config, kind), getattr(config, f"{kind}_args")
        if not isinstance(value, str):
            settings[f"{kind}_class"] = type(value).__name__
        elif _is_json(args):
            settings[kind], settings[f"{kind}_args"] = value, dict(args)
    storage.set_study_system_attr(study_id, SETTINGS_KEY, settings)


def _is_json(value: Any) -> bool:
    try:
        json.dumps(value)
    except (TypeError, ValueError):
        return False
    return True
