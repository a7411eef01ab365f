"""Run one trial of an objective in a worker; shared by every backend."""

from __future__ import annotations

import os
import socket
import time
import traceback
from collections.abc import Callable, Sequence
from typing import Any

import optuna

from sweeper._current import set_current
from sweeper.channel._base import ChannelClosed, TrialChannel
from sweeper.trial._messages import TrialResult, TrialSpec
from sweeper.trial._remote import RemoteTrial

Objective = Callable[[Any], Any]


def run_trial(objective: Objective, spec: TrialSpec, channel: TrialChannel) -> TrialResult:
    """Call ``objective`` on a :class:`RemoteTrial` and describe how it ended.

    Never raises for anything the objective does: exceptions, ``optuna.TrialPruned``,
    ``sys.exit`` and bad return values all become a :class:`TrialResult`. Only a lost
    orchestrator (:class:`ChannelClosed`) propagates, since nobody is left to tell.
    """
    trial = RemoteTrial(spec, channel)
    set_current(trial)
    if spec.checkpoint_dir is not None:
        os.environ["SWEEPER_CHECKPOINT_DIR"] = spec.checkpoint_dir
    start = time.perf_counter()
    state: str
    values: tuple[float, ...] | None = None
    reason: str | None = None
    trace: str | None = None
    try:
        returned = objective(trial)
    except ChannelClosed:
        raise
    except optuna.TrialPruned as error:
        state, reason = "PRUNED", str(error) or None
    except SystemExit as error:
        state = "FAIL"
        reason = f"the objective called sys.exit({error.code!r})"
        trace = traceback.format_exc()
    except BaseException as error:
        state = "FAIL"
        reason = _one_line(error)
        trace = traceback.format_exc()
    else:
        values, reason = to_values(returned)
        state = "FAIL" if values is None else "COMPLETE"
    finally:
        set_current(None)
    duration = time.perf_counter() - start
    channel.close()
    return TrialResult(
        number=spec.number,
        state=state,  # type: ignore[arg-type]
        values=values,
        reason=reason,
        traceback=trace,
        duration=duration,
        n_calls=channel.n_calls,
        attempt=spec.attempt,
        params=trial.params_view(),
        worker=worker_identity(),
    )


def worker_identity() -> dict[str, Any]:
    """Where this worker runs, for the trial's record (host, process, GPU)."""
    global _IDENTITY
    if _IDENTITY is None:
        _IDENTITY = {
            "host": socket.gethostname(),
            "pid": os.getpid(),
            "worker": os.environ.get("SWEEPER_WORKER"),
            "gpu": os.environ.get("CUDA_VISIBLE_DEVICES"),
        }
        if os.environ.get("MODAL_TASK_ID"):
            _IDENTITY["modal_task"] = os.environ["MODAL_TASK_ID"]
    return dict(_IDENTITY)


_IDENTITY: dict[str, Any] | None = None


def to_values(returned: Any) -> tuple[tuple[float, ...] | None, str | None]:
    """Turn what an objective returned into floats, or explain why it cannot be.

    NaN and the number of values are checked by the orchestrator, which knows the study.
    """
    if returned is None:
        return None, "the objective returned None; return the value to optimize"
    items: Sequence[Any]
    if isinstance(returned, Sequence) and not isinstance(returned, (str, bytes)):
        items = returned
    else:
        items = [returned]
    values = []
    for item in items:
        try:
            value = float(item)
        except (TypeError, ValueError):
            return None, (
                f"the objective returned {_short_repr(returned)}, which is not a number; "
                "return a float (or a tuple of floats for multi-objective)"
            )
        values.append(value)
    return tuple(values), None


def _one_line(error: BaseException) -> str:
    text = str(error).strip().splitlines()
    return f"{type(error).__name__}: {text[0]}" if text else type(error).__name__


def _short_repr(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 80 else text[:77] + "..."
