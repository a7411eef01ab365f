"""The trial channel between a worker and the orchestrator (transports and shared logic)."""

from __future__ import annotations

from sweeper.channel._base import ChannelClosed, Transport, TrialChannel

__all__ = ["ChannelClosed", "Transport", "TrialChannel"]
