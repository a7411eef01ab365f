"""``status`` and ``best``: read a study back from its storage without running anything."""

from __future__ import annotations

import argparse
import datetime
import json
import sys
from collections import Counter
from pathlib import Path
from typing import Any

import optuna
from optuna.trial import FrozenTrial, TrialState

from sweeper._config import env_settings, normalize_keys
from sweeper._cost import study_cost_line
from sweeper._errors import StorageError
from sweeper._format import format_params, format_values
from sweeper.cli._exit import EXIT_FAILED, EXIT_OK
from sweeper.objective._file import read_objective_file
from sweeper.study._best import best_of
from sweeper.study._recovery import FAIL_REASON_KEY, LOG_KEY, sweeps
from sweeper.study._storage import (
    DEFAULT_JOURNAL,
    home,
    open_storage,
    remembered_sweep,
    study_names,
)

STATE_LABELS = {
    "COMPLETE": "complete",
    "PRUNED": "pruned",
    "FAIL": "failed",
    "RUNNING": "running",
    "WAITING": "waiting",
}


def _settings(args: argparse.Namespace) -> dict[str, object]:
    """The settings the arguments, the objective file and the environment give."""
    settings: dict[str, object] = {}
    if getattr(args, "file", None):
        settings.update(normalize_keys(read_objective_file(args.file).settings, "SWEEP"))
        settings.setdefault("study", Path(args.file).stem)
        last = remembered_sweep(args.file)  # where its last sweep here went (its own code
        if last is not None:  # may name the study and its storage)
            settings["study"] = last["study"]
            if last.get("storage"):
                settings["storage"] = last["storage"]
    for key, value in env_settings().items():
        settings[key] = value
    if args.study:
        settings["study"] = args.study
    if args.storage:
        settings["storage"] = args.storage
    if getattr(args, "aim_repo", None):
        settings["aim_repo"] = args.aim_repo
    return settings


def _open(settings: dict[str, object]) -> tuple[optuna.storages.BaseStorage, str, list[str]]:
    """The storage the settings name (read-only), how to show it, and its studies."""
    storage_spec = settings.get("storage")
    if storage_spec is None and not (home() / DEFAULT_JOURNAL).exists():
        raise StorageError(
            f"no sweeps here: {home() / DEFAULT_JOURNAL} does not exist. Run "
            "`python -m sweeper run FILE` in this directory first, or give --storage."
        )
    opened = open_storage(str(storage_spec) if storage_spec else None, read_only=True)
    for note in opened.notes:
        sys.stderr.write(f"warning: {note}\n")
    return opened.storage, opened.description, study_names(opened.storage)


def _aim_repo(settings: dict[str, object]) -> Path:
    repo = settings.get("aim_repo")
    return Path(str(repo)).expanduser() if repo else home() / "aim"


def _locate(
    args: argparse.Namespace, settings: dict[str, object] | None = None
) -> tuple[optuna.Study, str]:
    """The study the arguments point at, and how to show its storage."""
    settings = _settings(args) if settings is None else settings
    storage, description, names = _open(settings)
    name = settings.get("study")
    if name is None:
        if len(names) == 1:
            name = names[0]
        else:
            listed = ", ".join(names) if names else "none"
            raise StorageError(
                f"{description} holds {len(names)} studies ({listed}). Pick one with --study NAME."
            )
    if name not in names:
        listed = ", ".join(names) if names else "none"
        raise StorageError(
            f"no study {name!r} in {description} (studies there: {listed}). "
            "Check --study and --storage."
        )
    study = optuna.load_study(study_name=str(name), storage=storage)
    return study, description


def status(args: argparse.Namespace) -> int:
    settings = _settings(args)
    study, where = _locate(args, settings)
    trials = study.get_trials(deepcopy=False)
    counts = Counter(t.state.name for t in trials)
    directions = ", ".join(d.name.lower() for d in study.directions)
    out = sys.stdout
    out.write(f"Study {study.study_name!r} in {where} ({directions})\n")
    parts = ", ".join(
        f"{counts[state]} {label}" for state, label in STATE_LABELS.items() if counts[state]
    )
    out.write(f"  {len(trials)} trials: {parts}\n")
    for line in _best_lines(study, trials):
        out.write(f"  {line}\n")
    cost = study_cost_line(trials)
    if cost:
        out.write(f"  {cost}\n")
    study_id = study._storage.get_study_id_from_name(study.study_name)
    records = sweeps(study._storage, study_id)
    live = [r for r in records if r.status() == "alive"]
    if live:
        for record in live:
            out.write(
                f"  running now: sweep pid {record.pid} on {record.host}, "
                f"started {record.started[:19]}\n"
            )
    elif records:
        last = max(records, key=lambda r: r.started)
        out.write(f"  no sweep running; last one started {last.started[:19]}\n")
    failed = [t for t in trials if t.state == TrialState.FAIL][-5:]
    if failed:
        out.write("  latest failures:\n")
        for trial in failed:
            reason = str(trial.system_attrs.get(FAIL_REASON_KEY, "")).split("\n", 1)[0]
            log = trial.system_attrs.get(LOG_KEY)
            out.write(
                f"    trial {trial.number}: {reason or 'no reason recorded'}"
                + (f" (log: {log})" if log else "")
                + "\n"
            )
    finished = [t.datetime_complete for t in trials if t.datetime_complete]
    if finished:
        out.write(f"  last trial finished {_ago(max(finished))}\n")
    aim_line = _aim_line(study, _aim_repo(settings))
    if aim_line:
        out.write(f"  {aim_line}\n")
    return EXIT_OK


def _aim_line(study: optuna.Study, repo: Path) -> str | None:
    """Whether the Aim repo shows every finished trial of ``study`` (None: it tracks none
    of this study, so it is not this study's repo)."""
    from sweeper.tracking._reconcile import Ledger, lag

    if not any(key[0] == study.study_name for key in Ledger.read(repo).runs):
        return None
    behind = lag(study._storage, study.study_name, repo)
    shown = _shown(repo)
    if not behind:
        return f"Aim: every finished trial is in {shown}"
    if _being_written(repo):
        return f"Aim: a sweep is writing {shown}; {_count(len(behind))} not in it yet"
    return (
        f"Aim lags behind the storage: {_count(len(behind))} not in {shown} yet "
        f"({_numbers(behind)}); the next run of the study writes them, or now: "
        "python -m sweeper track --repair"
    )


def _being_written(repo: Path) -> bool:
    """Whether a tracking process holds the repo (a sweep runs, or its writer finishes)."""
    import fcntl

    from sweeper.tracking._writer import WRITER_LOCK

    try:
        with open(repo / WRITER_LOCK, "a+") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
            fcntl.flock(lock, fcntl.LOCK_UN)
    except OSError:
        return True
    return False


def track(args: argparse.Namespace) -> int:
    """``track``: say whether the Aim repo shows every finished trial; ``--repair`` makes
    it (exit status 1 when something is missing and was not repaired)."""
    from sweeper.tracking._reconcile import lag

    settings = _settings(args)
    storage, description, names = _open(settings)
    studies = [str(settings["study"])] if settings.get("study") else names
    for name in studies:
        if name not in names:
            raise StorageError(f"no study {name!r} in {description}. Check --study and --storage.")
    repo = _aim_repo(settings)
    out = sys.stdout
    out.write(f"Aim repo {_shown(repo)}, studies in {description}\n")
    if args.repair:
        from sweeper.tracking._repair import repair

        for report in repair(storage, studies, repo):
            removed = (
                f", {report.duplicates} duplicate run{'s' if report.duplicates != 1 else ''} "
                "removed"
                if report.duplicates
                else ""
            )
            out.write(
                f"  {report.study}: {_count(report.finished)}; "
                f"{report.rebuilt} run{'s' if report.rebuilt != 1 else ''} rebuilt{removed}\n"
            )
    missing = 0
    for name in studies:
        behind = lag(storage, name, repo)
        missing += len(behind)
        if behind:
            out.write(f"  {name}: {_count(len(behind))} not in Aim ({_numbers(behind)})\n")
        elif not args.repair:
            out.write(f"  {name}: every finished trial is in Aim\n")
    if missing and not args.repair:
        out.write("Run `python -m sweeper track --repair` to write them.\n")
    return EXIT_FAILED if missing else EXIT_OK


def _count(n: int) -> str:
    return f"{n} finished trial{'s' if n != 1 else ''}"


def _numbers(numbers: list[int]) -> str:
    shown = ", ".join(str(n) for n in numbers[:10])
    more = f" and {len(numbers) - 10} more" if len(numbers) > 10 else ""
    return f"trial{'s' if len(numbers) != 1 else ''} {shown}{more}"


def _shown(path: Path) -> str:
    try:
        return str(path.resolve().relative_to(Path.cwd()))
    except ValueError:
        return str(path)


def best(args: argparse.Namespace) -> int:
    study, _ = _locate(args)
    trials = study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
    chosen = _best_trials(study, trials)
    if args.json:
        sys.stdout.write(
            dump_json(
                {
                    "study": study.study_name,
                    "directions": [d.name.lower() for d in study.directions],
                    "best": [
                        {"number": t.number, "values": t.values, "params": t.params}
                        for t in chosen
                    ],
                }
            )
            + "\n"
        )
        return EXIT_OK
    for line in _best_lines(study, trials, limit=None):
        sys.stdout.write(line + "\n")
    return EXIT_OK


def _best_trials(study: optuna.Study, complete: list[FrozenTrial]) -> list[FrozenTrial]:
    return best_of(study) if complete else []


def _best_lines(
    study: optuna.Study, trials: list[FrozenTrial], limit: int | None = 5
) -> list[str]:
    complete = [t for t in trials if t.state == TrialState.COMPLETE]
    chosen = _best_trials(study, complete)
    if not chosen:
        if complete:
            return ["no completed trial meets the sampler's constraints"]
        return ["no completed trial yet"]
    if len(study.directions) == 1:
        trial = chosen[0]
        lines = [f"best value {format_values(tuple(trial.values))} from trial {trial.number}"]
        width = max((len(k) for k in trial.params), default=0)
        lines += [f"    {k.ljust(width)} = {v!r}" for k, v in trial.params.items()]
        return lines
    lines = [f"Pareto front: {len(chosen)} trials"]
    shown = chosen if limit is None else chosen[:limit]
    lines += [
        f"    trial {t.number}: values {format_values(tuple(t.values))}; "
        f"{format_params(t.params, limit=100)}"
        for t in shown
    ]
    if len(shown) < len(chosen):
        lines.append(f"    ... and {len(chosen) - len(shown)} more (python -m sweeper best)")
    return lines


def _ago(moment: datetime.datetime) -> str:
    seconds = (datetime.datetime.now() - moment).total_seconds()
    if seconds < 120:
        return f"{seconds:.0f}s ago"
    if seconds < 7200:
        return f"{seconds / 60:.0f} min ago"
    return f"at {moment:%Y-%m-%d %H:%M}"


def dump_json(value: Any) -> str:
    return json.dumps(value, indent=2, default=str)
