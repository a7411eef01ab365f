"""What the person running a sweep sees: live progress, failures, the summary."""

from __future__ import annotations

from sweeper.orchestrator._report import Reporter, SweepInfo, SweepSummary
from sweeper.progress._base import status_line, summary_lines
from sweeper.progress._plain import PlainReporter, SummaryReporter

__all__ = [
    "PlainReporter",
    "Reporter",
    "SummaryReporter",
    "SweepInfo",
    "SweepSummary",
    "status_line",
    "summary_lines",
]
