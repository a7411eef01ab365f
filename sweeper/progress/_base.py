"""The shared text of what a sweep tells the person watching it: status lines, trial
output, the summary."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TYPE_CHECKING

from sweeper._cost import Spend, format_usd
from sweeper._format import (
    format_duration,
    format_param,
    format_params,
    format_value,
    format_values,
)

if TYPE_CHECKING:
    from sweeper.orchestrator._report import SweepInfo, SweepSummary
    from sweeper.orchestrator._stats import FinishedTrial, Snapshot


OUTPUT_RATE = 20.0
"""Lines of trial output shown a second, on average."""
OUTPUT_BURST = 100
"""Lines of trial output shown at once, before the rate applies."""


class TrialOutput:
    """What trials print, as lines to show: each prefixed with its trial's number, at most
    :data:`OUTPUT_RATE` a second (:data:`OUTPUT_BURST` at once). The lines over that are
    counted, and said in one line when the trial finishes, with where they all are."""

    def __init__(
        self,
        rate: float = OUTPUT_RATE,
        burst: int = OUTPUT_BURST,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._rate, self._burst, self._clock = rate, burst, clock
        self._tokens = float(burst)
        self._filled = clock()
        self._partial: dict[int, str] = {}
        self._hidden: dict[int, int] = {}

    def lines(self, number: int, text: str) -> list[str]:
        """The lines to show now of ``text`` (a line cut short waits for its end)."""
        *complete, partial = (self._partial.pop(number, "") + text).split("\n")
        if partial:
            self._partial[number] = partial
        return self._admit(number, complete)

    def finished(self, number: int, log_path: str | None) -> list[str]:
        """The last lines of a trial that has finished: its unfinished line, and how many
        were not shown."""
        partial = self._partial.pop(number, "")
        shown = self._admit(number, [partial]) if partial.strip() else []
        hidden = self._hidden.pop(number, 0)
        if hidden:
            where = f"; all of them are in {log_path}" if log_path else ""
            shown.append(
                f"[trial {number}] ... {hidden} more line{'s' if hidden != 1 else ''} "
                f"not shown{where}"
            )
        return shown

    def _admit(self, number: int, lines: list[str]) -> list[str]:
        now = self._clock()
        self._tokens = min(self._burst, self._tokens + (now - self._filled) * self._rate)
        self._filled = now
        shown = []
        for line in lines:
            line = line.rstrip("\r").rsplit("\r", 1)[-1]  # a bar redrawn in place: its end
            if self._tokens >= 1:
                self._tokens -= 1
                shown.append(f"[trial {number}] {line}")
            else:
                self._hidden[number] = self._hidden.get(number, 0) + 1
        return shown


def budget_text(info: SweepInfo) -> str:
    """What ends the sweep: "40 trials, timeout 1m00s", or "until interrupted"."""
    budget = []
    if info.n_trials:
        budget.append(f"{info.n_trials} trials")
    if info.timeout:
        budget.append(f"timeout {format_duration(info.timeout)}")
    return ", ".join(budget) if budget else "until interrupted (Ctrl-C)"


def status_line(s: Snapshot) -> str:
    """One line with counts, best so far and time, e.g. for logs and terminal titles."""
    total = f"/{s.n_trials}" if s.n_trials else ""
    parts = [
        f"{s.finished}{total} done",
        f"{s.complete} complete",
        f"{s.pruned} pruned",
        f"{s.failed} failed",
        f"{s.running} running",
    ]
    best = best_text(s)
    if best:
        parts.append(best)
    cost = cost_text(s)
    if cost:
        parts.append(cost)
    parts.append(f"elapsed {format_duration(s.elapsed)}")
    if s.timeout:
        parts.append(f"timeout in {format_duration(s.timeout - s.elapsed)}")
    return " | ".join(parts)


def cost_text(s: Snapshot) -> str | None:
    """``cost ~$1.23`` (with its budget), or None when trials cost nothing."""
    spend = s.spend
    if spend is None:
        return None
    text = f"cost ~{format_usd(spend.total)}"
    if spend.budget is not None:
        text += f" of {format_usd(spend.budget)}"
    return text


def trial_cost_text(trial: FinishedTrial) -> str:
    """`` (~$0.0123)`` after a trial that cost something, else nothing."""
    return f" (~{format_usd(trial.cost)})" if trial.cost > 0 else ""


def spend_lines(spend: Spend) -> list[str]:
    """The summary's lines about what the sweep cost."""
    hours = format_duration(spend.seconds)
    trials = f"{spend.trials} trial{'s' if spend.trials != 1 else ''}"
    line = (
        f"Estimated cost: {format_usd(spend.spent)} for {hours} of container time over "
        f"{trials} at {format_usd(spend.per_hour, exact=True)} an hour a container "
        f"({spend.provenance})."
    )
    if spend.budget is not None:
        left = spend.budget - spend.spent
        line += f" Budget {format_usd(spend.budget)}: " + (
            f"{format_usd(left)} left." if left >= 0 else f"{format_usd(-left)} over."
        )
    if spend.prior > 0:
        line += f" The study's trials have cost {format_usd(spend.prior + spend.spent)} in all."
    return [line]


def short_status(s: Snapshot) -> str:
    """Counts and best so far in a few words, for the end of a log line."""
    total = f"/{s.n_trials}" if s.n_trials else ""
    best = best_text(s)
    return (
        f"{s.finished}{total} done ({s.complete} complete, {s.pruned} pruned, {s.failed} failed)"
        + (f", {best}" if best else "")
    )


def best_text(s: Snapshot) -> str | None:
    if len(s.directions) > 1:
        return f"Pareto front {s.pareto_size}" if s.pareto_size else None
    if s.best_values is None:
        return None
    return f"best {format_value(s.best_values[0])} (trial {s.best_number})"


def summary_lines(summary: SweepSummary) -> list[str]:
    counts = summary.counts
    ran = sum(counts.values())
    lines = [
        f"Study {summary.study!r}: {ran} trial{'s' if ran != 1 else ''} in "
        f"{format_duration(summary.elapsed)}: {counts.get('COMPLETE', 0)} complete, "
        f"{counts.get('PRUNED', 0)} pruned, {counts.get('FAIL', 0)} failed."
    ]
    if summary.stop_reason:
        lines.append(f"Stopped early: {summary.stop_reason}.")
    if summary.spend is not None:
        lines.extend(spend_lines(summary.spend))
    if summary.returned:
        n = summary.returned
        lines.append(
            f"{n} trial{'s' if n != 1 else ''} asked ahead did not start; "
            f"{'they wait' if n != 1 else 'it waits'} in the study's queue and "
            f"run{'s' if n == 1 else ''} first next time."
        )
    if len(summary.directions) == 1:
        if summary.best:
            best = summary.best[0]
            lines.append(
                f"Best value {format_value(best.values[0])} ({summary.directions[0]}) "
                f"from trial {best.number}:"
            )
            width = max((len(k) for k in best.params), default=0)
            lines.extend(
                f"    {k.ljust(width)} = {format_param(v)}" for k, v in best.params.items()
            )
        elif summary.totals.get("COMPLETE"):
            lines.append(
                "No completed trial meets the sampler's constraints, so there is no best value."
            )
        else:
            lines.append("No trial has completed yet, so there is no best value.")
    elif summary.best:
        lines.append(f"Pareto front ({', '.join(summary.directions)}): {len(summary.best)} trials")
        for best in summary.best[:10]:
            lines.append(
                f"    trial {best.number}: values {format_values(best.values)}; "
                f"{format_params(best.params)}"
            )
        if len(summary.best) > 10:
            lines.append(f"    ... and {len(summary.best) - 10} more (python -m sweeper best)")
    elif summary.totals.get("COMPLETE"):
        lines.append(
            "No completed trial meets the sampler's constraints, so there is no Pareto front."
        )
    else:
        lines.append("No trial has completed yet, so there is no Pareto front.")
    total = sum(summary.totals.values())
    labels = {"FAIL": "failed"}
    parts = ", ".join(f"{n} {labels.get(s, s.lower())}" for s, n in summary.totals.items() if n)
    lines.append(f"Stored in {summary.storage} (the study has {total} trials: {parts}).")
    if summary.log_dir and counts.get("FAIL"):
        lines.append(f"Trial output and tracebacks: {summary.log_dir}")
    if summary.aim_repo:
        lines.append(f"Tracked in Aim ({summary.aim_repo}); see it with: python -m sweeper ui")
    return lines
