"""What the user sees: the live display and the plain log lines."""

from __future__ import annotations

import io

from rich.console import Console

from sweeper.orchestrator import BestTrial, FinishedTrial, Snapshot
from sweeper.progress import PlainReporter, SweepSummary, summary_lines
from sweeper.progress._terminal import render

SNAPSHOT = Snapshot(
    study="mlp",
    directions=("maximize",),
    complete=12,
    pruned=3,
    failed=1,
    running=4,
    n_trials=40,
    timeout=None,
    elapsed=83.0,
    best_values=(0.9812,),
    best_number=14,
)


def test_live_display_shows_counts_best_and_time() -> None:
    console = Console(file=io.StringIO(), width=100, force_terminal=False)
    console.print(render(SNAPSHOT))
    text = console.file.getvalue()
    for fragment in (
        "mlp",
        "16/40",
        "12 complete",
        "3 pruned",
        "1 failed",
        "4 running",
        "best 0.9812 (trial 14)",
        "1m23s",
    ):
        assert fragment in text, text


def test_plain_lines() -> None:
    stream = io.StringIO()
    reporter = PlainReporter(stream=stream, interval=0)
    trial = FinishedTrial(
        number=14, state="COMPLETE", values=(0.9812,), params={"lr": 0.01}, duration=2.5
    )
    reporter.trial_finished(trial, SNAPSHOT, new_best=True)
    reporter.update(SNAPSHOT)
    failed = FinishedTrial(
        number=15,
        state="FAIL",
        values=None,
        params={"lr": 1.0},
        duration=0.1,
        reason="ValueError: boom",
        traceback="Traceback...",
        log_path="logs/trial-15.log",
    )
    reporter.trial_failed(failed, first_of_kind=True)
    reporter.trial_failed(failed, first_of_kind=False)
    lines = stream.getvalue().splitlines()
    assert "trial 14 COMPLETE 0.9812 (new best) in 2.5s [lr=0.01]" in lines[0]
    assert "16/40 done" in lines[1]
    assert "trial 15 FAIL: ValueError: boom [lr=1.0] (log: logs/trial-15.log)" in lines[2]
    assert lines[3].endswith("Traceback...")
    assert len(lines) == 5  # the repeated failure has no traceback


def test_summary_multi_objective() -> None:
    summary = SweepSummary(
        study="mo",
        storage=".sweeper/optuna.journal",
        directions=("minimize", "maximize"),
        elapsed=5.0,
        counts={"COMPLETE": 2},
        totals={"COMPLETE": 2},
        best=[BestTrial(0, (1.0, 2.0), {"x": 1}), BestTrial(1, (0.5, 1.0), {"x": 2})],
    )
    text = "\n".join(summary_lines(summary))
    assert "Pareto front (minimize, maximize): 2 trials" in text
    assert "trial 1: values 0.5, 1.0; x=2" in text
