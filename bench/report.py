"""BENCHMARKS.md, and the figures it shows, from the metrics of a run."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from bench._harness import ROOT, Metric

FIGURES = ROOT / "bench" / "figures"
"""The figures of BENCHMARKS.md; a report written elsewhere keeps its own next to it."""
DISCUSSION = ROOT / "bench" / "discussion.md"


def write_report(
    metrics: list[Metric], env: dict[str, Any], *, mode: str, path: Path | None, results: Path
) -> str:
    """The report; ``mode`` is "" for the full run, "quick" or "smoke"."""
    figures = _figures(metrics, figures_for(path)) if path is not None else {}
    lines = [
        "# Benchmarks",
        "",
        f"Measured on {env['date']} by `python -m bench{' --' + mode if mode else ''}` "
        f"({env.get('seconds', '?')} s), on {env['cpus']} CPU cores "
        f"(load average at the start {_load(env)}), Python {env['python']}, {env['platform']}.",
        "Versions: " + ", ".join(f"{k} {v}" for k, v in env["versions"].items() if v) + ".",
        "",
        "Every figure compares runs made in the same invocation, each in a fresh process, "
        "alternating the variant and its peer (A B A B ...); timings are medians over the "
        "repeats, with the range in the details. Raw samples: "
        f"`{results.relative_to(ROOT) if results.is_relative_to(ROOT) else results}`.",
        "",
        "| # | metric | target | measured | verdict |",
        "| --- | --- | --- | --- | --- |",
    ]
    for number, metric in enumerate(metrics, 1):
        verdict = {True: "met", False: "**missed**", None: "n/a"}[metric.passed]
        lines.append(
            f"| {number} | {metric.title} | {metric.target} | {metric.measured} | {verdict} |"
        )
    lines.append("")
    for name, figure in figures.items():
        shown = figure.relative_to(path.parent) if path is not None else figure
        lines += [f"![{name}]({shown})", ""]
    if DISCUSSION.exists() and not mode:
        lines += [DISCUSSION.read_text().strip(), ""]
    lines += ["## Details", ""]
    for metric in metrics:
        lines += [f"### {metric.title}", ""]
        if metric.key == "capacity" and metric.details.get("cells"):
            from bench.capacity import table

            lines += [
                "Per cell, for each sampler: worker utilisation and trials per second over "
                "ten rounds, then the median simulated time to the target (bold: the best "
                "in the cell; `>`: not reached, the run's whole time).",
                "",
                *table(metric.details),
                "",
            ]
            continue
        lines += ["```", _pretty(metric.details), "```", ""]
    lines += [
        "## Running it",
        "",
        "```",
        "pip install -e '.[bench]'      # adds Ray Tune, for metric 2 (skipped without it)",
        "python -m bench                # the full run: this file, about an hour on 2 cores",
        "python -m bench --quick        # a few minutes; prints the table",
        "python -m bench --smoke        # about a minute: every metric runs (the test suite's)",
        "python -m bench --only overhead,parallel",
        "python -m bench --report-from bench/results/full.jsonl   # rebuild this file only",
        "```",
        "",
    ]
    text = "\n".join(lines)
    if path is not None:
        path.write_text(text)
    return text


def _load(env: dict[str, Any]) -> str:
    load = env.get("load_average")
    return ", ".join(f"{x:.2f}" for x in load) if load else "unknown"


def _pretty(details: dict[str, Any], indent: int = 0) -> str:
    out = []
    for key, value in details.items():
        if key == "median_curves":
            continue
        if isinstance(value, dict):
            out.append(" " * indent + f"{key}:")
            out.append(_pretty(value, indent + 2))
        elif isinstance(value, float):
            out.append(" " * indent + f"{key}: {value:.4g}")
        elif isinstance(value, (list, tuple)) and value and isinstance(value[0], dict):
            out.append(" " * indent + f"{key}:")
            for item in value:
                out.append(
                    " " * indent + "  - " + ", ".join(f"{k}={_short(v)}" for k, v in item.items())
                )
        else:
            out.append(" " * indent + f"{key}: {_short(value)}")
    return "\n".join(out)


def _short(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.4g}"
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(_short(v) for v in value) + "]"
    return str(value)


def figures_for(report: Path) -> Path:
    """Where the figures of ``report`` go: bench/figures for BENCHMARKS.md, and a folder
    beside any other report, so that a run written elsewhere changes nothing in the tree."""
    if report.resolve() == (ROOT / "BENCHMARKS.md").resolve():
        return FIGURES
    return report.parent / f"{report.stem}-figures"


def _figures(metrics: list[Metric], folder: Path) -> dict[str, Path]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    folder.mkdir(parents=True, exist_ok=True)
    made: dict[str, Path] = {}
    by_key = {m.key: m for m in metrics}
    if "parallel" in by_key and by_key["parallel"].details.get("cases"):
        cases = by_key["parallel"].details["cases"]
        fig, ax = plt.subplots(figsize=(6, 3.5))
        for seconds in sorted({c["seconds"] for c in cases}):
            chosen = [c for c in cases if c["seconds"] == seconds]
            ax.plot(
                [c["parallel"] for c in chosen],
                [c["efficiency"] for c in chosen],
                marker="o",
                label=f"trials of {seconds:g} s",
            )
        ax.axhline(0.97, color="grey", linestyle=":", linewidth=1)
        ax.axhline(0.90, color="grey", linestyle="--", linewidth=1)
        ax.set_xlabel("trials in flight")
        ax.set_ylabel("ideal time / measured time")
        ax.set_ylim(0.8, 1.01)
        ax.set_title("Parallel efficiency")
        ax.legend()
        made["parallel efficiency"] = _save(fig, folder / "parallel_efficiency.png")
    if "sample_efficiency" in by_key and by_key["sample_efficiency"].details.get("functions"):
        functions = by_key["sample_efficiency"].details["functions"]
        fig, axes = plt.subplots(
            1, len(functions), figsize=(5 * len(functions), 3.5), squeeze=False
        )
        for ax, (name, summary) in zip(axes[0], functions.items(), strict=True):
            for mode, curve in summary["median_curves"].items():
                ax.plot(range(1, len(curve) + 1), curve, label=mode)
            ax.axhline(summary["target"], color="grey", linestyle=":", linewidth=1)
            if name == "rosenbrock5":  # from 10^4 down to below 1: a log scale that holds 0
                ax.set_yscale("symlog", linthresh=1)
                ax.set_ylim(bottom=0)
            ax.set_title(
                f"{name} (median of {by_key['sample_efficiency'].details['seeds']} seeds)"
            )
            ax.set_xlabel("trials finished")
            ax.set_ylabel("best value so far")
        axes[0][0].legend()
        made["best value against trials"] = _save(fig, folder / "sample_efficiency.png")
    if "capacity" in by_key and by_key["capacity"].details.get("cells"):
        cells = by_key["capacity"].details["cells"]
        sizes = sorted({c["parallel"] for c in cells})
        fig, axes = plt.subplots(1, len(sizes), figsize=(3.2 * len(sizes), 3.2), squeeze=False)
        for ax, parallel in zip(axes[0], sizes, strict=True):
            chosen = sorted(
                (c for c in cells if c["parallel"] == parallel), key=lambda c: c["seconds"]
            )
            for sampler in ("auto", "tpe", "gp", "random"):
                if sampler in chosen[0]:
                    ax.plot(
                        [c["seconds"] for c in chosen],
                        [c[sampler]["time_to_target"] / c["seconds"] for c in chosen],
                        marker="o",
                        label=sampler,
                    )
            ax.set_xscale("log")
            ax.set_yscale("log")
            ax.set_title(f"{parallel} workers")
            ax.set_xlabel("seconds per trial (T)")
        axes[0][0].set_ylabel("time to target / T")
        axes[0][0].legend()
        made["time to target"] = _save(fig, folder / "capacity.png")
    return made


def _save(fig: Any, path: Path) -> Path:
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    return path
