"""``python -m bench [--quick | --smoke] [--only NAME,...]``: run the benchmarks, write the results
(JSON lines) and the report."""

from __future__ import annotations

import argparse
import json
import sys
import time
from dataclasses import asdict
from pathlib import Path

from bench._harness import ROOT, Metric, VariantFailed, environment
from bench.metrics import METRICS, Plan
from bench.report import write_report


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__)
    parser.add_argument(
        "--quick",
        action="store_true",
        help="fewer repeats and trials: a few minutes instead of most of an hour",
    )
    parser.add_argument(
        "--smoke",
        action="store_true",
        help="every metric at its smallest, about a minute: that it runs, not what it measures "
        "(what the test suite runs)",
    )
    parser.add_argument("--only", help=f"comma-separated metrics, from: {', '.join(METRICS)}")
    parser.add_argument(
        "--results", type=Path, help="JSON lines file (default: bench/results/<full|quick>.jsonl)"
    )
    parser.add_argument(
        "--report",
        type=Path,
        help="Markdown report (default: BENCHMARKS.md for a full run; none for --quick)",
    )
    parser.add_argument(
        "--report-from",
        type=Path,
        metavar="RESULTS",
        help="run nothing: rebuild the report from a results file an earlier run wrote",
    )
    args = parser.parse_args(argv)
    if args.report_from:
        return rebuild_report(args.report_from, args.report)
    chosen = args.only.split(",") if args.only else list(METRICS)
    unknown = [name for name in chosen if name not in METRICS]
    if unknown:
        parser.error(f"unknown metric {', '.join(unknown)}; choose from {', '.join(METRICS)}")
    args.quick = args.quick or args.smoke
    plan = Plan(quick=args.quick, smoke=args.smoke)
    results = (
        args.results
        or ROOT / "bench" / "results" / f"{_mode(args.quick, args.smoke) or 'full'}.jsonl"
    )
    results.parent.mkdir(parents=True, exist_ok=True)
    env = environment()
    metrics: list[Metric] = []
    started = time.monotonic()
    with results.open("w") as out:
        header = {"environment": env, "quick": args.quick, "smoke": args.smoke}
        out.write(json.dumps(header) + "\n")
        for name in chosen:
            sys.stderr.write(f"[{time.monotonic() - started:6.0f}s] {name} ...\n")
            try:
                metric = METRICS[name](plan, lambda item: out.write(json.dumps(item) + "\n"))
            except VariantFailed as error:
                metric = Metric(name, name, "", f"failed: {error}", False)
            metrics.append(metric)
            out.write(json.dumps({"summary": asdict(metric)}) + "\n")
            out.flush()
            verdict = {True: "met", False: "MISSED", None: "-"}[metric.passed]
            sys.stderr.write(f"         {verdict}: {metric.measured}\n")
    env["seconds"] = round(time.monotonic() - started)
    with results.open("a") as out:
        out.write(json.dumps({"seconds": env["seconds"]}) + "\n")
    report = args.report if args.report else (None if args.quick else ROOT / "BENCHMARKS.md")
    text = write_report(
        metrics, env, mode=_mode(args.quick, args.smoke), path=report, results=results
    )
    if report is None:
        sys.stdout.write(text)
    else:
        sys.stderr.write(f"wrote {report} and {results}\n")
    return 0


def _mode(quick: bool, smoke: bool) -> str:
    return "smoke" if smoke else "quick" if quick else ""


def rebuild_report(results: Path, report: Path | None) -> int:
    """Write the report again from ``results`` (say, after editing bench/discussion.md)."""
    try:
        lines = [json.loads(line) for line in results.read_text().splitlines() if line.strip()]
    except OSError as error:
        sys.stderr.write(f"error: cannot read {results}: {error.strerror or error}\n")
        return 2
    except ValueError:
        lines = []
    header = next((line for line in lines if "environment" in line), None)
    metrics = [Metric(**line["summary"]) for line in lines if "summary" in line]
    end = next((line["seconds"] for line in lines if line.keys() == {"seconds"}), None)
    if header is None or not metrics:
        sys.stderr.write(f"error: {results} is not a results file written by python -m bench\n")
        return 2
    env = {**header["environment"], "seconds": end or header["environment"].get("seconds")}
    quick = bool(header.get("quick"))
    path = report or (None if quick else ROOT / "BENCHMARKS.md")
    mode = _mode(quick, bool(header.get("smoke")))
    text = write_report(metrics, env, mode=mode, path=path, results=results.resolve())
    if path is None:
        sys.stdout.write(text)
    else:
        sys.stderr.write(f"wrote {path} from {results}\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
