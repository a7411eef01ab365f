"""The trial channel between a worker and the orchestrator (transports and shared logic)."""

from __future__ import annotations

from sweeper.channel._base import ChannelClosed, Transport, TrialChannel
from sweeper.channel._messages import Call, Reply

__all__ = ["Call", "ChannelClosed", "Reply", "Transport", "TrialChannel"]
