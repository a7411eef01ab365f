"""Messages in the words of the interface in use: ``--flag`` on the command line, ``flag=``
from Python; "Ctrl-C" in a terminal, the kernel's interrupt in a notebook.

Messages are written once, in the command line's words (most are shared with it); the
Python API rewrites them with :func:`api_words` where they leave it: the errors
``sweeper.run`` raises, and the notes its progress shows (:class:`Reworded`).
"""

from __future__ import annotations

import re
from dataclasses import replace
from typing import TYPE_CHECKING

from sweeper._config import OPTION_NAMES
from sweeper.orchestrator._report import Reporter

if TYPE_CHECKING:
    from sweeper.orchestrator._report import SweepInfo, SweepSummary
    from sweeper.orchestrator._stats import FinishedTrial, Snapshot

_SPECIAL_FLAGS = {"directions": "--direction", "secrets": "--secret", "track": "--no-track"}
_KEYWORDS: dict[str, str] = {
    _SPECIAL_FLAGS.get(name, "--" + name.replace("_", "-")): {"directions": "direction"}.get(
        name, name
    )
    for name in (*OPTION_NAMES, "objective", "progress")
}
_FLAG = re.compile(r"(?<![\w-])(--[a-z][a-z-]*[a-z])(?: (\S+))?")
_VALUES = frozenset({"minimize", "maximize", "local", "modal", "auto", "none"})
_TRAILING = ".,:;)"
_REPEATED = re.compile(r"\b(\w+)=(\"[^\"]*\")((?: \1=\"[^\"]*\")+)")
_PHRASES = (  # where the command line's way (repeat a flag) is not Python's (a list)
    ("Give --direction once per returned value", "Give direction= one direction per value"),
    (
        "Repeat --direction once per value the objective returns",
        "Give direction= one direction per value the objective returns (a list)",
    ),
)
_INTERRUPT = (
    (" (Ctrl-C twice)", " twice"),
    (" (Ctrl-C)", ""),
    ("until Ctrl-C", "until the kernel is interrupted"),
    ("Ctrl-C", "the kernel's interrupt"),
)


def api_words(text: str, *, notebook: bool = False) -> str:
    """``text`` with each command-line flag as the keyword argument of ``sweeper.run`` that
    sets the same option (``--direction minimize --direction maximize`` becomes
    ``direction=["minimize", "maximize"]``); in a notebook, "Ctrl-C" as the kernel's
    interrupt."""
    for old, new in _PHRASES:
        text = text.replace(old, new)
    text = _FLAG.sub(_keyword, text)
    text = _REPEATED.sub(_as_list, text)
    if notebook:
        for old, new in _INTERRUPT:
            text = text.replace(old, new)
    return text


def _keyword(match: re.Match[str]) -> str:
    flag, token = match.group(1), match.group(2)
    keyword = _KEYWORDS.get(flag)
    if keyword is None:  # not an option (`track --repair`): a command to type, as it is
        return match.group(0)
    if flag == "--no-track":
        return "track=False" + (f" {token}" if token else "")
    if token is None:
        return f"{keyword}="
    value = token.rstrip(_TRAILING)
    rest = token[len(value) :]
    if not value or not _is_value(value):
        return f"{keyword}= {token}"
    return f"{keyword}={_literal(value)}{rest}"


def _is_value(token: str) -> bool:
    """Whether the word after a flag is its value (``/tmp/x.db``, ``H100``, ``3``,
    ``minimize``) rather than the sentence going on (``to continue``)."""
    return (
        token in _VALUES
        or token[0].isupper()
        or any(c.isdigit() or c in "/~.$_:'\"" for c in token)
    )


def _literal(value: str) -> str:
    if value.isupper() and value.isalpha():  # a placeholder: NAME, FILE
        return value
    try:
        float(value)
    except ValueError:
        return '"' + value.strip("'\"") + '"'
    return value


def _as_list(match: re.Match[str]) -> str:
    values = [match.group(2), *re.findall(r"=(\"[^\"]*\")", match.group(3))]
    return f"{match.group(1)}=[{', '.join(values)}]"


class Reworded(Reporter):
    """Passes everything on to ``reporter``, with the sweep's own messages in the API's
    words (:func:`api_words`), and keeps the first failure of the run (``sweeper.run``
    raises with it when no trial completed)."""

    def __init__(self, reporter: Reporter, *, notebook: bool = False) -> None:
        self.reporter = reporter
        self._notebook = notebook
        self.first_failure: FinishedTrial | None = None

    def words(self, text: str) -> str:
        return api_words(text, notebook=self._notebook)

    def begin(self, info: SweepInfo) -> None:
        self.reporter.begin(info)

    def note(self, text: str, level: str = "info") -> None:
        self.reporter.note(self.words(text), level)

    def trial_output(self, number: int, text: str) -> None:
        self.reporter.trial_output(number, text)

    def trial_finished(self, trial: FinishedTrial, snapshot: Snapshot, new_best: bool) -> None:
        self.reporter.trial_finished(trial, self._snapshot(snapshot), new_best)

    def trial_failed(self, trial: FinishedTrial, first_of_kind: bool) -> None:
        if self.first_failure is None:
            self.first_failure = trial
        self.reporter.trial_failed(trial, first_of_kind)

    def update(self, snapshot: Snapshot) -> None:
        self.reporter.update(self._snapshot(snapshot))

    def end(self, summary: SweepSummary) -> None:
        if summary.stop_reason:
            summary = replace(summary, stop_reason=self.words(summary.stop_reason))
        self.reporter.end(summary)

    def close(self) -> None:
        self.reporter.close()

    def _snapshot(self, snapshot: Snapshot) -> Snapshot:
        if snapshot.stopping is None and snapshot.waiting is None:
            return snapshot
        return replace(
            snapshot,
            stopping=self.words(snapshot.stopping) if snapshot.stopping else None,
            waiting=self.words(snapshot.waiting) if snapshot.waiting else None,
        )
