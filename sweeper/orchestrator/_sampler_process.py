"""A sampler process: asks the study for trials on a core of its own.

Started by the orchestrator (:func:`spawn`) with ``main([..., FD])``. It opens the sweep's
storage, loads the study with a copy of its sampler, and then, each time it is told, asks
for a trial and samples what can be sampled up front (:func:`~._spec.prepare_spec`). The
asked trial is in the storage, which the orchestrator shares; the process sends back its id,
its spec and its jointly sampled parameters.

Messages in: an :class:`Init` first, then ``("ask",)``, ``("space", space)`` and
``("stop",)``. Messages out: ``("ready",)`` or ``("failed", error, traceback)`` after the
init, then ``("asked", trial_id, spec, relative_params, relative_search_space, seconds,
notes)`` or ``("failed", error, traceback)`` per ask, and ``("stopped",)`` last.
"""

from __future__ import annotations

import os
import sys
import time
import traceback
from collections.abc import Sequence
from dataclasses import dataclass, replace
from multiprocessing.connection import Connection
from pathlib import Path

import cloudpickle
import optuna

from sweeper._process import child_main, spawn_python
from sweeper.orchestrator._spec import SpecPlan, prepare_for
from sweeper.trial._messages import picklable_error


@dataclass(frozen=True)
class Init:
    storage: str
    """A journal file path or a database URL: the sweep's storage."""
    study: str
    sampler: bytes
    """The study's sampler, pickled with cloudpickle."""
    plan: SpecPlan
    reseed: bool
    """Whether to reseed the sampler's random numbers: copies of one seeded sampler (this
    process's, the orchestrator's) would draw the same values."""
    sys_path: tuple[str, ...] = ()
    """The orchestrator's module path: a sampler class from the user's modules unpickles."""


def picklable(sampler: optuna.samplers.BaseSampler) -> bytes | None:
    """The sampler pickled for a sampler process, or None if it cannot be."""
    try:
        data: bytes = cloudpickle.dumps(sampler)
        cloudpickle.loads(data)
    except Exception:
        return None
    return data


def spawn(log: Path, env: dict[str, str] | None = None) -> tuple[object, Connection]:
    """Start a sampler process (it waits for its :class:`Init`); its output goes to ``log``."""
    log.parent.mkdir(parents=True, exist_ok=True)
    environ = dict(os.environ if env is None else env)
    # One core each: a GP fit's torch and numpy would otherwise spread over every core and
    # take them from the orchestrator and the workers (as Optuna's GPSampler docs advise).
    for variable in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS"):
        environ.setdefault(variable, "1")
    with open(log, "ab") as output:
        return spawn_python("sweeper.orchestrator._sampler_process", env=environ, output=output)


def serve(connection: Connection) -> None:
    init = connection.recv()
    assert isinstance(init, Init)
    for entry in reversed(init.sys_path):
        if entry not in sys.path:
            sys.path.insert(0, entry)
    try:
        from sweeper.study._storage import open_storage

        optuna.logging.set_verbosity(optuna.logging.WARNING)
        storage = open_storage(init.storage, read_only=True).storage
        sampler = cloudpickle.loads(init.sampler)
        if init.reseed:
            sampler.reseed_rng()
        study = optuna.load_study(
            study_name=init.study,
            storage=storage,
            sampler=sampler,
            pruner=optuna.pruners.NopPruner(),
        )
        if getattr(sampler, "uses_gp", False) and len(study.directions) == 1:
            _ = sampler.gp  # imports torch now (seconds), not in the first GP ask
    except BaseException as error:
        connection.send(("failed", picklable_error(error), traceback.format_exc()))
        return
    connection.send(("ready",))
    plan = init.plan
    take_notes = getattr(sampler, "take_notes", None)
    while True:
        try:
            message = connection.recv()
        except (EOFError, OSError):
            return
        kind = message[0]
        if kind == "ask":
            reply: tuple[object, ...]
            try:
                started = time.perf_counter()
                live = study.ask()
                spec = prepare_for(live, plan)
                seconds = time.perf_counter() - started
                notes = list(take_notes()) if take_notes is not None else []
                reply = (
                    "asked",
                    live._trial_id,
                    spec,
                    dict(live.relative_params),
                    dict(live.relative_search_space or {}),
                    seconds,
                    notes,
                )
            except BaseException as error:
                reply = ("failed", picklable_error(error), traceback.format_exc())
            connection.send(reply)
        elif kind == "space":
            plan = replace(plan, recent_space=message[1])
        elif kind == "stop":
            connection.send(("stopped",))
            return


def main(argv: Sequence[str]) -> None:
    child_main(lambda: serve(Connection(int(argv[1]))))


if __name__ == "__main__":
    main(sys.argv)
