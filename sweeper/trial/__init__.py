"""The trial as a worker sees it, and the messages about it that cross the wire."""

from __future__ import annotations

from sweeper.trial._messages import TrialResult, TrialSpec
from sweeper.trial._remote import RemoteTrial
from sweeper.trial._runner import run_trial, to_values

__all__ = ["RemoteTrial", "TrialResult", "TrialSpec", "run_trial", "to_values"]
