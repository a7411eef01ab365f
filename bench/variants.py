"""One benchmark variant per call, in a fresh process: ``python -m bench.variants NAME JSON``.

Each variant prints ``RESULT {json}`` as its last line: what it measured, in seconds and
counts. The harness runs variants and their peers alternately (A B A B ...) and compares.
"""

from __future__ import annotations

import itertools
import json
import os
import resource
import shutil
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import optuna

from bench.tracking_writer import tracking_writer_variant

optuna.logging.set_verbosity(optuna.logging.WARNING)


def _scratch() -> Path:
    """A folder for the study's journal: in memory where the OS offers one (tmpfs), so disk
    flush times (tens of ms, and noisy) do not drown what is measured."""
    base = "/dev/shm" if os.path.isdir("/dev/shm") and os.access("/dev/shm", os.W_OK) else None
    return Path(tempfile.mkdtemp(prefix="sweeper-bench-", dir=base))


def _storage(folder: Path) -> optuna.storages.BaseStorage:
    from optuna.storages.journal import JournalFileBackend, JournalStorage

    return JournalStorage(JournalFileBackend(str(folder / "optuna.journal")))


def _sampler(name: str, seed: int | None) -> optuna.samplers.BaseSampler:
    if name == "random":
        return optuna.samplers.RandomSampler(seed=seed)
    if name == "auto":  # sweeper's default, in plain Optuna's loop
        from sweeper.study import make_sampler

        return make_sampler("auto", {}, seed)
    return optuna.samplers.TPESampler(seed=seed)


def _span(study: optuna.Study, first: int = 0, last: int | None = None) -> float:
    """Seconds from the ask of trial ``first`` to the tell of trial ``last`` (inclusive)."""
    trials = study.get_trials(deepcopy=False)
    last = len(trials) - 1 if last is None else last
    start = trials[first].datetime_start
    end = max(t.datetime_complete for t in trials[first : last + 1] if t.datetime_complete)
    assert start is not None and end is not None
    return (end - start).total_seconds()


def _sweep(objective: Callable[..., Any], folder: Path, **options: Any) -> tuple[Any, float]:
    import sweeper

    os.chdir(folder)
    started = time.perf_counter()
    study = sweeper.run(
        objective, storage=str(folder / "optuna.journal"), progress=False, **options
    )
    return study, time.perf_counter() - started


def _best_curve(study: optuna.Study) -> list[float]:
    """Best value so far, in the order trials finished (as the sweep saw them)."""
    finished = sorted(
        (t for t in study.get_trials(deepcopy=False) if t.value is not None),
        key=lambda t: t.datetime_complete,
    )
    curve, best = [], float("inf")
    for trial in finished:
        best = min(best, float(trial.value))
        curve.append(best)
    return curve


# -- variants --------------------------------------------------------------------------------


def plain_optuna(sampler: str, n_trials: int, seed: int = 0) -> dict[str, Any]:
    """Plain Optuna ask/tell in one process, the no-op objective, the same storage."""
    from bench.functions import noop

    folder = _scratch()
    try:
        study = optuna.create_study(storage=_storage(folder), sampler=_sampler(sampler, seed))
        started = time.perf_counter()
        for _ in range(n_trials):
            trial = study.ask()
            study.tell(trial, noop(trial))
        wall = time.perf_counter() - started
        return {"wall": wall, "span": _span(study), "n_trials": n_trials}
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def sweeper_noop(
    sampler: str,
    n_trials: int,
    parallel: int = 2,
    seed: int = 0,
    windows: list[list[int]] | None = None,
) -> dict[str, Any]:
    """sweeper with local workers, the no-op objective, no tracking."""
    from bench.functions import noop

    folder = _scratch()
    try:
        study, wall = _sweep(
            noop,
            folder,
            study="noop",
            n_trials=n_trials,
            parallel=parallel,
            sampler=sampler,
            seed=seed,
            track=False,
        )
        result = {
            "wall": wall,
            "span": _span(study),
            "n_trials": n_trials,
            "max_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        }
        for first, last in windows or []:
            result[f"span_{first}_{last}"] = _span(study, first, last)
        return result
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def plain_windows(n_trials: int, windows: list[list[int]]) -> dict[str, Any]:
    """Plain Optuna (random sampler) with the span of each window of trials."""
    from bench.functions import noop

    folder = _scratch()
    try:
        study = optuna.create_study(storage=_storage(folder), sampler=_sampler("random", 0))
        for _ in range(n_trials):
            trial = study.ask()
            study.tell(trial, noop(trial))
        result: dict[str, Any] = {
            "n_trials": n_trials,
            "max_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        }
        for first, last in windows:
            result[f"span_{first}_{last}"] = _span(study, first, last)
        return result
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def ray_tune(n_trials: int, reuse_actors: bool, parallel: int = 2) -> dict[str, Any]:
    """Ray Tune on the same trivial objective, ``parallel`` trials at a time."""
    import ray
    from ray import tune

    folder = _scratch()
    try:
        started = time.perf_counter()
        ray.init(
            num_cpus=os.cpu_count(),
            include_dashboard=False,
            log_to_driver=False,
            configure_logging=False,
        )
        initialized = time.perf_counter()

        def objective(config: dict[str, float]) -> dict[str, float]:
            return {"value": config["x"] + config["y"]}

        tuner = tune.Tuner(
            objective,
            param_space={"x": tune.uniform(0, 1), "y": tune.uniform(0, 1)},
            tune_config=tune.TuneConfig(
                num_samples=n_trials,
                max_concurrent_trials=parallel,
                reuse_actors=reuse_actors,
                metric="value",
                mode="min",
            ),
            run_config=tune.RunConfig(storage_path=str(folder), verbose=0),
        )
        results = tuner.fit()
        fitted = time.perf_counter()
        ray.shutdown()
        assert len(results) == n_trials
        return {"wall": fitted - initialized, "init": initialized - started, "n_trials": n_trials}
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def sweeper_trivial(n_trials: int, parallel: int = 2) -> dict[str, Any]:
    """sweeper's whole run (worker start included) on the trivial objective."""
    result = sweeper_noop("random", n_trials, parallel)
    return {"wall": result["wall"], "span": result["span"], "n_trials": n_trials}


def parallel_sleep(parallel: int, seconds: float, rounds: int = 20) -> dict[str, Any]:
    """Trials that sleep a fixed time, ``rounds`` x ``parallel`` of them."""
    from bench.functions import sleeper

    os.environ["BENCH_SLEEP"] = str(seconds)
    folder = _scratch()
    try:
        n_trials = rounds * parallel
        study, wall = _sweep(
            sleeper,
            folder,
            study="sleep",
            n_trials=n_trials,
            parallel=parallel,
            sampler="random",
            track=False,
        )
        return {
            "wall": wall,
            "span": _span(study),
            "ideal": rounds * seconds,
            "n_trials": n_trials,
        }
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def efficiency(
    function: str, mode: str, seed: int, n_trials: int, parallel: int = 8
) -> dict[str, Any]:
    """One optimisation run of a test function: sequential TPE, batch-synchronous TPE (ask
    ``parallel``, evaluate, tell them all), or sweeper with ``parallel`` in flight, with its
    default sampler (``sweeper``) or with TPE (``sweeper_tpe``)."""
    from bench import functions

    objective, _ = functions.FUNCTIONS[function]
    if mode in ("sweeper", "sweeper_tpe"):
        folder = _scratch()
        try:
            slowed = getattr(functions, f"slowed_{function}")
            study, _ = _sweep(
                slowed,
                folder,
                study=function,
                n_trials=n_trials,
                parallel=parallel,
                sampler="tpe" if mode == "sweeper_tpe" else "auto",
                seed=seed,
                track=False,
            )
            return {"curve": _best_curve(study)}
        finally:
            shutil.rmtree(folder, ignore_errors=True)
    study = optuna.create_study(sampler=optuna.samplers.TPESampler(seed=seed))
    if mode == "sequential":
        study.optimize(objective, n_trials=n_trials)
    else:
        while len(study.trials) < n_trials:
            batch = [study.ask() for _ in range(min(parallel, n_trials - len(study.trials)))]
            values = [objective(trial) for trial in batch]
            for trial, value in zip(batch, values, strict=True):
                study.tell(trial, value)
    return {"curve": _best_curve(study)}


def tracking(
    rate: float, track: bool, seconds: float = 1.5, n_trials: int = 8, parallel: int = 2
) -> dict[str, Any]:
    """A sweep whose trials log ``rate`` scalars a second, with Aim tracking on or off."""
    from bench.functions import logger

    os.environ["BENCH_RATE"], os.environ["BENCH_SECONDS"] = str(rate), str(seconds)
    folder = _scratch()
    try:
        study, wall = _sweep(
            logger,
            folder,
            study="logging",
            n_trials=n_trials,
            parallel=parallel,
            sampler="random",
            track=track,
            aim_repo=str(folder / "aim"),
        )
        return {"wall": wall, "span": _span(study), "n_trials": n_trials}
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def pruning(pruner: str, seed: int, n_trials: int, target: float) -> dict[str, Any]:
    """The PyTorch example with or without the median pruner: when the best accuracy first
    reached ``target``, in seconds from the start of the sweep."""
    import sweeper

    folder = _scratch()
    example = Path(__file__).resolve().parent.parent / "objectives" / "mlp.py"
    try:
        os.chdir(folder)
        started = time.perf_counter()
        study = sweeper.run(
            str(example),
            study="mlp",
            storage=str(folder / "optuna.journal"),
            n_trials=n_trials,
            parallel=2,
            pruner=pruner,
            seed=seed,
            track=False,
            progress=False,
        )
        wall = time.perf_counter() - started
        trials = sorted(
            (t for t in study.trials if t.datetime_complete), key=lambda t: t.datetime_complete
        )
        origin = min(t.datetime_start for t in trials)
        reached = next(
            (
                (t.datetime_complete - origin).total_seconds()
                for t in trials
                if t.state == optuna.trial.TrialState.COMPLETE and t.value >= target
            ),
            None,
        )
        best = max(
            (t.value for t in trials if t.state == optuna.trial.TrialState.COMPLETE), default=None
        )
        pruned = sum(t.state == optuna.trial.TrialState.PRUNED for t in trials)
        return {"wall": wall, "reached": reached, "best": best, "pruned": pruned}
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def capacity(
    sampler: str,
    parallel: int,
    seconds: float,
    n_trials: int,
    seed: int = 0,
    target: float | None = None,
    real_seconds: float | None = None,
) -> dict[str, Any]:
    """Hartmann-6 on the simulated backend (bench/simulated.py): ``parallel`` workers whose
    trials take ``seconds`` of simulated time and no CPU, with the whole of sweeper's
    orchestration, sampler and storage in real time. Stops at ``target`` when one is given,
    or when ``real_seconds`` of real time are spent (the run is then cut short)."""
    from bench.functions import hartmann6_objective
    from bench.simulated import SimulatedBackend
    from sweeper import _api
    from sweeper.orchestrator import sweep
    from sweeper.progress import Reporter

    # On disk, as a user's journal is: its writes are part of what the orchestrator sustains.
    folder = Path(tempfile.mkdtemp(prefix="sweeper-bench-"))
    try:
        os.chdir(folder)
        options = {
            "n_trials": n_trials,
            "parallel": parallel,
            "sampler": sampler,
            "seed": seed,
            "track": False,
            "storage": str(folder / "optuna.journal"),
            "timeout": real_seconds,
        }
        ref, config, _ = _api.prepare(hartmann6_objective, objective=None, options=options)
        backend = SimulatedBackend(hartmann6_objective, parallel, seconds)

        def stop_at_target(study: optuna.Study, trial: optuna.trial.FrozenTrial) -> None:
            if target is not None and trial.value is not None and trial.value <= target:
                study.stop()

        notes: list[str] = []

        class Notes(Reporter):
            def note(self, text: str, level: str = "info") -> None:
                notes.append(text)

        started = time.perf_counter()
        sweep(
            ref,
            config,
            reporter=Notes(),
            workdir=folder,
            backend=backend,
            callbacks=[stop_at_target],
        )
        real = time.perf_counter() - started
        summary = backend.summary(target)
        summary.update(
            {
                "real_seconds": real,
                "cut_short": summary["trials"] < n_trials and summary["time_to_target"] is None,
                "notes": [n for n in notes if n.startswith("auto sampler")],
            }
        )
        return summary
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def cli_sweep(source: str, args: list[str]) -> dict[str, Any]:
    """``python -m sweeper run objective.py ARGS`` in a fresh folder, as a user runs it: the
    wall time from start to exit."""
    import subprocess

    folder = Path(tempfile.mkdtemp(prefix="sweeper-bench-"))
    try:
        (folder / "objective.py").write_text(source)
        env = {k: v for k, v in os.environ.items() if not k.startswith("SWEEPER_")}
        started = time.perf_counter()
        done = subprocess.run(
            [sys.executable, "-m", "sweeper", "run", "objective.py", *args],
            cwd=folder,
            env=env,
            capture_output=True,
            text=True,
            timeout=600,
        )
        wall = time.perf_counter() - started
        if done.returncode != 0:
            raise RuntimeError(f"the sweep failed ({done.returncode}): {done.stderr[-2000:]}")
        return {"wall": wall}
    finally:
        shutil.rmtree(folder, ignore_errors=True)


NAP_WITH_TIMES = """\
import os
import time

def objective(trial):
    started = time.time()
    value = sum(trial.suggest_float(f"x{i}", 0, 1) for i in range(4))
    time.sleep(SECONDS)
    trial.set_user_attr("ran", [started, time.time(), os.environ.get("MODAL_TASK_ID")])
    return value
"""


def modal_path(parallel: int, n_trials: int, sampler: str, seconds: float) -> dict[str, Any]:
    """A sweep on sweeper's real Modal path (modal's own client, app.run, Function.map.aio,
    modal.Queue) against the fake Modal server of the test suite (tests/fake_modal), whose
    containers are processes on this machine running modal's container entrypoint. Each
    trial sleeps ``seconds`` and records when its objective ran, so the time a slot spends
    on anything else (the channel, the orchestrator) can be told apart."""
    import subprocess

    import sweeper

    folder = Path(tempfile.mkdtemp(prefix="sweeper-bench-"))
    server = subprocess.Popen(
        [sys.executable, "-m", "bench.fake_modal_server", str(parallel)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
        cwd=Path(__file__).resolve().parent.parent,
    )
    try:
        assert server.stdout is not None and server.stdin is not None
        os.environ.update(json.loads(server.stdout.readline()))
        os.environ.pop("MODAL_PROFILE", None)
        os.chdir(folder)
        (folder / "nap.py").write_text(NAP_WITH_TIMES.replace("SECONDS", repr(seconds)))
        started, cpu = time.perf_counter(), resource.getrusage(resource.RUSAGE_SELF)
        study = sweeper.run(
            "nap.py",
            backend="modal",
            parallel=parallel,
            n_trials=n_trials,
            sampler=sampler,
            track=False,
            progress=False,
        )
        wall = time.perf_counter() - started
        used = resource.getrusage(resource.RUSAGE_SELF)
        orchestrator_cpu = used.ru_utime + used.ru_stime - cpu.ru_utime - cpu.ru_stime
        server.stdin.close()
        seen = json.loads(server.stdout.readline())
        server.wait(60)
        ran = [t.user_attrs["ran"] for t in study.trials if "ran" in t.user_attrs]
        first, last = min(r[0] for r in ran), max(r[1] for r in ran)
        busy = sum(end - start for start, end, _ in ran)
        span = last - first
        # What a container spent between one trial's objective and the next one's: the
        # result's way back, the next trial's way there and its channel, the orchestrator.
        by_container: dict[str, list[tuple[float, float]]] = {}
        for start, end, task in ran:
            by_container.setdefault(str(task), []).append((start, end))
        gaps = [
            later[0] - earlier[1]
            for runs in by_container.values()
            for earlier, later in itertools.pairwise(sorted(runs))
        ]
        return {
            "wall": wall,
            "trials": len(ran),
            "span": span,
            "containers": len(by_container),
            "utilisation": busy / (parallel * span),
            "gap_median": statistics.median(gaps) if gaps else None,
            "gap_mean": statistics.fmean(gaps) if gaps else None,
            "invalid_rpcs": seen["invalid"],
            # The orchestrator's CPU (its loop, the Modal client, the channel; not the
            # sampler processes) per trial: what the user's machine pays, at any scale.
            "orchestrator_cpu_per_trial": orchestrator_cpu / len(ran),
            "rpcs_per_trial": sum(seen["rpcs"].values()) / len(ran),
            "rpcs": seen["rpcs"],
        }
    finally:
        if server.poll() is None:
            server.kill()
            server.wait()
        shutil.rmtree(folder, ignore_errors=True)


VARIANTS: dict[str, Callable[..., dict[str, Any]]] = {
    f.__name__: f
    for f in (
        plain_optuna,
        sweeper_noop,
        plain_windows,
        ray_tune,
        sweeper_trivial,
        parallel_sleep,
        efficiency,
        tracking,
        pruning,
        capacity,
        cli_sweep,
        modal_path,
        tracking_writer_variant,
    )
}


def main(argv: list[str]) -> None:
    name, arguments = argv[1], json.loads(argv[2])
    result = VARIANTS[name](**arguments)
    sys.stdout.write("RESULT " + json.dumps(result) + "\n")


if __name__ == "__main__":
    main(sys.argv)
