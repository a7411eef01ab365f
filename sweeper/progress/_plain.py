"""Progress as plain log lines, for output that is not a terminal (CI logs, files, pipes)."""

from __future__ import annotations

import sys
import time
from typing import TYPE_CHECKING, TextIO

from sweeper._format import format_duration, format_params, format_values
from sweeper.orchestrator._report import Reporter, SweepInfo, SweepSummary
from sweeper.progress._base import (
    TrialOutput,
    budget_text,
    short_status,
    status_line,
    summary_lines,
    trial_cost_text,
)
from sweeper.progress._traceback import user_traceback

if TYPE_CHECKING:
    from sweeper.orchestrator._stats import FinishedTrial, Snapshot


class PlainReporter(Reporter):
    """One line per finished trial, a status line every ``interval`` seconds."""

    def __init__(
        self,
        stream: TextIO | None = None,
        summary_stream: TextIO | None = None,
        interval: float = 30.0,
        verbose: bool = False,
    ) -> None:
        self._stream = stream
        self._summary_stream = summary_stream
        self._interval = interval
        self._verbose = verbose
        self._last_status = time.monotonic()
        self._output = TrialOutput()

    def _write(self, text: str, stream: TextIO | None = None) -> None:
        out = stream or self._stream or sys.stderr
        stamp = time.strftime("%H:%M:%S")
        for line in text.splitlines() or [""]:
            out.write(f"[{stamp}] {line}\n")
        out.flush()

    def begin(self, info: SweepInfo) -> None:
        self._write(
            f"sweeping {info.objective} as study {info.study!r} ({', '.join(info.directions)}) "
            f"in {info.storage}: {info.parallel} {info.backend} workers, "
            f"{info.sampler}, {info.pruner}, {budget_text(info)}"
        )

    def note(self, text: str, level: str = "info") -> None:
        if level == "debug" and not self._verbose:
            return
        prefix = "warning: " if level == "warning" else ""
        self._write(prefix + text)

    def trial_output(self, number: int, text: str) -> None:
        for line in self._output.lines(number, text):
            self._write(line)

    def trial_finished(self, trial: FinishedTrial, snapshot: Snapshot, new_best: bool) -> None:
        for line in self._output.finished(trial.number, trial.log_path):
            self._write(line)
        if trial.state == "FAIL":
            return  # trial_failed says it
        what = format_values(trial.values) if trial.values else ""
        star = " (new best)" if new_best and len(snapshot.directions) == 1 else ""
        self._write(
            f"trial {trial.number} {trial.state} {what}{star} in "
            f"{format_duration(trial.duration)}{trial_cost_text(trial)} "
            f"[{format_params(trial.params)}] | "
            f"{short_status(snapshot)}"
        )
        self._last_status = time.monotonic()

    def trial_failed(self, trial: FinishedTrial, first_of_kind: bool) -> None:
        where = f" (log: {trial.log_path})" if trial.log_path else ""
        self._write(
            f"trial {trial.number} FAIL: {trial.reason}{trial_cost_text(trial)} "
            f"[{format_params(trial.params)}]{where}"
        )
        if first_of_kind and trial.traceback:
            self._write(user_traceback(trial.traceback))

    def update(self, snapshot: Snapshot) -> None:
        now = time.monotonic()
        if now - self._last_status >= self._interval:
            self._last_status = now
            state = snapshot.stopping or snapshot.waiting
            self._write(status_line(snapshot) + (f" ({state})" if state else ""))

    def end(self, summary: SweepSummary) -> None:
        SummaryReporter(self._summary_stream).end(summary)


class SummaryReporter(Reporter):
    """Only the summary at the end (``--progress none``)."""

    def __init__(self, summary_stream: TextIO | None = None) -> None:
        self._summary_stream = summary_stream

    def end(self, summary: SweepSummary) -> None:
        out = self._summary_stream or sys.stdout
        out.write("\n".join(summary_lines(summary)) + "\n")
        out.flush()
