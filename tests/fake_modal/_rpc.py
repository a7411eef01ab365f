"""What the fake server records: one :class:`Rpc` per request, in arrival order."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

from google.protobuf.message import Message

CLIENT = "client"
"""The peer name of the local client (the process that runs the App)."""


@dataclass
class Rpc:
    """One request the server received.

    ``peer`` is :data:`CLIENT` for the local client and the task id (``ta-...``) for a
    container; each container reaches the server on a socket of its own, so the server
    knows who sent what without trusting the request.
    """

    name: str
    request: Message
    peer: str
    at: float = field(default_factory=time.monotonic)
    dropped: bool = False
    """The request arrived from a container that a fault killed at that moment: it had no
    effect, as if it never left the dead container."""
    abandoned: bool = False
    """The sender cancelled it before the answer went out (a long poll it stopped)."""
    injected: Exception | None = None
    """The error a fault answers it with."""
    problems: list[str] = field(default_factory=list)
    """Why the request is not one Modal's server would accept (see ``FakeModal.invalid``)."""

    @property
    def from_container(self) -> bool:
        return self.peer != CLIENT

    def __repr__(self) -> str:
        text = str(self.request).replace("\n", " ")[:200]
        return f"Rpc({self.name} from {self.peer}: {text})"


def summary(rpcs: list[Rpc]) -> dict[str, int]:
    """How many requests of each name."""
    counts: dict[str, int] = {}
    for rpc in rpcs:
        counts[rpc.name] = counts.get(rpc.name, 0) + 1
    return counts


def field_or(message: Message, name: str, default: Any = None) -> Any:
    """A message field, or ``default`` when the field is unset (for optional fields)."""
    try:
        if message.HasField(name):
            return getattr(message, name)
    except ValueError:  # a scalar without presence: always "set"
        return getattr(message, name)
    return default
