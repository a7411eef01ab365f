"""Capacity: how many workers the default sweep keeps busy, and how soon it reaches a target.

Every run is the ``capacity`` variant (bench/variants.py): sweeper's orchestrator, sampler and
storage in real time over the simulated backend (bench/simulated.py), whose P workers take T
seconds of simulated time and no CPU per trial. Two kinds of run for each cell (P, T) and
sampler:

- *steady*: ten rounds of trials (10 P), not stopped early: worker utilisation (trial seconds
  over P x wall) and trials per second;
- *to target*: Hartmann-6 until a trial reaches ``TARGET`` (stopped by a callback that calls
  ``study.stop()``), over several seeds: the simulated wall time to the target, and the trials
  it took. A run that never got there (its trial budget or its real-time cap ran out first)
  counts as its whole wall time and is marked with ``>``.
"""

from __future__ import annotations

from typing import Any

from bench._harness import Metric, median, run_variant

TARGET = -3.0
"""Hartmann-6's minimum is -3.32237; -3.0 is within 10% of it."""
SAMPLERS = ("auto", "tpe", "gp", "random")


def _cells(quick: bool) -> list[tuple[int, float]]:
    if quick:
        return [(64, 1.0)]
    # The simulated clock skips the trials' time, so a cell costs what its sampler computes:
    # the whole grid is about 25 minutes on 2 cores with one seed.
    return [(p, t) for p in (4, 16, 64, 256) for t in (0.1, 1.0, 10.0, 60.0)]


def capacity(plan: Any, record: Any) -> Metric:
    quick = plan.quick
    samplers = ("auto", "tpe") if quick else SAMPLERS
    seeds = plan.pick(1, 1)
    real_cap = plan.pick(6.0, 20.0, 2.0)
    details: dict[str, Any] = {
        "target": TARGET,
        "seeds": seeds,
        "real_seconds_cap": real_cap,
        "steady_rounds": 10,
        "cells": [],
    }
    for parallel, seconds in _cells(quick):
        cell: dict[str, Any] = {"parallel": parallel, "seconds": seconds}
        for sampler in samplers:
            steady = run_variant(
                "capacity",
                sampler=sampler,
                parallel=parallel,
                seconds=seconds,
                n_trials=10 * parallel,
                real_seconds=real_cap,
            )
            runs = [
                run_variant(
                    "capacity",
                    sampler=sampler,
                    parallel=parallel,
                    seconds=seconds,
                    n_trials=max(300, 6 * parallel),
                    seed=seed,
                    target=TARGET,
                    real_seconds=real_cap,
                )
                for seed in range(seeds)
            ]
            record(
                {
                    "metric": "capacity",
                    "parallel": parallel,
                    "seconds": seconds,
                    "sampler": sampler,
                    "steady": steady,
                    "to_target": runs,
                }
            )
            times = [
                r["time_to_target"] if r["time_to_target"] is not None else r["wall"] for r in runs
            ]
            cell[sampler] = {
                "utilisation": steady["utilisation"],
                "trials_per_second": steady["trials_per_second"],
                "steady_cut_short": steady["cut_short"],
                "time_to_target": median(times),
                "reached": sum(r["time_to_target"] is not None for r in runs),
                "trials_to_target": median(r["trials"] for r in runs),
                "notes": steady.get("notes", []),
            }
        best = min(cell[s]["time_to_target"] for s in samplers)
        cell["best_time_to_target"] = best
        cell["default_vs_best"] = cell["auto"]["time_to_target"] / best if best else 1.0
        details["cells"].append(cell)
    return _verdict(details, samplers, seeds)


def _find(details: dict[str, Any], parallel: int, seconds: float) -> dict[str, Any] | None:
    return next(
        (c for c in details["cells"] if c["parallel"] == parallel and c["seconds"] == seconds),
        None,
    )


def _verdict(details: dict[str, Any], samplers: tuple[str, ...], seeds: int) -> Metric:
    checks: list[bool] = []
    parts: list[str] = []
    for parallel, seconds, floor in ((64, 1.0, 0.95), (256, 10.0, 0.9)):
        cell = _find(details, parallel, seconds)
        if cell is not None:
            value = cell["auto"]["utilisation"]
            checks.append(value >= floor)
            parts.append(f"utilisation {value:.3f} at P={parallel}, T={seconds:g}s")
    cell = _find(details, 256, 0.1)
    if cell is not None and "tpe" in cell:
        rate = cell["tpe"]["trials_per_second"]
        checks.append(rate >= 200)
        parts.append(f"{rate:.0f} trials/s with TPE at P=256, T=0.1s")
    worst = max(details["cells"], key=lambda c: c["default_vs_best"])
    checks.append(all(c["default_vs_best"] <= 1.1 for c in details["cells"]))
    within = sum(c["default_vs_best"] <= 1.1 for c in details["cells"])
    parts.append(
        f"default within 1.1x of the best time to target in {within} of "
        f"{len(details['cells'])} cells (worst x{worst['default_vs_best']:.2f} at "
        f"P={worst['parallel']}, T={worst['seconds']:g}s)"
    )
    return Metric(
        "capacity",
        "Capacity: simulated P workers x T-second trials (Hartmann-6, "
        f"{', '.join(samplers)}; median of {seeds} seed{'s' if seeds != 1 else ''})",
        "utilisation >= 0.95 at P=64, T=1s and >= 0.9 at P=256, T=10s with the default; "
        ">= 200 trials/s with TPE; the default within 1.1x of the best sampler's time to "
        "target in every cell",
        "; ".join(parts),
        all(checks),
        details,
    )


def table(details: dict[str, Any]) -> list[str]:
    """The cells as Markdown: utilisation, trials/s and time to target per sampler."""
    samplers = [s for s in SAMPLERS if s in details["cells"][0]]
    lines = [
        "| P | T | " + " | ".join(f"{s}: util, trials/s, to target" for s in samplers) + " |",
        "| --- | --- | " + " | ".join("---" for _ in samplers) + " |",
    ]
    for cell in details["cells"]:
        row = [str(cell["parallel"]), f"{cell['seconds']:g} s"]
        for s in samplers:
            c = cell[s]
            censored = (
                ">" if 2 * c["reached"] <= details["seeds"] else ""
            )  # the median not reached
            mark = "**" if c["time_to_target"] == cell["best_time_to_target"] else ""
            row.append(
                f"{c['utilisation']:.2f}, {c['trials_per_second']:.0f}/s, "
                f"{mark}{censored}{c['time_to_target']:.1f} s{mark}"
            )
        lines.append("| " + " | ".join(row) + " |")
    return lines
