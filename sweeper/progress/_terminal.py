"""A live progress display for terminals, drawn with rich."""

from __future__ import annotations

from typing import TYPE_CHECKING

from rich.console import Console, Group, RenderableType
from rich.live import Live
from rich.markup import escape
from rich.progress_bar import ProgressBar
from rich.table import Table
from rich.text import Text

from sweeper._format import format_duration, format_params, format_values
from sweeper.orchestrator._report import Reporter, SweepInfo, SweepSummary
from sweeper.progress._base import (
    TrialOutput,
    best_text,
    budget_text,
    cost_text,
    summary_lines,
    trial_cost_text,
)
from sweeper.progress._traceback import user_traceback

if TYPE_CHECKING:
    from sweeper.orchestrator._stats import FinishedTrial, Snapshot


class TerminalReporter(Reporter):
    """A progress bar with counts per state, best so far and time; messages scroll above it."""

    def __init__(
        self,
        console: Console | None = None,
        summary_console: Console | None = None,
        verbose: bool = False,
    ) -> None:
        self._console = console or Console(stderr=True)
        self._summary_console = summary_console or Console()
        self._verbose = verbose
        self._live: Live | None = None
        self._snapshot: Snapshot | None = None
        self._output = TrialOutput()

    def begin(self, info: SweepInfo) -> None:
        self._console.print(
            f"[bold]sweeper[/] {escape(info.objective)} -> study [bold]{escape(info.study)}[/] "
            f"({', '.join(info.directions)}) in {escape(info.storage)}\n"
            f"  {info.parallel} {info.backend} workers, {info.sampler}, {info.pruner}, "
            f"{budget_text(info)}",
            highlight=False,
        )
        self._ensure_live()

    def _ensure_live(self) -> None:
        if self._live is None:
            self._live = Live(
                Text(""),
                console=self._console,
                refresh_per_second=4,
                transient=True,
                redirect_stdout=True,
                redirect_stderr=True,
            )
            self._live.start()

    def note(self, text: str, level: str = "info") -> None:
        if level == "debug" and not self._verbose:
            return
        style = "yellow" if level == "warning" else "dim" if level == "debug" else ""
        self._console.print(Text(text, style=style))

    def trial_output(self, number: int, text: str) -> None:
        for line in self._output.lines(number, text):
            self._console.print(Text(line), highlight=False)

    def trial_finished(self, trial: FinishedTrial, snapshot: Snapshot, new_best: bool) -> None:
        for line in self._output.finished(trial.number, trial.log_path):
            self._console.print(Text(line), highlight=False)
        self._snapshot = snapshot
        if new_best and trial.values is not None:
            label = "new best" if len(snapshot.directions) == 1 else "joins the Pareto front"
            self._console.print(
                Text.assemble(
                    ("* ", "green"),
                    f"trial {trial.number} {label}: {format_values(trial.values)}  ",
                    (format_params(trial.params), "dim"),
                )
            )
        self._refresh()

    def trial_failed(self, trial: FinishedTrial, first_of_kind: bool) -> None:
        where = f"  log: {trial.log_path}" if trial.log_path else ""
        self._console.print(
            Text.assemble(
                ("x ", "red"),
                f"trial {trial.number} failed: {trial.reason}{trial_cost_text(trial)}  ",
                (format_params(trial.params) + where, "dim"),
            )
        )
        if first_of_kind and trial.traceback:
            self._console.print(Text(user_traceback(trial.traceback), style="dim"))

    def update(self, snapshot: Snapshot) -> None:
        self._snapshot = snapshot
        self._ensure_live()
        self._refresh()

    def _refresh(self) -> None:
        if self._live is not None and self._snapshot is not None:
            self._live.update(render(self._snapshot))

    def close(self) -> None:
        if self._live is not None:
            self._live.stop()
            self._live = None

    def end(self, summary: SweepSummary) -> None:
        self.close()
        self._summary_console.print(
            "\n".join(summary_lines(summary)), highlight=False, markup=False
        )


def render(s: Snapshot) -> RenderableType:
    """The live part of the display."""
    grid = Table.grid(padding=(0, 1))
    total = s.n_trials
    bar = ProgressBar(total=float(total) if total else None, completed=s.finished, width=32)
    count = f"{s.finished}/{total}" if total else f"{s.finished}"
    times = format_duration(s.elapsed)
    if s.timeout:
        times += f" of {format_duration(s.timeout)}"
    grid.add_row(Text(s.study, style="bold"), bar, Text(count), Text(times, style="cyan"))
    counts = Text.assemble(
        (f"{s.complete} complete", "green"),
        "  ",
        (f"{s.pruned} pruned", "yellow"),
        "  ",
        (f"{s.failed} failed", "red" if s.failed else ""),
        "  ",
        (f"{s.running} running", "blue"),
    )
    best = best_text(s)
    if best:
        counts.append(f"   {best}", style="bold")
    cost = cost_text(s)
    if cost:
        counts.append(f"   {cost}", style="magenta")
    lines: list[RenderableType] = [grid, counts]
    if s.waiting:
        lines.append(Text(s.waiting, style="dim"))
    if s.stopping:
        lines.append(Text(s.stopping, style="yellow"))
    return Group(*lines)
