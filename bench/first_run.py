"""First-run feel: what a new user's first sweeps cost with every default, against the same
sweep with ``--sampler tpe``, run as they would run it: ``python -m sweeper run FILE`` in a
fresh folder (journal, logs and Aim repo on disk), timed from start to exit."""

from __future__ import annotations

from typing import Any

from bench._harness import Metric, interleave, median, spread

BOWL = """\
def objective(trial):
    x = trial.suggest_float("x", -5, 5)
    y = trial.suggest_float("y", -5, 5)
    return (x - 1) ** 2 + (y + 2) ** 2
"""

NAP = """\
import time

def objective(trial):
    value = sum(trial.suggest_float(f"x{i}", 0, 1) for i in range(4))
    time.sleep(1.0)
    return value
"""

CASES = {
    "bowl": {
        "title": "60 trials of a two-float bowl",
        "source": BOWL,
        "args": ["-n", "60"],
        "limit": 1.5,
    },
    "nap": {
        "title": "96 one-second trials (4 floats), -p 16, --no-track",
        "source": NAP,
        "args": ["-n", "96", "-p", "16", "--no-track"],
        "quick": {"title": "48 one-second trials (4 floats), -p 16, --no-track", "n": "48"},
        "limit": 1.25,
    },
}


def _shorter(case: dict[str, Any], title: str, n: str) -> dict[str, Any]:
    args = list(case["args"])
    args[args.index("-n") + 1] = n
    return {**case, "title": title, "args": args}


def first_run(plan: Any, record: Any) -> Metric:
    repeats = plan.pick(1, 3)
    details: dict[str, Any] = {"repeats": repeats, "cases": {}}
    passed = True
    for key, case in CASES.items():
        if plan.quick and "quick" in case:  # half the trials: a smoke run, not the figure
            case = _shorter(case, **case["quick"])
        if plan.smoke:
            case = _shorter(case, case["title"] + " (smoke: 16 trials)", "16")
        pairs = {
            mode: (
                "cli_sweep",
                {
                    "source": case["source"],
                    "args": case["args"] + (["--sampler", "tpe"] if mode == "tpe" else []),
                },
            )
            for mode in ("default", "tpe")
        }
        samples = interleave(pairs, repeats)
        record({"metric": "first_run", "case": key, "samples": samples})
        walls = {mode: [s["wall"] for s in runs] for mode, runs in samples.items()}
        ratio = median(walls["default"]) / median(walls["tpe"])
        passed = passed and ratio <= case["limit"]
        details["cases"][key] = {
            "title": case["title"],
            "default_s": median(walls["default"]),
            "tpe_s": median(walls["tpe"]),
            "default_range": spread(walls["default"]),
            "tpe_range": spread(walls["tpe"]),
            "ratio": ratio,
            "limit": case["limit"],
        }
    measured = "; ".join(
        f"{c['title']}: {c['default_s']:.1f} s vs {c['tpe_s']:.1f} s (x{c['ratio']:.2f}, "
        f"limit x{c['limit']:g})"
        for c in details["cases"].values()
    )
    return Metric(
        "first_run",
        "First-run feel: every default against --sampler tpe (the CLI, start to exit)",
        "x1.5 at most for the bowl, x1.25 for the one-second trials",
        measured,
        passed,
        details,
    )
