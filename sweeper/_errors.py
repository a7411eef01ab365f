"""The exception tree of the package.

Every error sweeper raises on purpose derives from :class:`SweeperError`. Errors that come
from the user's input (options, the objective file, the storage URL) derive from
:class:`UsageError`: the CLI prints their message as one line and exits with status 2, and
they are raised before the study is touched. Provider errors (Optuna storages, Modal, Aim)
are translated into this tree where they enter the package.

Two exceptions say how a sweep ended, as ``study.optimize`` would have: :class:`SweepFailed`
(no trial of the run completed: every one failed) and :class:`SweepInterrupted`, a
``KeyboardInterrupt``, so that ``except Exception`` does not swallow it and a notebook's
"Run All" stops there. Both carry the study.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import optuna


class SweeperError(Exception):
    """Base class of every error raised by sweeper."""


class UsageError(SweeperError):
    """Bad input from the user. The message names the problem and the fix."""


class ConfigError(UsageError):
    """An option has an invalid value, or options contradict each other."""


class ObjectiveError(UsageError):
    """The objective file or function cannot be used: missing, unreadable, wrong shape."""


class StorageError(UsageError):
    """The study storage cannot be opened, or the study in it does not fit the options."""


class BackendError(SweeperError):
    """Workers could not be started or kept running."""


class SweepFailed(SweeperError):
    """No trial of the sweep completed or was pruned: every one failed.

    The message says why the first one failed, with its traceback. ``study`` holds every
    trial, with each one's reason in its ``fail_reason`` system attribute.
    """

    def __init__(self, message: str, study: optuna.Study | None = None) -> None:
        super().__init__(message)
        self.study = study


class SweepInterrupted(KeyboardInterrupt):
    """The sweep was interrupted (Ctrl-C, or the notebook's interrupt) and has stopped.

    Raised after every trial is recorded, as ``study.optimize`` raises ``KeyboardInterrupt``.
    It is a ``KeyboardInterrupt``, not a :class:`SweeperError`, so that ``except Exception``
    does not catch it. ``study`` is the study with everything recorded (None when the
    sweep was interrupted before it opened it).
    """

    def __init__(self, message: str, study: optuna.Study | None = None) -> None:
        super().__init__(message)
        self.study = study
