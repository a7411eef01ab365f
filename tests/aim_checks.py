"""Checks that an Aim repo shows a study exactly as its storage has it (tracker issue 14)."""

from __future__ import annotations

import collections
import fcntl
import json
import time
from pathlib import Path
from typing import Any

import optuna

from sweeper.tracking._reconcile import RUNS_FILE, finished_trials, root_of
from sweeper.tracking._writer import WRITER_LOCK


def wait_for_writer(repo: Path, timeout: float = 120.0) -> None:
    """Wait until nobody writes ``repo`` (a tracking process may finish in the background)."""
    lock = repo / WRITER_LOCK
    if not lock.exists():
        return
    deadline = time.monotonic() + timeout
    with open(lock, "a+") as file:
        while True:
            try:
                fcntl.flock(file, fcntl.LOCK_EX | fcntl.LOCK_NB)
                fcntl.flock(file, fcntl.LOCK_UN)
                return
            except OSError:
                if time.monotonic() > deadline:
                    raise AssertionError(f"{repo} is still being written") from None
                time.sleep(0.05)


def indexed_runs(repo: Path, study: str) -> list[Any]:
    """The study's runs as Aim's SDK finds them (through the index, as the UI does)."""
    import aim

    wait_for_writer(repo)
    found = aim.Repo.from_path(str(repo)).query_runs(f"run.experiment == '{study}'", report_mode=0)
    return [item.run for item in found.iter_runs()]


def series(run: Any, name: str, context: dict[str, Any] | None = None) -> dict[int, float]:
    """A metric's steps and values; fails if a step is there twice."""
    from aim.storage.context import Context

    metric = run.get_metric(name, Context(context or {}))
    if metric is None:
        return {}
    steps, (values, *_) = metric.data.items_list()
    assert len(steps) == len(set(steps)), f"a step twice in {name}: {steps}"
    return dict(zip(steps, values, strict=True))


def assert_repo_matches_storage(
    repo: Path, storage: optuna.storages.BaseStorage, study: str
) -> int:
    """Runs == finished trials: one run per root, with the latest finished trial's number,
    state, value, params and whole curve; no step twice; one study run. Returns how many
    trial runs there are."""
    latest = {root_of(t): t for t in finished_trials(storage, study)}
    by_root: dict[Any, list[Any]] = collections.defaultdict(list)
    for run in indexed_runs(repo, study):
        by_root[run["sweeper"]["root"]].append(run)
    assert len(by_root.pop(None, [])) == 1, "one study run"
    assert sorted(by_root) == sorted(latest), "a run for every finished trial, and no other"
    for root, trial in latest.items():
        (run,) = by_root[root]  # exactly one
        assert run.name == f"trial {root}"
        assert run["sweeper"]["trial"] == trial.number, (root, run["sweeper"], trial.number)
        assert run["sweeper"]["state"] == run["result"]["state"] == trial.state.name
        assert run["hparams"] == trial.params
        if trial.values is not None:
            assert run["result"]["values"] == trial.values
        assert series(run, "objective") == trial.intermediate_values, f"trial {trial.number}"
        assert {"COMPLETE": "complete", "PRUNED": "pruned", "FAIL": "failed"}[
            trial.state.name
        ] in run.tags
        assert run.end_time is not None  # closed
    entries = [json.loads(line) for line in (repo / RUNS_FILE).read_text().splitlines()]
    roots = [e["trial"] for e in entries if e["study"] == study]
    assert len(roots) == len(set(roots)), "one run per root in the runs file"
    return len(latest)
