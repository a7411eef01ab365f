"""The messages of the trial channel: calls on the orchestrator's live trial, and replies."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True, slots=True)
class Call:
    """A method call on the orchestrator's live ``optuna.Trial`` (or its study).

    ``seq`` numbers the calls of one attempt at a trial from 1, so the orchestrator knows when
    it has seen them all. ``attempt`` tells attempts apart: 0 where a trial runs once (local
    workers); on Modal a worker picks a random number and announces it with a ``started``
    call, after which calls of an older attempt (a preempted container) are dropped.
    """

    number: int
    seq: int
    method: str
    args: tuple[Any, ...] = ()
    kwargs: dict[str, Any] = field(default_factory=dict)
    wants_reply: bool = False
    attempt: int = 0

    def __reduce__(self) -> tuple[Any, ...]:
        # Faster than dataclasses' generic slots pickling, on the hot path of every trial.
        return (self.__class__, tuple(getattr(self, name) for name in self.__slots__))


@dataclass(frozen=True, slots=True)
class Reply:
    """The answer to a :class:`Call` that asked for one."""

    number: int
    seq: int
    value: Any = None
    error: BaseException | None = None
    attempt: int = 0

    def __reduce__(self) -> tuple[Any, ...]:
        # Faster than dataclasses' generic slots pickling, on the hot path of every trial.
        return (self.__class__, tuple(getattr(self, name) for name in self.__slots__))
