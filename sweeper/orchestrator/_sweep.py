"""Put a sweep together from its options: storage, study, backend, progress, and the loop."""

from __future__ import annotations

import os
import re
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import optuna

from sweeper._config import SweepConfig
from sweeper._cost import CostMeter, rate_for
from sweeper._errors import StorageError, UsageError
from sweeper._logging import get_logger
from sweeper.backends._base import Backend
from sweeper.objective._ref import ObjectiveRef
from sweeper.orchestrator._orchestrator import Callback, OpenStudy, Orchestrator
from sweeper.orchestrator._remembered import choose_study, remember, remembered_settings
from sweeper.orchestrator._report import BestTrial, Reporter, SweepInfo, SweepSummary
from sweeper.orchestrator._stats import SweepStats
from sweeper.study._best import best_of
from sweeper.study._components import make_pruner, make_sampler
from sweeper.study._recovery import Recovery, SweepRecord, recover, register, unregister
from sweeper.study._storage import existing_directions, home, open_storage, remember_sweep
from sweeper.tracking._events import StudyDeleted, StudyOpened
from sweeper.tracking._tracker import HubTracker, StudySource, Tracker

logger = get_logger(__name__)

_STATE_ORDER = ("COMPLETE", "PRUNED", "FAIL", "RUNNING", "WAITING")


@dataclass
class SweepResult:
    """How a sweep went."""

    study: optuna.Study | None
    summary: SweepSummary | None
    interrupted: bool
    stop_reason: str | None


def log_dir_for(study: str, workdir: str | os.PathLike[str] | None = None) -> Path:
    """Where trial output of ``study`` is kept: ``.sweeper/logs/<study>/``."""
    return home(workdir) / "logs" / re.sub(r"[^A-Za-z0-9._-]+", "_", study)


def sweep(
    objective: ObjectiveRef,
    config: SweepConfig,
    *,
    reporter: Reporter,
    workdir: str | os.PathLike[str] | None = None,
    notes: tuple[str, ...] = (),
    backend: Backend | None = None,
    callbacks: Sequence[Callback] = (),
    sampler_processes: int | None = None,
    resume: bool = False,
    keep_warm: bool = False,
) -> SweepResult:
    """Run one sweep. Bad input raises a UsageError before the study is touched.

    ``backend`` replaces the one the options would build (tests use it to run the Modal
    backend over a stand-in for Modal). ``callbacks`` are called after each trial is told,
    as ``study.optimize(callbacks=...)`` calls them. ``sampler_processes`` overrides how
    many processes ask for trials (:func:`default_sampler_processes`; 0: a thread).
    ``resume`` continues ``config.study`` even if another function objective made it (see
    :mod:`sweeper.orchestrator._remembered`); ``keep_warm`` keeps local workers for the
    next sweep of the same objective (an interactive session).
    """
    opened_storage = open_storage(config.storage, workdir)
    storage = opened_storage.storage
    config, study_note = choose_study(
        storage, config, objective, resume=resume, where=opened_storage.description
    )
    existing = existing_directions(storage, config.study)
    if config.directions and existing and tuple(config.directions) != existing:
        raise StorageError(
            f"study {config.study!r} in {opened_storage.description} optimizes "
            f"{', '.join(existing)}, but the options ask for {', '.join(config.directions)}. "
            "Drop --direction to continue the study, or name a new one with --study."
        )
    settings_notes: list[str] = []
    if existing:  # a sampler and pruner not given this time are the study's
        config, settings_notes = remembered_settings(storage, config)
    directions = tuple(config.directions or existing or ("minimize",))
    if (
        len(directions) > 1
        and config.pruner not in ("none", None)
        and not isinstance(config.pruner, optuna.pruners.BasePruner)
    ):
        # Optuna's pruners do not support several objectives; report() would raise anyway.
        config = config.with_(pruner="none", pruner_args={})
    sampler = (
        config.sampler
        if isinstance(config.sampler, optuna.samplers.BaseSampler)
        else make_sampler(config.sampler, config.sampler_args, config.seed)
    )
    pruner = (
        config.pruner
        if isinstance(config.pruner, optuna.pruners.BasePruner)
        else make_pruner(config.pruner, config.pruner_args)
    )
    rate = rate_for(config)  # a budget that cannot be priced is refused before any work
    if backend is None:
        backend, parallel = _make_backend(objective, config, workdir, keep_warm=keep_warm)
    else:
        parallel = config.parallel or 1
    log_dir = log_dir_for(config.study, workdir)
    meter = CostMeter(rate, budget=config.budget, clock=backend.now)
    stats = SweepStats(
        study=config.study,
        directions=directions,
        n_trials=config.n_trials,
        timeout=config.timeout,
        meter=meter,
    )
    record = SweepRecord.for_this_process()
    tracker = _make_tracker(config, workdir, backend, keep_warm=keep_warm)

    def open_study() -> OpenStudy:
        study = optuna.create_study(
            study_name=config.study,
            storage=storage,
            sampler=sampler,
            pruner=pruner,
            directions=[optuna.study.StudyDirection[d.upper()] for d in directions],
            load_if_exists=True,
        )
        study_id = storage.get_study_id_from_name(config.study)
        register(storage, study_id, record)
        remember(storage, study_id, config, objective)
        if objective.path is not None:
            remember_sweep(objective.path, config.study, opened_storage.url, workdir)
        reporter.begin(
            SweepInfo(
                objective=objective.label,
                study=config.study,
                storage=opened_storage.description,
                backend=config.backend,
                parallel=parallel,
                directions=directions,
                sampler=type(sampler).__name__,
                pruner=type(pruner).__name__,
                n_trials=config.n_trials,
                timeout=config.timeout,
                log_dir=str(log_dir),
            )
        )
        for text in opened_storage.notes:
            reporter.note(text, "warning")
        for text in (*notes, *([study_note] if study_note else []), *settings_notes):
            reporter.note(text)
        if config.n_trials is None and config.timeout is None:
            reporter.note("No --n-trials or --timeout given: running until Ctrl-C.")
        if config.budget is not None and not meter.priced:
            reporter.note(
                f"--budget {config.budget:g}: trials on {config.backend} workers cost nothing "
                "here, so the budget never stops this sweep.",
                "warning",
            )
        for text in _recovery_notes(recover(study, storage, study_id)):
            reporter.note(text, "warning")
        _apply_file_study(study, config)
        tracker.start(StudySource(storage, config.study))  # reconciles Aim with the storage
        tracker.emit(StudyOpened(config.study, directions, _settings(config, objective, parallel)))
        stats.seed(study.get_trials(deepcopy=False))
        return OpenStudy(study, storage, study_id, created=existing is None)

    orchestrator = Orchestrator(
        backend=backend,
        open_study=open_study,
        reporter=reporter,
        stats=stats,
        log_dir=log_dir,
        n_trials=config.n_trials,
        timeout=config.timeout,
        trial_timeout=config.trial_timeout,
        tracker=tracker,
        checkpoints=_checkpoints(config, workdir),
        callbacks=list(callbacks) or _file_callbacks(config),
        storage_location=opened_storage.location or None,
        sampler_processes=(
            default_sampler_processes(parallel, sampler)
            if sampler_processes is None
            else sampler_processes
        ),
        cost=meter,
    )
    try:
        study = _run(orchestrator, backend, storage, record, config.study, tracker, reporter)
        summary = None
        if study is not None:
            summary = _summary(
                study, opened_storage.description, directions, stats, orchestrator, log_dir
            )
            if isinstance(tracker, HubTracker) and tracker.enabled:
                summary = replace(summary, aim_repo=_relative(tracker.repo))
            reporter.end(summary)
    finally:
        reporter.close()
    return SweepResult(
        study=study,
        summary=summary,
        interrupted=orchestrator.interrupted,
        stop_reason=orchestrator.stop_reason,
    )


def _apply_file_study(study: optuna.Study, config: SweepConfig) -> None:
    """What the file's main block did to its study besides the options, done to this one:
    the trials it enqueued (as `python FILE` enqueues them on every run) and the study's user
    attributes it set."""
    built = config.file_study
    if built is None:
        return
    for key, value in built.user_attrs.items():
        study.set_user_attr(key, value)
    for trial in built.enqueued:
        study.enqueue_trial(trial["params"], user_attrs=trial["user_attrs"] or None)


def _file_callbacks(config: SweepConfig) -> list[Callback]:
    built = config.file_study
    return list(built.callbacks) if built is not None else []


def default_sampler_processes(parallel: int, sampler: optuna.samplers.BaseSampler) -> int:
    """How many sampler processes ask for trials for a sweep.

    None for a sampler that costs next to nothing (random, grid: it asks inline). Otherwise
    one for every two cores, at most 4, and at least one: each samples on a core of its
    own, which a thread of the orchestrator cannot (its threads take turns), and a trial is
    asked while others run. Fewer than the workers, at most one a worker.
    """
    from sweeper.orchestrator._asker import CHEAP_SAMPLERS

    if type(sampler).__name__ in CHEAP_SAMPLERS:
        return 0
    return max(1, min(4, (os.cpu_count() or 2) // 2, parallel))


def _run(
    orchestrator: Orchestrator,
    backend: Backend,
    storage: optuna.storages.BaseStorage,
    record: SweepRecord,
    study_name: str,
    tracker: Tracker,
    reporter: Reporter,
) -> optuna.Study | None:
    """Run the loop; keep the storage as it was if a new study turns out to be misconfigured.

    Waits for the tracking writer to finish, so what was tracked can be read when this
    returns.
    """
    try:
        orchestrator.run()
    except UsageError:
        opened = orchestrator.opened
        if opened is not None and opened.created:
            optuna.delete_study(study_name=study_name, storage=storage)
            tracker.emit(StudyDeleted(study_name))
        raise
    finally:
        try:
            opened = orchestrator.opened
            if opened is not None and _study_exists(storage, study_name):
                unregister(storage, opened.study_id, record)
            _close_tracker(tracker, reporter)  # before the backend: on Modal it is in the App
        finally:
            backend.close()
    return orchestrator.opened.study if orchestrator.opened else None


def _make_tracker(
    config: SweepConfig,
    workdir: str | os.PathLike[str] | None,
    backend: Backend,
    *,
    keep_warm: bool = False,
) -> Tracker:
    if not config.track:
        return Tracker()
    if config.backend == "modal":
        from sweeper.backends._modal import ModalBackend
        from sweeper.tracking._modal import ModalTracker

        if isinstance(backend, ModalBackend):
            return ModalTracker(backend)
    repo = Path(config.aim_repo).expanduser() if config.aim_repo else home(workdir) / "aim"
    return HubTracker(repo, log_path=home(workdir) / "logs" / "tracking.log", keep=keep_warm)


def _checkpoints(config: SweepConfig, workdir: str | os.PathLike[str] | None) -> Path | None:
    """Local trials' checkpoint folders (on Modal they are on the Volume)."""
    if config.backend != "local":
        return None
    return home(workdir) / "checkpoints" / re.sub(r"[^A-Za-z0-9._-]+", "_", config.study)


def _close_tracker(tracker: Tracker, reporter: Reporter) -> None:
    if tracker.backlog > 1000:
        reporter.note(f"Writing {tracker.backlog} tracking events to Aim...")
    tracker.close()
    problem = tracker.take_problem()
    if problem is not None:
        reporter.note(problem, "warning")


def _settings(config: SweepConfig, objective: ObjectiveRef, parallel: int) -> dict[str, Any]:
    """The sweep's settings, as the study's Aim run shows them."""

    def name(component: Any) -> Any:
        return component if isinstance(component, str) else type(component).__name__

    return {
        "objective": objective.label,
        "n_trials": config.n_trials,
        "timeout": config.timeout,
        "parallel": parallel,
        "sampler": name(config.sampler),
        "sampler_args": config.sampler_args,
        "pruner": name(config.pruner),
        "pruner_args": config.pruner_args,
        "seed": config.seed,
        "trial_timeout": config.trial_timeout,
        "backend": config.backend,
        "budget": config.budget,
    }


def _relative(path: Path) -> str:
    try:
        return str(path.resolve().relative_to(Path.cwd()))
    except ValueError:
        return str(path)


def _make_backend(
    objective: ObjectiveRef,
    config: SweepConfig,
    workdir: str | os.PathLike[str] | None,
    *,
    keep_warm: bool = False,
) -> tuple[Backend, int]:
    if config.backend == "local":
        from sweeper.backends._local import LocalBackend, default_parallel, warm_backend

        parallel = config.parallel or default_parallel()
        log_dir = log_dir_for(config.study, workdir)
        if keep_warm and objective.pickled is not None:  # a file is imported afresh
            return warm_backend(objective, parallel, log_dir=log_dir), parallel
        return LocalBackend(objective, parallel, log_dir=log_dir), parallel
    from sweeper.backends._modal_setup import MODAL_DEFAULT_PARALLEL, make_modal_backend

    parallel = config.parallel or MODAL_DEFAULT_PARALLEL
    return make_modal_backend(objective, config, parallel), parallel


def _study_exists(storage: optuna.storages.BaseStorage, name: str) -> bool:
    try:
        storage.get_study_id_from_name(name)
    except KeyError:
        return False
    return True


def _recovery_notes(recovery: Recovery) -> list[str]:
    notes = []
    if recovery.failed:
        notes.append(
            f"{_numbers(recovery.failed)} left RUNNING by a sweep that stopped without "
            "finishing (killed?): marked FAIL."
        )
    if recovery.returned:
        notes.append(
            f"{_numbers(recovery.returned)} asked by a sweep that stopped without finishing, "
            "but never started: back in the queue."
        )
    if recovery.requeued:
        notes.append(
            f"The parameters of interrupted {_numbers(recovery.requeued)} will run again first."
        )
    if recovery.left_running:
        owners = ", ".join(f"pid {r.pid} on {r.host}" for r in recovery.active)
        notes.append(
            f"{_numbers(recovery.left_running)} RUNNING in another sweep of this study "
            f"({owners}); left alone."
        )
    return notes


def _numbers(numbers: list[int]) -> str:
    shown = ", ".join(str(n) for n in numbers[:10])
    more = f" and {len(numbers) - 10} more" if len(numbers) > 10 else ""
    return f"trial{'s' if len(numbers) != 1 else ''} {shown}{more}"


def _summary(
    study: optuna.Study,
    storage: str,
    directions: tuple[str, ...],
    stats: SweepStats,
    orchestrator: Orchestrator,
    log_dir: Path,
) -> SweepSummary:
    trials = study.get_trials(deepcopy=False)
    counted = Counter(t.state.name for t in trials)
    totals = {state: counted[state] for state in _STATE_ORDER if counted[state]}
    best: list[BestTrial] = []
    complete = [t for t in trials if t.state == optuna.trial.TrialState.COMPLETE]
    if complete:
        best = [BestTrial(t.number, tuple(t.values), dict(t.params)) for t in best_of(study)]
    return SweepSummary(
        study=study.study_name,
        storage=storage,
        directions=directions,
        elapsed=stats.snapshot().elapsed,
        counts=dict(stats.counts),
        totals=totals,
        best=best,
        stop_reason=orchestrator.stop_reason,
        log_dir=str(log_dir),
        returned=orchestrator.returned,
        spend=stats.meter.spend() if stats.meter is not None and stats.meter.priced else None,
    )
