"""The exception tree of the package.

Every error sweeper raises on purpose derives from :class:`SweeperError`. Errors that come
from the user's input (options, the objective file, the storage URL) derive from
:class:`UsageError`: the CLI prints their message as one line and exits with status 2, and
they are raised before the study is touched. Provider errors (Optuna storages, Modal, Aim)
are translated into this tree where they enter the package.
"""

from __future__ import annotations


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


class SweepInterrupted(SweeperError):
    """The sweep was stopped by the user (Ctrl-C) or a signal before it finished."""
