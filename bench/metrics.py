"""The seven benchmark metrics. Each runs its variants (fresh processes, alternating with
their peers), writes every sample to the results file, and returns a :class:`Metric`."""

from __future__ import annotations

import importlib.util
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from bench._harness import Metric, interleave, median, run_variant, spread
from bench.capacity import capacity
from bench.first_run import first_run
from bench.functions import FUNCTIONS
from bench.modal_path import modal_path
from bench.tracking_writer import tracking_writer as tracking_writer_metric

_SAME = object()


@dataclass(frozen=True)
class Plan:
    """How much to run: the full benchmark, the quick one (minutes, fewer repeats), or the
    smoke run the test suite makes (every metric at its smallest: it runs, it measures little)."""

    quick: bool
    smoke: bool = False

    def pick(self, quick: Any, full: Any, smoke: Any = _SAME) -> Any:
        if self.smoke and smoke is not _SAME:
            return smoke
        return quick if self.quick or self.smoke else full


Record = Callable[[dict[str, Any]], None]


def _ms(seconds: float, trials: int) -> float:
    return seconds / trials * 1000


# 1 -----------------------------------------------------------------------------------------


def overhead(plan: Plan, record: Record) -> Metric:
    repeats = plan.pick(1, 3)
    details: dict[str, Any] = {"repeats": repeats, "parallel": 2}
    worst = 0.0
    for sampler in ("auto", "tpe", "random"):
        # auto is the default: GP, whose suggestions take tens of milliseconds in plain
        # Optuna's loop, so fewer trials.
        n = plan.pick(60, 150, 20) if sampler == "auto" else plan.pick(200, 500, 50)
        samples = interleave(
            {
                "plain": ("plain_optuna", {"sampler": sampler, "n_trials": n}),
                "sweeper": ("sweeper_noop", {"sampler": sampler, "n_trials": n, "parallel": 2}),
            },
            repeats,
        )
        plain = [_ms(s["span"], n) for s in samples["plain"]]
        ours = [_ms(s["span"], n) for s in samples["sweeper"]]
        startup = [s["wall"] - s["span"] for s in samples["sweeper"]]
        extra = median(ours) - median(plain)
        worst = max(worst, extra)
        details[sampler] = {
            "n_trials": n,
            "plain_ms": median(plain),
            "plain_range": spread(plain),
            "sweeper_ms": median(ours),
            "sweeper_range": spread(ours),
            "overhead_ms": extra,
            "ratio": median(ours) / median(plain),
            "worker_startup_s": median(startup),
        }
        record({"metric": "overhead", "sampler": sampler, "samples": samples})
    measured = ", ".join(
        f"{s}: {details[s]['overhead_ms']:+.2f} ms/trial ({details[s]['sweeper_ms']:.2f} vs "
        f"{details[s]['plain_ms']:.2f}, x{details[s]['ratio']:.2f})"
        for s in ("auto", "tpe", "random")
    )
    return Metric(
        "overhead",
        "Orchestration overhead per trial (no-op objective, 2 in flight; auto is the default)",
        "<= 0.5 ms/trial over plain Optuna",
        measured,
        worst <= 0.5,
        details,
    )


# 2 -----------------------------------------------------------------------------------------


def ray(plan: Plan, record: Record) -> Metric:
    title = "Time per trial against Ray Tune (trivial objective, 2 in flight)"
    target = ">= 10x less than Ray with reuse_actors=True"
    if importlib.util.find_spec("ray") is None:
        return Metric(
            "ray", title, target, "skipped: ray is not installed (pip install -e '.[bench]')", None
        )
    n = plan.pick(20, 100)
    repeats = plan.pick(1, 3)
    samples = interleave(
        {
            "sweeper": ("sweeper_trivial", {"n_trials": n}),
            "ray_reuse": ("ray_tune", {"n_trials": n, "reuse_actors": True}),
            "ray_default": ("ray_tune", {"n_trials": n, "reuse_actors": False}),
        },
        repeats,
    )
    record({"metric": "ray", "samples": samples})
    per_trial = {k: [_ms(s["wall"], n) for s in v] for k, v in samples.items()}
    ours = median(per_trial["sweeper"])
    details = {
        "n_trials": n,
        "repeats": repeats,
        **{f"{k}_ms": median(v) for k, v in per_trial.items()},
        **{f"{k}_range": spread(v) for k, v in per_trial.items()},
        "ray_init_s": median(s["init"] for s in samples["ray_reuse"]),
    }
    reuse, default = median(per_trial["ray_reuse"]) / ours, median(per_trial["ray_default"]) / ours
    details.update({"vs_reuse": reuse, "vs_default": default})
    measured = (
        f"sweeper {ours:.1f} ms/trial (worker start included); Ray with reuse_actors "
        f"{details['ray_reuse_ms']:.0f} ms (x{reuse:.0f}), Ray defaults "
        f"{details['ray_default_ms']:.0f} ms (x{default:.0f})"
    )
    return Metric("ray", title, target, measured, reuse >= 10, details)


# 3 -----------------------------------------------------------------------------------------


def parallel(plan: Plan, record: Record) -> Metric:
    cases = plan.pick(
        [(0.1, 2, 10), (0.1, 8, 10), (1.0, 2, 3)],
        [(s, p, 20) for s in (0.1, 1.0) for p in (2, 4, 8)],
        [(0.1, 2, 5), (1.0, 2, 1)],
    )
    repeats = plan.pick(1, 3)
    details: dict[str, Any] = {"repeats": repeats, "cases": []}
    passed = True
    for seconds, parallel_, rounds in cases:
        runs = [
            run_variant("parallel_sleep", parallel=parallel_, seconds=seconds, rounds=rounds)
            for _ in range(repeats)
        ]
        record({"metric": "parallel", "seconds": seconds, "parallel": parallel_, "samples": runs})
        efficiency = [r["ideal"] / r["span"] for r in runs]
        with_start = [r["ideal"] / r["wall"] for r in runs]
        value = median(efficiency)
        threshold = 0.97 if seconds >= 1 else 0.90
        passed = passed and value >= threshold
        details["cases"].append(
            {
                "seconds": seconds,
                "parallel": parallel_,
                "rounds": rounds,
                "efficiency": value,
                "range": spread(efficiency),
                "with_worker_start": median(with_start),
            }
        )
    measured = "; ".join(
        f"T={c['seconds']:g}s x{c['parallel']}: {c['efficiency']:.3f}" for c in details["cases"]
    )
    return Metric(
        "parallel",
        "Parallel efficiency (ideal time / measured time)",
        ">= 0.97 at T = 1 s, >= 0.90 at T = 0.1 s",
        measured,
        passed,
        details,
    )


# 4 -----------------------------------------------------------------------------------------

TARGETS = {"branin": 0.42, "hartmann6": -3.1, "rosenbrock5": 8.0}


def trials_to_reach(curve: list[float], target: float, limit: int) -> int:
    """1-based index of the first trial at or under ``target``; ``limit + 1`` if never."""
    return next((i + 1 for i, value in enumerate(curve) if value <= target), limit + 1)


def sample_efficiency(plan: Plan, record: Record) -> Metric:
    functions = plan.pick(["branin"], list(FUNCTIONS))
    seeds = plan.pick(2, 6, 1)
    n = plan.pick(60, 200, 20)
    details: dict[str, Any] = {"n_trials": n, "seeds": seeds, "parallel": 8, "functions": {}}
    passed = True
    for function in functions:
        curves: dict[str, list[list[float]]] = {
            "sequential": [],
            "batch": [],
            "sweeper": [],
            "sweeper_tpe": [],
        }
        for seed in range(seeds):
            for mode in curves:
                result = run_variant(
                    "efficiency", function=function, mode=mode, seed=seed, n_trials=n
                )
                curves[mode].append(result["curve"])
        record({"metric": "sample_efficiency", "function": function, "curves": curves})
        target = TARGETS[function]
        reach = {m: [trials_to_reach(c, target, n) for c in cs] for m, cs in curves.items()}
        best = {m: [c[-1] for c in cs] for m, cs in curves.items()}
        summary = {
            "target": target,
            "trials_to_target": {m: median(v) for m, v in reach.items()},
            "reached": {m: sum(r <= n for r in v) for m, v in reach.items()},
            "best_after_n": {m: median(v) for m, v in best.items()},
            "median_curves": {m: _median_curve(cs) for m, cs in curves.items()},
        }
        tt = summary["trials_to_target"]
        summary["vs_sequential"] = tt["sweeper"] / tt["sequential"]
        summary["vs_batch"] = tt["sweeper"] / tt["batch"]
        passed = passed and summary["vs_sequential"] <= 1.25 and tt["sweeper"] <= tt["batch"]
        details["functions"][function] = summary
    measured = "; ".join(
        f"{f}: {d['trials_to_target']['sweeper']:.0f} trials to target vs "
        f"{d['trials_to_target']['sequential']:.0f} sequential TPE (x{d['vs_sequential']:.2f}) "
        f"and {d['trials_to_target']['batch']:.0f} batch-synchronous TPE (sweeper with TPE: "
        f"{d['trials_to_target']['sweeper_tpe']:.0f})"
        for f, d in details["functions"].items()
    )
    return Metric(
        "sample_efficiency",
        "Sample efficiency: sweeper's default sampler with 8 in flight (trials to a target)",
        "<= 1.25x sequential TPE, and better than batch-synchronous",
        measured,
        passed,
        details,
    )


def _median_curve(curves: list[list[float]]) -> list[float]:
    length = min(len(c) for c in curves)
    return [median(c[i] for c in curves) for i in range(length)]


# 5 -----------------------------------------------------------------------------------------


def growth(plan: Plan, record: Record) -> Metric:
    n = plan.pick(2000, 10000, 1100)
    early, late = [900, 999], [n - 100, n - 1]
    repeats = plan.pick(1, 3)
    samples = interleave(
        {
            "plain": ("plain_windows", {"n_trials": n, "windows": [early, late]}),
            "sweeper": (
                "sweeper_noop",
                {"sampler": "random", "n_trials": n, "parallel": 2, "windows": [early, late]},
            ),
        },
        repeats,
    )
    record({"metric": "growth", "samples": samples})

    def per_trial(kind: str, window: list[int]) -> float:
        return median(_ms(s[f"span_{window[0]}_{window[1]}"], 100) for s in samples[kind])

    ours = per_trial("sweeper", late) / per_trial("sweeper", early)
    theirs = per_trial("plain", late) / per_trial("plain", early)
    overhead_early = per_trial("sweeper", early) - per_trial("plain", early)
    overhead_late = per_trial("sweeper", late) - per_trial("plain", late)
    rss = median(s["max_rss_mb"] for s in samples["sweeper"])
    plain_rss = median(s["max_rss_mb"] for s in samples["plain"])
    details = {
        "n_trials": n,
        "repeats": repeats,
        "early": early,
        "late": late,
        "sweeper_early_ms": per_trial("sweeper", early),
        "sweeper_late_ms": per_trial("sweeper", late),
        "plain_early_ms": per_trial("plain", early),
        "plain_late_ms": per_trial("plain", late),
        "sweeper_ratio": ours,
        "plain_ratio": theirs,
        "overhead_early_ms": overhead_early,
        "overhead_late_ms": overhead_late,
        "orchestrator_rss_mb": rss,
        "plain_rss_mb": plain_rss,
    }
    measured = (
        f"per trial x{ours:.2f} from trials {early[0]}-{early[1]} to {late[0]}-{late[1]} "
        f"({details['sweeper_early_ms']:.2f} -> {details['sweeper_late_ms']:.2f} ms; "
        f"plain Optuna x{theirs:.2f}); orchestrator {rss:.0f} MB at {n} trials "
        f"(plain Optuna {plain_rss:.0f} MB)"
    )
    return Metric(
        "growth",
        "Growth: time per trial early against late, and memory",
        "flat: ratio <= 1.2",
        measured,
        ours <= 1.2,
        details,
    )


# 6 -----------------------------------------------------------------------------------------


def tracking(plan: Plan, record: Record) -> Metric:
    repeats = plan.pick(1, 3)
    details: dict[str, Any] = {"repeats": repeats, "rates": {}}
    passed = True
    trials = plan.pick(8, 8, 2)
    for rate in plan.pick((50,), (10, 50)):
        samples = interleave(
            {
                "off": ("tracking", {"rate": rate, "track": False, "n_trials": trials}),
                "on": ("tracking", {"rate": rate, "track": True, "n_trials": trials}),
            },
            repeats,
        )
        record({"metric": "tracking", "rate": rate, "samples": samples})
        off = [s["wall"] for s in samples["off"]]
        on = [s["wall"] for s in samples["on"]]
        cost = median(on) / median(off) - 1
        passed = passed and cost <= 0.05
        details["rates"][rate] = {
            "off_s": median(off),
            "on_s": median(on),
            "cost": cost,
            "off_range": spread(off),
            "on_range": spread(on),
        }
    measured = "; ".join(
        f"{r} scalars/s: {d['cost']:+.1%} ({d['on_s']:.2f} s vs {d['off_s']:.2f} s)"
        for r, d in details["rates"].items()
    )
    return Metric(
        "tracking",
        "Tracking cost: the same sweep with Aim tracking on and off",
        "<= 5% of wall time",
        measured,
        passed,
        details,
    )


# 7 -----------------------------------------------------------------------------------------


def pruning(plan: Plan, record: Record) -> Metric:
    seeds = plan.pick(1, 5)
    n, target = plan.pick(12, 40, 4), 0.965
    runs: dict[str, list[dict[str, Any]]] = {"median": [], "none": []}
    for seed in range(seeds):
        for pruner in runs:
            runs[pruner].append(
                run_variant("pruning", pruner=pruner, seed=seed, n_trials=n, target=target)
            )
    record({"metric": "pruning", "samples": runs})

    def time_to_target(kind: str) -> float:
        # A run that never got there counts as taking its whole sweep.
        return median(r["reached"] if r["reached"] is not None else r["wall"] for r in runs[kind])

    details = {
        "seeds": seeds,
        "n_trials": n,
        "target": target,
        "median_to_target_s": time_to_target("median"),
        "none_to_target_s": time_to_target("none"),
        "median_wall_s": median(r["wall"] for r in runs["median"]),
        "none_wall_s": median(r["wall"] for r in runs["none"]),
        "reached": {k: sum(r["reached"] is not None for r in v) for k, v in runs.items()},
        "pruned_per_sweep": median(r["pruned"] for r in runs["median"]),
    }
    speedup = details["none_to_target_s"] / details["median_to_target_s"]
    whole = details["none_wall_s"] / details["median_wall_s"]
    details.update({"speedup_to_target": speedup, "speedup_whole_sweep": whole})
    measured = (
        f"accuracy {target} reached in {details['median_to_target_s']:.1f} s with the "
        f"median pruner vs {details['none_to_target_s']:.1f} s without (x{speedup:.2f}); "
        f"whole {n}-trial sweep {details['median_wall_s']:.1f} s vs "
        f"{details['none_wall_s']:.1f} s (x{whole:.2f})"
    )
    return Metric(
        "pruning",
        "Pruning pays: the PyTorch example, median pruner against none",
        "faster to the target accuracy with pruning",
        measured,
        speedup > 1,
        details,
    )


METRICS: dict[str, Callable[[Plan, Record], Metric]] = {
    "overhead": overhead,
    "ray": ray,
    "parallel": parallel,
    "sample_efficiency": sample_efficiency,
    "growth": growth,
    "tracking": tracking,
    "pruning": pruning,
    "capacity": capacity,
    "first_run": first_run,
    "modal_path": modal_path,
    "tracking_writer": tracking_writer_metric,
}
