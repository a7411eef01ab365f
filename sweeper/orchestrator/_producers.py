"""Who asks for a sweep's trials: sampler processes started for it (when its sampler can be
sent to them), a thread of this process, or the loop itself for a cheap sampler.

The auto sampler's GP samples in one of them, as many trials as it has time for; the others,
and a thread beside them, sample with its TPE copy
(:meth:`~sweeper.study.AutoSampler.filler`) when that one is busy.
"""

from __future__ import annotations

import contextlib
import os
import sys
from pathlib import Path
from typing import Any

import optuna

from sweeper._logging import get_logger
from sweeper.orchestrator._asker import (
    CHEAP_SAMPLERS,
    InlineProducer,
    ProcessProducer,
    Producer,
    ThreadProducer,
)
from sweeper.orchestrator._spec import SpecPlan

logger = get_logger(__name__)

Spawned = tuple[Any, Any]
"""A sampler process started ahead, and the connection to it."""


def spawn_samplers(count: int, log_dir: Path) -> list[Spawned]:
    """Start up to ``count`` sampler processes (they start up while the workers do)."""
    from sweeper.orchestrator import _sampler_process

    spawned: list[Spawned] = []
    for index in range(count):
        try:
            spawned.append(_sampler_process.spawn(log_dir / f"sampler-{index}.log"))
        except OSError as error:
            logger.debug("cannot start a sampler process: %s", error)
            break
    return spawned


def make_producers(
    study: optuna.Study,
    spawned: list[Spawned],
    *,
    storage_location: str | None,
    log_dir: Path,
    checkpoints: Path | None,
) -> tuple[list[Producer], list[Spawned], bool]:
    """The producers that ask for ``study``'s trials, using the sampler processes in
    ``spawned`` that its sampler can be sent to. Returns them, the processes left unused
    (for :func:`release`), and whether the auto sampler mixes its GP with TPE."""
    from sweeper.orchestrator import _sampler_process
    from sweeper.study._auto import AutoSampler

    plan = SpecPlan(
        log_dir=str(log_dir),
        checkpoints=str(checkpoints) if checkpoints is not None else None,
    )
    sampler = study.sampler
    mixing = isinstance(sampler, AutoSampler) and sampler.uses_gp
    producers: list[Producer] = []
    unused: list[Spawned] = []
    if spawned and storage_location is not None:
        for index, (process, connection) in enumerate(spawned):
            own = (
                sampler.filler()
                if mixing and index > 0 and isinstance(sampler, AutoSampler)
                else sampler
            )
            blob = _sampler_process.picklable(own)
            if blob is None:
                unused.append((process, connection))
                continue
            init = _sampler_process.Init(
                storage=storage_location,
                study=study.study_name,
                sampler=blob,
                plan=plan,
                reseed=True,  # copies of one sampler would draw the same values
                sys_path=tuple(os.path.abspath(p) if p == "" else p for p in sys.path),
            )
            log = str(log_dir / f"sampler-{index}.log")
            producers.append(
                ProcessProducer(study, process, connection, init, log, filler=mixing and index > 0)
            )
    if mixing:
        assert isinstance(sampler, AutoSampler)
        filling = optuna.load_study(
            study_name=study.study_name,
            storage=study._storage,
            sampler=sampler.filler(),
            pruner=study.pruner,
        )
        if not producers:  # GP has no process: a thread
            producers.append(ThreadProducer(study, plan))
        producers.append(InlineProducer(filling, plan, filler=True))
    elif producers or type(sampler).__name__ in CHEAP_SAMPLERS:
        producers.append(InlineProducer(study, plan, filler=True))
    else:  # an expensive sampler, and no process for it
        producers.append(ThreadProducer(study, plan))
    return producers, unused, mixing


def release(spawned: list[Spawned]) -> None:
    """Stop sampler processes that no producer uses."""
    for process, connection in spawned:
        with contextlib.suppress(OSError):
            connection.close()
        with contextlib.suppress(OSError):
            process.kill()
            process.wait()
