"""Progress in a Jupyter notebook: one display that updates in place, failures below it.

Every display has a ``text/plain`` form beside its HTML, so text front ends (a console, a
notebook converted to text, CI logs of executed notebooks) show the same. What trials print
is written to the cell's output stream, each line prefixed with its trial's number.
"""

from __future__ import annotations

import html
import sys
import time
from typing import TYPE_CHECKING, Any

from sweeper._format import format_duration, format_params
from sweeper.orchestrator._report import Reporter, SweepInfo, SweepSummary
from sweeper.progress._base import TrialOutput, best_text, cost_text, status_line, summary_lines
from sweeper.progress._traceback import user_traceback

if TYPE_CHECKING:
    from sweeper.orchestrator._stats import FinishedTrial, Snapshot

_REFRESH_SECONDS = 0.25


def in_notebook() -> bool:
    """Whether this code runs in a Jupyter kernel (notebook, JupyterLab, VS Code, Colab)."""
    try:
        from IPython import get_ipython
    except ImportError:
        return False
    shell = get_ipython()
    if shell is None:
        return False
    try:
        from ipykernel.zmqshell import ZMQInteractiveShell
    except ImportError:
        return type(shell).__name__ == "ZMQInteractiveShell"
    return isinstance(shell, ZMQInteractiveShell)


def in_ipython() -> bool:
    """Whether this code runs in an IPython shell: a Jupyter kernel or ``ipython``."""
    if "IPython" not in sys.modules:
        return False
    from IPython import get_ipython

    return get_ipython() is not None


class NotebookReporter(Reporter):
    """Renders the sweep's state as HTML in the cell's output, updated in place."""

    def __init__(self, verbose: bool = False) -> None:
        from IPython.display import display

        self._display = display
        self._verbose = verbose
        self._handle: Any = None
        self._last = 0.0
        self._snapshot: Snapshot | None = None
        self._info: SweepInfo | None = None
        self._output = TrialOutput()

    def begin(self, info: SweepInfo) -> None:
        self._info = info
        self._show(force=True)

    def note(self, text: str, level: str = "info") -> None:
        if level == "debug" and not self._verbose:
            return
        color = "#b45309" if level == "warning" else "inherit"
        prefix = "warning: " if level == "warning" else ""
        self._show_both(prefix + text, f'<div style="color:{color}">{html.escape(text)}</div>')

    def trial_output(self, number: int, text: str) -> None:
        self._print(self._output.lines(number, text))

    def trial_failed(self, trial: FinishedTrial, first_of_kind: bool) -> None:
        where = f" log: {trial.log_path}" if trial.log_path else ""
        text = (
            f"trial {trial.number} failed: {trial.reason} [{format_params(trial.params)}]{where}"
        )
        body = f'<div style="color:#b91c1c">&#10007; {html.escape(text)}</div>'
        plain = text
        if first_of_kind and trial.traceback:
            trace = user_traceback(trial.traceback)
            body += (
                f"<details><summary>traceback</summary><pre>{html.escape(trace)}</pre></details>"
            )
            plain += "\n" + trace
        self._show_both(plain, body)

    def trial_finished(self, trial: FinishedTrial, snapshot: Snapshot, new_best: bool) -> None:
        self._print(self._output.finished(trial.number, trial.log_path))
        self._snapshot = snapshot
        self._show()

    def update(self, snapshot: Snapshot) -> None:
        self._snapshot = snapshot
        self._show()

    def end(self, summary: SweepSummary) -> None:
        self._show(force=True)
        text = "\n".join(summary_lines(summary))
        self._show_both(text, f"<pre>{html.escape(text)}</pre>")

    def close(self) -> None:
        self._show(force=True)

    def _print(self, lines: list[str]) -> None:
        """Trial output, into the cell's output stream as ``print`` would put it."""
        if lines:
            sys.stdout.write("".join(line + "\n" for line in lines))

    def _show_both(self, text: str, body: str) -> None:
        self._display({"text/plain": text, "text/html": body}, raw=True)

    def _show(self, force: bool = False) -> None:
        now = time.monotonic()
        if not force and now - self._last < _REFRESH_SECONDS:
            return
        self._last = now
        content = {
            "text/plain": render_text(self._info, self._snapshot),
            "text/html": render_html(self._info, self._snapshot),
        }
        if self._handle is None:
            self._handle = self._display(content, raw=True, display_id=True)
        else:
            self._handle.update(content, raw=True)


def render_text(info: SweepInfo | None, s: Snapshot | None) -> str:
    """The live part of the display, as text."""
    lines = []
    if info is not None:
        lines.append(
            f"{info.study} ({', '.join(info.directions)}): {info.parallel} {info.backend} "
            f"workers, {info.sampler}, {info.pruner}"
        )
    if s is not None:
        lines.append(status_line(s))
        state = s.stopping or s.waiting
        if state:
            lines.append(state)
    return "\n".join(lines)


def render_html(info: SweepInfo | None, s: Snapshot | None) -> str:
    """The live part of the display."""
    parts = ['<div style="font-family:monospace;line-height:1.5">']
    if info is not None:
        parts.append(
            f"<b>{html.escape(info.study)}</b> ({', '.join(info.directions)}): "
            f"{info.parallel} {html.escape(info.backend)} workers, {html.escape(info.sampler)}, "
            f"{html.escape(info.pruner)}<br>"
        )
    if s is not None:
        total = s.n_trials
        bar = (
            f'<progress value="{s.finished}" max="{total}" style="width:240px"></progress> '
            f"{s.finished}/{total}"
            if total
            else f"{s.finished} finished"
        )
        times = format_duration(s.elapsed) + (
            f" of {format_duration(s.timeout)}" if s.timeout else ""
        )
        parts.append(f"{bar} &nbsp; {times}<br>")
        parts.append(
            f'<span style="color:#15803d">{s.complete} complete</span> &nbsp; '
            f'<span style="color:#a16207">{s.pruned} pruned</span> &nbsp; '
            f'<span style="color:#b91c1c">{s.failed} failed</span> &nbsp; '
            f'<span style="color:#1d4ed8">{s.running} running</span>'
        )
        best = best_text(s)
        if best:
            parts.append(f" &nbsp; <b>{html.escape(best)}</b>")
        cost = cost_text(s)
        if cost:
            parts.append(f" &nbsp; {html.escape(cost)}")
        state = s.stopping or s.waiting
        if state:
            parts.append(f"<br><i>{html.escape(state)}</i>")
    parts.append("</div>")
    return "".join(parts)
