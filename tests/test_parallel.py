"""--parallel N really runs N trials at once, and refills a slot as soon as it frees."""

from __future__ import annotations

import json
import statistics
from pathlib import Path

import pytest
from conftest import Project


@pytest.mark.parametrize("parallel", [1, 3])
def test_parallel_trials_in_flight(project: Project, parallel: int) -> None:
    folder = project.path / "timed"
    folder.mkdir()
    n_trials = 4 * parallel
    result = project.sweeper(
        "run",
        project.objective("timed.py"),
        "-n",
        str(n_trials),
        "-p",
        str(parallel),
        "--sampler",
        "random",
        "--no-track",  # timings: keep the tracking process off the two cores
        env={"TIMED_DIR": str(folder)},
    )
    assert result.returncode == 0, result.stderr
    runs = [json.loads(p.read_text()) for p in Path(folder).glob("*.json")]
    assert len(runs) == n_trials
    assert len({r["pid"] for r in runs}) == parallel  # persistent workers

    # Count trials in flight at every start and end: never more than N, and N while the
    # budget lasts (the overlap reaches N).
    events = sorted([(r["start"], 1) for r in runs] + [(r["end"], -1) for r in runs])
    in_flight, peak = 0, 0
    for _, change in events:
        in_flight += change
        peak = max(peak, in_flight)
    assert peak == parallel

    # No batch barrier: a trial after the first N starts right after some trial ended; as a
    # rule (the median: a busy machine may delay a few), and never long after (a poll
    # timeout, a barrier).
    ends = sorted(r["end"] for r in runs)
    waits = [
        min(run["start"] - end for end in ends if end <= run["start"] + 0.001)
        for run in sorted(runs, key=lambda r: r["start"])[parallel:]
    ]
    assert statistics.median(waits) < 0.15, waits
    assert max(waits) < 2.0, waits
