"""``sweeper.run``: the Python API. The CLI is a thin layer over it."""

from __future__ import annotations

import contextlib
import logging
import os
import sys
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import optuna

from sweeper._config import BUDGET, ENV_PREFIX, SweepConfig, resolve_config
from sweeper._errors import (
    ConfigError,
    ObjectiveError,
    SweeperError,
    SweepFailed,
    SweepInterrupted,
)
from sweeper._logging import get_logger
from sweeper._words import Reworded, api_words
from sweeper.objective._capture import FileStudy
from sweeper.objective._file import read_objective_file
from sweeper.objective._ref import ObjectiveRef, study_name_for
from sweeper.orchestrator._report import Reporter, SweepSummary
from sweeper.orchestrator._sweep import SweepResult, sweep
from sweeper.study._storage import home

Objective = Callable[[Any], Any]


def run(
    target: Objective | str | os.PathLike[str],
    /,
    *,
    objective: str | None = None,
    n_trials: int | None = None,
    timeout: float | None = None,
    parallel: int | None = None,
    study: str | None = None,
    storage: str | None = None,
    direction: str | Sequence[str] | None = None,
    sampler: str | optuna.samplers.BaseSampler | None = None,
    sampler_args: Mapping[str, Any] | None = None,
    pruner: str | optuna.pruners.BasePruner | None = None,
    pruner_args: Mapping[str, Any] | None = None,
    seed: int | None = None,
    trial_timeout: float | None = None,
    budget: float | None = None,
    backend: str | None = None,
    track: bool | None = None,
    aim_repo: str | None = None,
    gpu: str | Sequence[str] | None = None,
    cpu: float | None = None,
    memory: int | None = None,
    retries: int | None = None,
    secrets: str | Sequence[str] | None = None,
    volume: str | None = None,
    pip: str | Sequence[str] | None = None,
    requirements: str | None = None,
    callbacks: Sequence[Callable[[optuna.Study, optuna.trial.FrozenTrial], None]] | None = None,
    progress: str | bool = "auto",
    resume: bool = False,
) -> optuna.Study:
    """Run a sweep of an Optuna objective on parallel workers and return the study.

    As ``study.optimize`` would, it raises when no trial completed
    (:class:`sweeper.SweepFailed`, with the first failure's traceback) and when it was
    interrupted (:class:`sweeper.SweepInterrupted`, a ``KeyboardInterrupt``, once every
    trial is recorded). What trials print is shown, prefixed by their number.

    Args:
        target: The objective: a function ``f(trial) -> value(s)``, or the path of a file
            that defines one (``"objectives/mlp.py"``; ``"file.py:name"`` picks a function).
        objective: Name of the function in the file (default: ``objective``).
        n_trials: Trials to run in this call; the study keeps earlier ones.
        timeout: Stop asking for trials after this many seconds (running trials finish).
        parallel: Trials in flight at once (default: one per GPU, else one per CPU core).
        study: Study name (default: the file's name, or the function's). Calling ``run``
            again continues the study. A function's default study is the one of its name
            made by the same function (same code, helpers and constants): an edited
            function starts ``name-2`` (and says so); a study named here is never joined
            by another function (see ``resume``).
        storage: Optuna storage: a database URL or a journal file path (default:
            ``.sweeper/optuna.journal`` in the working directory).
        direction: ``"minimize"`` or ``"maximize"``, or one per objective value.
        sampler: ``"auto"`` (the default), ``"tpe"``, ``"random"``, ``"cmaes"``, ``"gp"``,
            ``"qmc"``, ``"nsga2"`` ...
            or an Optuna sampler object. ``sampler_args`` are passed to a named sampler.
        pruner: ``"median"``, ``"percentile"``, ``"halving"``, ``"hyperband"``, ``"none"`` ...
            or an Optuna pruner object. ``pruner_args`` are passed to a named pruner.
        seed: Seed for a named sampler.
        trial_timeout: Fail a trial that runs longer than this many seconds.
        budget: On Modal, stop asking for trials once the estimated cost in US dollars
            (spent, plus what the running trials are expected to cost) would pass this;
            running trials finish. See the README's "What a sweep costs".
        backend: ``"local"`` (worker processes, the default) or ``"modal"``.
        track: Track every trial in Aim (default ``True``); see ``sweeper ui``.
        aim_repo: Folder of the Aim repo (default: ``.sweeper/aim``).
        gpu, cpu, memory, retries, secrets, volume, pip, requirements: for
            ``backend="modal"``: the GPU type (or a fallback list), CPU cores and memory (MiB)
            per trial container, Modal's retries of a failed container, Modal secrets by name,
            the Volume, and the packages of the trial image (default: what the objective
            imports). See the README's "Running on Modal".
        callbacks: Functions called with ``(study, frozen_trial)`` after each trial is told,
            as ``study.optimize(callbacks=...)`` calls them (Optuna's
            ``MaxTrialsCallback``, for one); ``study.stop()`` in one ends the sweep after
            the running trials finish.
        progress: ``"auto"``, ``"terminal"``, ``"plain"``, ``"none"`` (only the summary), or
            ``False`` (nothing at all).
        resume: Continue the study (``study=``, or the function's name) even if another
            function objective made it: the study keeps its trials and takes this one's.

    Returns:
        The :class:`optuna.Study`, ready for ``best_params``, ``trials_dataframe()`` and
        Optuna's plots.

    Raises:
        sweeper.UsageError: bad options or an unusable objective, before the study is
            touched.
        sweeper.SweepFailed: no trial of this call completed or was pruned.
        sweeper.SweepInterrupted: the sweep was interrupted (a ``KeyboardInterrupt``).
    """
    options = {
        "n_trials": n_trials,
        "timeout": timeout,
        "parallel": parallel,
        "study": study,
        "storage": storage,
        "directions": direction,
        "sampler": sampler,
        "sampler_args": sampler_args,
        "pruner": pruner,
        "pruner_args": pruner_args,
        "seed": seed,
        "trial_timeout": trial_timeout,
        "budget": budget,
        "backend": backend,
        "track": track,
        "aim_repo": aim_repo,
        "gpu": gpu,
        "cpu": cpu,
        "memory": memory,
        "retries": retries,
        "secrets": secrets,
        "volume": volume,
        "pip": pip,
        "requirements": requirements,
    }
    from sweeper.progress._notebook import in_ipython, in_notebook

    notebook = in_notebook()
    try:
        reporter = Reworded(make_reporter(progress), notebook=notebook)
        result = run_sweep(
            target,
            objective=objective,
            options=options,
            progress=reporter,
            callbacks=callbacks,
            resume=resume,
            keep_warm=in_ipython(),
        )
    except SweeperError as error:
        # In this API's words, raised here: what went wrong inside is not the user's to read.
        error.args = (api_words(str(error), notebook=notebook), *error.args[1:])
        raise error.with_traceback(None) from None
    swept = result.study
    if result.interrupted or swept is None:
        raise SweepInterrupted(_interrupted(swept, result.summary), swept)
    counts = result.summary.counts if result.summary is not None else {}
    if counts.get("FAIL") and not counts.get("COMPLETE") and not counts.get("PRUNED"):
        raise SweepFailed(_all_failed(counts["FAIL"], reporter), swept)
    return swept


def _interrupted(study: optuna.Study | None, summary: SweepSummary | None) -> str:
    if study is None:
        return "the sweep was interrupted before it started; the study is as it was."
    finished = sum(summary.counts.values()) if summary is not None else 0
    return (
        f"the sweep was interrupted; the {finished} trial{'s' if finished != 1 else ''} it "
        f"finished are recorded in study {study.study_name!r}. The study is this exception's "
        ".study (in a notebook: sys.last_value.study); run again to continue it."
    )


def _all_failed(failed: int, reporter: Reworded) -> str:
    from sweeper.progress._traceback import user_traceback

    text = f"every trial of this sweep failed ({failed})"
    first = reporter.first_failure
    if first is None:
        return text + "; each trial's reason is in its fail_reason system attribute."
    text += f"; the first, trial {first.number}, with: {first.reason}"
    if first.traceback:
        text += "\n" + user_traceback(first.traceback)
    if first.log_path:
        text += f"\nIts output: {first.log_path}"
    return text


def run_sweep(
    target: Objective | str | os.PathLike[str],
    *,
    objective: str | None,
    options: Mapping[str, Any],
    progress: str | bool | Reporter = "auto",
    callbacks: Sequence[Callable[[optuna.Study, optuna.trial.FrozenTrial], None]] | None = None,
    resume: bool = False,
    keep_warm: bool = False,
) -> SweepResult:
    """Resolve the objective and options, then run the sweep (shared by ``run`` and the CLI).

    Returns however the sweep ended (the CLI turns that into its exit status);
    ``resume`` and ``keep_warm`` are :func:`sweeper.orchestrator.sweep`'s.
    """
    ref, config, notes = prepare(target, objective=objective, options=options)
    reporter = progress if isinstance(progress, Reporter) else make_reporter(progress)
    with _optuna_quiet():
        return sweep(
            ref,
            config,
            reporter=reporter,
            notes=notes,
            callbacks=callbacks or (),
            resume=resume,
            keep_warm=keep_warm,
        )


@contextlib.contextmanager
def _optuna_quiet() -> Iterator[None]:
    """Optuna's own INFO lines ("A new study created ...") repeat what the progress shows."""
    verbosity = optuna.logging.get_verbosity()
    if verbosity < optuna.logging.WARNING and not get_logger("sweeper").isEnabledFor(
        logging.DEBUG
    ):
        optuna.logging.set_verbosity(optuna.logging.WARNING)
    try:
        yield
    finally:
        optuna.logging.set_verbosity(verbosity)


def prepare(
    target: Objective | str | os.PathLike[str],
    *,
    objective: str | None,
    options: Mapping[str, Any],
) -> tuple[ObjectiveRef, SweepConfig, tuple[str, ...]]:
    """Check the objective and merge the options; raise UsageError for bad input."""
    if callable(target) and not isinstance(target, (str, os.PathLike)):
        if objective is not None:
            raise ConfigError(
                "objective= names a function in a file; the target is already a function."
            )
        name = study_name_for(target)
        ref = ObjectiveRef.from_function(target)
        config = resolve_config(default_study=name, explicit=options)
        return ref, config, ()
    if not isinstance(target, (str, os.PathLike)):
        raise ConfigError(
            f"the objective must be a function or the path of a file; got {type(target).__name__}."
        )
    path = os.fspath(target)
    if objective is None and ":" in path and not Path(path).exists():
        path, _, objective = path.rpartition(":")
    info = read_objective_file(path, objective)
    built = None
    optuna_settings, lines = dict(info.optuna_settings), dict(info.optuna_lines)
    if info.main_block:
        from sweeper.objective._capture import capture

        built = capture(info.path, home() / "logs" / f"main-block-{Path(path).stem}.log")
        if built.built:
            optuna_settings, lines = file_study_settings(built, optuna_settings, lines)
    config = resolve_config(
        default_study=Path(path).stem,
        explicit=options,
        file_settings=info.settings,
        optuna_settings=optuna_settings,
    )
    _check_built(path, info.unreadable, built, config)
    # Module code with effects runs once before the workers import the file at once: in the
    # process that ran the main block, or else in the first worker.
    ref = ObjectiveRef.from_file(
        path, info.function, import_first=info.import_effects and built is None
    )
    if built is not None:
        config = config.with_(file_study=built)
    return ref, config, settings_notes(path, config, optuna_settings, lines)


def file_study_settings(
    built: FileStudy, literal: dict[str, Any], lines: dict[str, int]
) -> tuple[dict[str, Any], dict[str, int]]:
    """The options the file's main block gave (its objects, where the literal reading had
    only names), and the line of each."""
    settings = dict(literal)
    for key in ("sampler", "pruner"):
        if getattr(built, key) is not None:
            settings[key] = getattr(built, key)
            settings.pop(f"{key}_args", None)
    for key, option in (
        ("directions", "directions"),
        ("study_name", "study"),
        ("storage", "storage"),
        ("n_jobs", "parallel"),
    ):
        if getattr(built, key) is not None:
            settings[option] = getattr(built, key)
    if built.n_trials is not None or built.timeout is not None:
        settings["n_trials"], settings["timeout"] = built.n_trials, built.timeout
        settings = {k: v for k, v in settings.items() if v is not None or k not in BUDGET}
    found = dict(lines)
    for key, line in built.lines.items():
        found[{"study_name": "study", "n_jobs": "parallel"}.get(key, key)] = line
    return settings, found


def _check_built(
    path: str, unreadable: Mapping[str, int], built: FileStudy | None, config: SweepConfig
) -> None:
    """A setting the file builds in its main block that could not be had is an error: the
    sweep never runs with a different sampler than the file's."""
    needed = {
        key: line
        for key, line in unreadable.items()
        if key == "callbacks" or config.sources.get(_option(key)) in (None, "optuna-call")
    }
    if not needed or (built is not None and built.built and built.problem is None):
        return
    key, line = min(needed.items(), key=lambda item: item[1])
    why = built.problem if built is not None and built.problem else "it could not be read"
    flag = {"callbacks": "callbacks= (sweeper.run)", "directions": "--direction"}.get(
        key, f"--{key.replace('_', '-')}"
    )
    raise ObjectiveError(
        f"{path}:{line}: the file builds its {key} in its main block, and running that block "
        f"to get it failed ({why}). Give it with {flag}, or fix the block so that "
        f"`python {path}` runs."
    )


def _option(key: str) -> str:
    return {"direction": "directions"}.get(key, key)


def settings_notes(
    path: str, config: SweepConfig, file: Mapping[str, Any], lines: Mapping[str, int]
) -> tuple[str, ...]:
    """The settings the file's Optuna code gave: those the sweep uses (with their lines), and
    those a flag, an environment variable or the SWEEP dict replaced."""
    name = Path(path).name
    used, replaced = [], []
    budget = next((k for k in ("n_trials", "timeout") if k in config.sources), None)
    for key, value in file.items():
        if key.endswith("_args"):
            continue
        shown = f"{key} {_short(value)}" + (f" (line {lines[key]})" if key in lines else "")
        source = config.sources.get(key)
        if source == "optuna-call":
            used.append(shown)
        elif source is not None:
            replaced.append(f"{shown} by {_source_name(source, key)}")
        elif key in BUDGET and budget is not None:  # the whole budget comes from elsewhere
            replaced.append(f"{shown} by {_source_name(config.sources[budget], budget)}")
    built = config.file_study
    if built is not None and built.callbacks:
        line = built.lines.get("callbacks")
        names = ", ".join(_callable_name(c) for c in built.callbacks)
        used.append(f"callbacks {names}" + (f" (line {line})" if line else ""))
    if built is not None and built.enqueued:
        count = len(built.enqueued)
        used.append(f"{count} enqueued trial{'s' if count != 1 else ''}")
    notes = []
    if used:
        notes.append(f"from {name}: " + ", ".join(used) + ".")
    if replaced:
        notes.append(f"{name}'s " + "; ".join(replaced) + ".")
    return tuple(notes)


def _callable_name(value: Any) -> str:
    name = getattr(value, "__name__", None)
    return str(name) if isinstance(name, str) else type(value).__name__


def _short(value: Any) -> str:
    if isinstance(value, (optuna.samplers.BaseSampler, optuna.pruners.BasePruner)):
        return type(value).__name__
    if isinstance(value, (list, tuple)) and len(value) == 1:
        value = value[0]
    text = repr(value) if not isinstance(value, str) else value
    return text if len(text) <= 40 else text[:37] + "..."


def _source_name(source: str, key: str) -> str:
    if source == "flag":
        return (
            f"--{key.replace('_', '-')}"
            if key not in ("directions", "study")
            else {"directions": "--direction", "study": "--study"}[key]
        )
    if source == "env":
        return f"{ENV_PREFIX}{key.upper()}"
    return "the SWEEP dict"


def make_reporter(progress: str | bool) -> Reporter:
    """The progress display for ``progress`` (``"auto"`` picks by where output goes)."""
    if progress is False:
        return Reporter()
    if progress == "none":
        from sweeper.progress._plain import SummaryReporter

        return SummaryReporter()
    if progress is True:
        progress = "auto"
    if progress == "auto":
        from sweeper.progress._notebook import in_notebook

        if in_notebook():
            progress = "notebook"
        elif sys.stderr.isatty():
            progress = "terminal"
        else:
            progress = "plain"
    if progress == "notebook":
        from sweeper.progress._notebook import NotebookReporter

        return NotebookReporter()
    if progress == "terminal":
        from sweeper.progress._terminal import TerminalReporter

        return TerminalReporter()
    if progress == "plain":
        from sweeper.progress._plain import PlainReporter

        return PlainReporter()
    raise ConfigError(
        f"progress must be 'auto', 'notebook', 'terminal', 'plain' or 'none'; got {progress!r}."
    )
