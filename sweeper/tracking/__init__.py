"""Tracking every trial in Aim: events, the single writer of a repo, and the UI."""

from __future__ import annotations

from sweeper.tracking._events import (
    Event,
    Logged,
    ParamsSet,
    Reported,
    StudyDeleted,
    StudyOpened,
    StudyProgress,
    TrialFinished,
    TrialStarted,
)
from sweeper.tracking._tracker import HubTracker, Tracker
from sweeper.tracking._writer import AimWriter, TrackingError

__all__ = [
    "AimWriter",
    "Event",
    "HubTracker",
    "Logged",
    "ParamsSet",
    "Reported",
    "StudyDeleted",
    "StudyOpened",
    "StudyProgress",
    "Tracker",
    "TrackingError",
    "TrialFinished",
    "TrialStarted",
]
