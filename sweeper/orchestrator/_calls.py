"""Answering a worker's calls against the live ``optuna.Trial``: which methods of the trial,
its study and its storage a worker may call, and the reply it gets."""

from __future__ import annotations

from typing import Any

import optuna

from sweeper.channel._messages import Call, Reply
from sweeper.trial._messages import picklable_error
from sweeper.trial._remote import STORAGE_READS, STUDY_ATTRIBUTES, STUDY_WRITES, TRIAL_WRITES

# Methods of optuna.Trial a worker may call on the live trial.
TRIAL_METHODS = frozenset(
    {
        "report",
        "set_constraint",
        "set_user_attr",
        "should_prune",
        "suggest_categorical",
        "suggest_float",
        "suggest_int",
    }
)


def answer_call(call: Call, live: optuna.Trial) -> Reply:
    """Apply a worker's call to the live trial and say what came of it.

    The reply is sent back when the worker waits for it; an error then is raised in the
    objective. A call the worker does not wait for was checked there already, as Optuna
    would, so an error in it is only logged.
    """
    try:
        if call.method == "started":
            value = {"params": live.params}
        elif call.method == "study_attribute":
            name = call.args[0]
            if name not in STUDY_ATTRIBUTES:
                raise AttributeError(f"study.{name} is not readable from a worker")
            value = getattr(live.study, name)
        elif call.method == "storage":
            value = _storage_call(call, live)
        elif call.method in TRIAL_METHODS:
            value = getattr(live, call.method)(*call.args, **call.kwargs)
        else:
            raise AttributeError(f"trial.{call.method} cannot be called from a worker")
    except Exception as error:
        return Reply(call.number, call.seq, error=picklable_error(error), attempt=call.attempt)
    return Reply(call.number, call.seq, value=value, attempt=call.attempt)


def _storage_call(call: Call, live: optuna.Trial) -> Any:
    """A worker's ``trial.storage`` call: a read of the study's storage, or a write to its own
    trial (kept in the live trial's cache too) or study."""
    name, *args = call.args
    storage = live.study._storage
    if name in STORAGE_READS:
        return getattr(storage, name)(*args, **call.kwargs)
    if name in TRIAL_WRITES and args and args[0] == live._trial_id:
        getattr(storage, name)(*args)
        frozen = live._cached_frozen_trial
        if name == "set_trial_user_attr":
            frozen.user_attrs[args[1]] = args[2]
        elif name == "set_trial_system_attr":
            frozen.system_attrs[args[1]] = args[2]
        return None
    if name in STUDY_WRITES and args and args[0] == live.study._study_id:
        getattr(storage, name)(*args)
        return None
    raise AttributeError(f"trial.storage.{name}{tuple(args)!r} cannot be called from a worker")
