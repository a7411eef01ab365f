"""The benchmark suite runs end to end (``python -m bench --smoke``: every metric at its
smallest, about a minute on 2 cores). Its verdicts are not asserted: a timing missed on a
noisy CI machine must not fail the build. What is asserted is that every metric ran, none
crashed, and the report is whole."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from bench.metrics import METRICS

REPO = Path(__file__).resolve().parent.parent


def _bench(*args: str, timeout: float) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "bench", *args],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


@pytest.mark.timeout(600)
def test_the_benchmark_runs_every_metric_and_reports_it(tmp_path: Path) -> None:
    results = tmp_path / "smoke.jsonl"
    done = _bench("--smoke", "--results", str(results), timeout=540)
    assert done.returncode == 0, done.stderr[-3000:]

    lines = [json.loads(line) for line in results.read_text().splitlines()]
    assert "environment" in lines[0] and lines[0]["smoke"] is True
    summaries = [line["summary"] for line in lines if "summary" in line]
    assert [s["key"] for s in summaries] == list(METRICS)
    for summary in summaries:
        assert not summary["measured"].startswith("failed"), summary
        if summary["passed"] is None:  # only Ray may be skipped, and only without Ray
            assert summary["key"] == "ray" and "not installed" in summary["measured"]

    table = _summary_table(done.stdout)
    assert len(table) == 3 + len(METRICS)  # when and how long, header, rule, a row per metric
    assert f"`python -m bench --smoke` ({lines[-1]['seconds']} s)" in table[0]

    rebuilt = _bench("--report-from", str(results), timeout=60)
    assert rebuilt.returncode == 0, rebuilt.stderr
    assert _summary_table(rebuilt.stdout) == table


def _summary_table(report: str) -> list[str]:
    """The report's "Measured on" line and its first table (details have tables of their own)."""
    rows = report.splitlines()
    (when,) = [row for row in rows if row.startswith("Measured on")]
    start = rows.index("| # | metric | target | measured | verdict |")
    end = next((i for i in range(start, len(rows)) if not rows[i].startswith("| ")), len(rows))
    return [when, *rows[start:end]]


def test_bench_names_unknown_metrics(tmp_path: Path) -> None:
    done = _bench("--only", "overhead,speed", timeout=60)
    assert done.returncode == 2
    assert "unknown metric speed" in done.stderr


def test_report_from_refuses_a_file_that_is_not_results(tmp_path: Path) -> None:
    other = tmp_path / "notes.txt"
    other.write_text("hello\n")
    done = _bench("--report-from", str(other), timeout=60)
    assert done.returncode == 2
    expected = f"error: {other} is not a results file written by python -m bench"
    assert done.stderr.strip() == expected
