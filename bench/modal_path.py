"""The Modal path at scale: sweeper's real Modal backend (modal's own client, ``app.run``,
``Function.map.aio``, ``modal.Queue``) against the test suite's fake Modal server, run in a
process of its own, whose containers are processes on this machine running modal's own
container entrypoint and sweeper's ``run_trial`` (bench/variants.py ``modal_path``).

Each trial sleeps one second and records when its objective ran and in which container,
so a container's *gap* between one trial's objective and the next one's is the channel's
per-trial cost (the result's way back, the next input's way there, the trial's first
message) plus the orchestrator's, plus whatever this machine's two cores add by running
every container too. The orchestrator's own CPU per trial is what the user's machine pays
at any scale; the RPCs per trial, times Modal's round trip, is what the network adds.
"""

from __future__ import annotations

from typing import Any

from bench._harness import Metric, interleave, median


def modal_path(plan: Any, record: Any) -> Metric:
    repeats = plan.pick(1, 2)
    sizes = plan.pick([16], [16, 64], [8])
    details: dict[str, Any] = {"repeats": repeats, "seconds": 1.0, "sizes": {}}
    for parallel in sizes:
        n = plan.pick(2, 5) * parallel
        pairs = {
            sampler: (
                "modal_path",
                {"parallel": parallel, "n_trials": n, "sampler": sampler, "seconds": 1.0},
            )
            for sampler in ("auto", "tpe")
        }
        samples = interleave(pairs, repeats)
        record({"metric": "modal_path", "parallel": parallel, "samples": samples})
        size: dict[str, Any] = {"n_trials": n}
        for sampler, runs in samples.items():
            size[sampler] = {
                "wall_s": median(r["wall"] for r in runs),
                "gap_median_ms": 1000 * median(r["gap_median"] for r in runs),
                "utilisation": median(r["utilisation"] for r in runs),
                "orchestrator_cpu_ms": 1000
                * median(r["orchestrator_cpu_per_trial"] for r in runs),
                "rpcs_per_trial": median(r["rpcs_per_trial"] for r in runs),
                "invalid_rpcs": max(r["invalid_rpcs"] for r in runs),
            }
        size["default_vs_tpe"] = size["auto"]["wall_s"] / size["tpe"]["wall_s"]
        details["sizes"][parallel] = size
    largest = max(details["sizes"])
    top = details["sizes"][largest]
    measured = (
        f"{top['n_trials']} one-second trials at {largest} in flight: every default "
        f"{top['auto']['wall_s']:.1f} s vs --sampler tpe {top['tpe']['wall_s']:.1f} s "
        f"(x{top['default_vs_tpe']:.2f}); per trial the container's gap "
        f"{top['auto']['gap_median_ms']:.0f} ms (median), the orchestrator's CPU "
        f"{top['auto']['orchestrator_cpu_ms']:.1f} ms, {top['auto']['rpcs_per_trial']:.1f} "
        f"RPCs; P=256 not run (256 container processes on 2 cores)"
    )
    passed = top["default_vs_tpe"] <= 1.25 and top["auto"]["gap_median_ms"] <= 50
    return Metric(
        "modal_path",
        "The Modal path: modal's own client against the fake Modal server, containers as "
        "processes here",
        "the default within x1.25 of --sampler tpe (320 trials, 64 in flight); the channel "
        "adds <= 50 ms per trial",
        measured,
        passed,
        details,
    )
