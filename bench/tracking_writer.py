"""Tracking writer throughput (tracker issue 14): how many finished trials a second the one
writer of an Aim repo takes, and how long a sweep whose trials are done waits for it.

Registered in ``bench/metrics.py`` (``"tracking_writer": tracking_writer``) and
``bench/variants.py`` (``tracking_writer_variant`` in ``VARIANTS``). The repo is written on
the disk the working directory is on, not in memory: RocksDB's file syncs are what a
writer spends its time on, and a user's repo is on a disk.
"""

from __future__ import annotations

import os
import shutil
import tempfile
import time
from pathlib import Path
from typing import Any

from bench._harness import Metric, interleave, median, run_variant, spread

TARGET_RATE = 200.0
"""Trial-finished events a second (the issue)."""
TARGET_TAIL = 2.0
"""Seconds from a sweep's last trial to its return (the issue)."""
REPORTS = 5


def reporting(trial: Any) -> float:
    """A fast objective: a parameter, five reports, a value."""
    x = float(trial.suggest_float("x", 0.0, 1.0))
    for step in range(REPORTS):
        trial.report(x + step, step)
    return x


def _events(n_trials: int, first: int = 0) -> list[Any]:
    """What the orchestrator sends for ``n_trials`` trials of a fast objective."""
    from sweeper.tracking import (
        ParamsSet,
        Reported,
        StudyProgress,
        TrialFinished,
        TrialStarted,
    )

    events: list[Any] = []
    for number in range(first, first + n_trials):
        x = number / (first + n_trials)
        events += [
            TrialStarted("bench", number, number, time.time()),
            ParamsSet("bench", number, {"x": x}),
            *(Reported("bench", number, step, x + step) for step in range(REPORTS)),
            TrialFinished(
                "bench", number, number, "COMPLETE", (x,), 0.01, {"x": x}, None, {"pid": 1}
            ),
            StudyProgress("bench", number + 1, {"COMPLETE": number + 1}, x, number),
        ]
    return events


def _sweeper_writer(folder: Path, n_trials: int, batch: int) -> float:
    """sweeper's writer, fed as its hub feeds it: what arrived together, then a flush."""
    from sweeper.tracking import AimWriter, StudyOpened

    writer = AimWriter(folder / "aim")
    writer.apply([StudyOpened("bench", ("minimize",), {})])
    writer.flush()
    started = time.perf_counter()
    for first in range(0, n_trials, batch):
        writer.apply(_events(min(batch, n_trials - first), first))
        writer.flush()
    writer.close()
    return time.perf_counter() - started


def _aim_sdk(folder: Path, n_trials: int) -> float:
    """Aim's own SDK, a run per trial, indexed when it closes: what sweeper did before."""
    from aim.sdk.index_manager import RepoIndexManager
    from aim.sdk.repo import Repo
    from aim.sdk.run import Run

    repo = Repo.from_path(str(folder / "aim"), init=True)
    options = {"system_tracking_interval": None, "capture_terminal_logs": False}
    started = time.perf_counter()
    for number in range(n_trials):
        x = number / n_trials
        run = Run(repo=repo, experiment="bench", **options)
        run.name = f"trial {number}"
        run["sweeper"] = {"study": "bench", "root": number, "kind": "trial"}
        run.add_tag("running")
        run["hparams", "x"] = x
        for step in range(REPORTS):
            run.track(x + step, name="objective", step=step)
        run["result"] = {"state": "COMPLETE", "value": x, "duration": 0.01}
        run.remove_tag("running")
        run.add_tag("complete")
        run_hash = run.hash
        run.close()
        RepoIndexManager.get_index_manager(repo).index(run_hash)
        repo.container_pool.clear()
    return time.perf_counter() - started


def _floor(folder: Path, n_trials: int) -> float:
    """RocksDB's own part: the two databases an Aim run is, created with Aim's options, a
    key written to each, the sequences flushed and both closed, on as many threads as the
    writer uses, and nothing else (no Python-side work, no index, no SQL). No writer that
    keeps Aim's layout, a run per trial, can go faster than this on the same machine."""
    from concurrent.futures import ThreadPoolExecutor

    from aim.storage.rockscontainer import RocksContainer

    from sweeper.tracking._writer import _THREADS

    root = folder / "aim" / ".aim"

    def one(number: int) -> None:
        for kind in ("meta", "seqs"):
            db = RocksContainer(str(root / kind / "chunks" / f"run{number}"), read_only=False)
            batch = db.batch()
            db.set(b"key", b"value", store_batch=batch)
            db.commit(batch)
            db.close()

    started = time.perf_counter()
    with ThreadPoolExecutor(_THREADS) as pool:
        list(pool.map(one, range(n_trials)))
    return time.perf_counter() - started


def _check(folder: Path, study: str = "bench") -> int:
    """How many trial runs of ``study`` Aim's SDK finds, once the writer is done."""
    import fcntl

    import aim

    with open(folder / "aim" / "sweeper-writer.lock", "a+") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # a writer finishing in the background holds it
        fcntl.flock(lock, fcntl.LOCK_UN)
    repo = aim.Repo.from_path(str(folder / "aim"))
    found = repo.query_runs(f"run.experiment == '{study}'", report_mode=0).iter_runs()
    return sum(1 for item in found if item.run.name != "study")


def _tail(n_trials: int, parallel: int) -> dict[str, Any]:
    """A tracked sweep of a fast objective: seconds from its last trial's end to return."""
    import optuna

    import sweeper

    folder = Path(tempfile.mkdtemp(prefix="sweeper-bench-tail-"))
    try:
        os.chdir(folder)
        storage = str(folder / "optuna.journal")
        study = sweeper.run(
            reporting,
            study="tail",
            storage=storage,
            n_trials=n_trials,
            parallel=parallel,
            sampler="random",
            progress=False,
            aim_repo=str(folder / "aim"),
        )
        returned = time.time()
        last = max(t.datetime_complete for t in study.trials if t.datetime_complete)
        trials = study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.COMPLETE,))
        return {
            "tail": returned - last.timestamp(),
            "n_trials": len(trials),
            "tracked": _check(folder, "tail"),
        }
    finally:
        os.chdir("/")
        shutil.rmtree(folder, ignore_errors=True)


def tracking_writer_variant(
    mode: str, n_trials: int, batch: int = 50, parallel: int = 2
) -> dict[str, Any]:
    """One measurement: ``mode`` is ``sweeper`` or ``aim`` (the writer alone, ``n_trials``
    trials), ``floor`` (RocksDB's part of it alone), or ``tail`` (a whole sweep)."""
    if mode == "tail":
        return _tail(n_trials, parallel)
    folder = Path(tempfile.mkdtemp(prefix="sweeper-bench-writer-"))
    try:
        if mode == "floor":
            seconds = _floor(folder, n_trials)
            return {"seconds": seconds, "rate": n_trials / seconds, "n_trials": n_trials}
        seconds = (
            _sweeper_writer(folder, n_trials, batch)
            if mode == "sweeper"
            else _aim_sdk(folder, n_trials)
        )
        return {
            "seconds": seconds,
            "rate": n_trials / seconds,
            "n_trials": n_trials,
            "tracked": _check(folder),
        }
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def tracking_writer(plan: Any, record: Any) -> Metric:
    """Trial-finished events a second the writer takes, against Aim's SDK (a run per trial,
    what sweeper did before), and the tail of a 300-trial sweep of a fast objective."""
    repeats = plan.pick(1, 3)
    n = plan.pick(300, 1000, 100)
    tail_n = plan.pick(300, 300, 100)
    aim_n = plan.pick(30, 200, 10)
    samples = interleave(
        {
            "aim": ("tracking_writer_variant", {"mode": "aim", "n_trials": aim_n}),
            "sweeper": ("tracking_writer_variant", {"mode": "sweeper", "n_trials": n}),
            "floor": ("tracking_writer_variant", {"mode": "floor", "n_trials": n}),
        },
        repeats,
    )
    tails = [
        run_variant("tracking_writer_variant", mode="tail", n_trials=tail_n)
        for _ in range(repeats)
    ]
    record({"metric": "tracking_writer", "samples": samples, "tails": tails})
    ours = [s["rate"] for s in samples["sweeper"]]
    aims = [s["rate"] for s in samples["aim"]]
    floors = [s["rate"] for s in samples["floor"]]
    ratios = [
        s["rate"] / f["rate"] for s, f in zip(samples["sweeper"], samples["floor"], strict=True)
    ]
    tail = [t["tail"] for t in tails]
    complete = all(s["tracked"] == s["n_trials"] for s in samples["sweeper"]) and all(
        t["tracked"] == t["n_trials"] for t in tails
    )
    details = {
        "repeats": repeats,
        "n_trials": n,
        "reports_per_trial": REPORTS,
        "sweeper_rate": median(ours),
        "sweeper_range": spread(ours),
        "aim_sdk_rate": median(aims),
        "aim_sdk_range": spread(aims),
        "rocksdb_floor_rate": median(floors),
        "rocksdb_floor_range": spread(floors),
        "share_of_floor": median(ratios),
        "tail_s": median(tail),
        "tail_range": spread(tail),
        "every_trial_tracked": complete,
    }
    measured = (
        f"{details['sweeper_rate']:.0f} trials/s (Aim's SDK, a run per trial: "
        f"{details['aim_sdk_rate']:.0f}/s; RocksDB alone, two databases a run: "
        f"{details['rocksdb_floor_rate']:.0f}/s, of which the writer reaches "
        f"{details['share_of_floor']:.2f}); a {tail_n}-trial sweep returns "
        f"{details['tail_s']:.2f} s after its last trial"
        + ("" if complete else "; SOME TRIALS MISSING FROM AIM")
    )
    return Metric(
        "tracking_writer",
        f"Tracking writer: trials of {REPORTS} reports written a second, and the wait at the end",
        f">= {TARGET_RATE:.0f} trials/s; return <= {TARGET_TAIL:.0f} s after the last trial",
        measured,
        details["sweeper_rate"] >= TARGET_RATE and details["tail_s"] <= TARGET_TAIL and complete,
        details,
    )
