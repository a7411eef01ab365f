"""Tracking every trial in Aim: events, the single writer of a repo, reconciling it with
the study's storage, and the UI."""

from __future__ import annotations

from sweeper.tracking._events import (
    Event,
    Logged,
    ParamsSet,
    Rebuild,
    Reconcile,
    Reported,
    StudyDeleted,
    StudyOpened,
    StudyProgress,
    TrialFinished,
    TrialRecord,
    TrialStarted,
    TrialSummary,
)
from sweeper.tracking._tracker import HubTracker, StudySource, Tracker
from sweeper.tracking._writer import AimWriter, TrackingError

__all__ = [
    "AimWriter",
    "Event",
    "HubTracker",
    "Logged",
    "ParamsSet",
    "Rebuild",
    "Reconcile",
    "Reported",
    "StudyDeleted",
    "StudyOpened",
    "StudyProgress",
    "StudySource",
    "Tracker",
    "TrackingError",
    "TrialFinished",
    "TrialRecord",
    "TrialStarted",
    "TrialSummary",
]
