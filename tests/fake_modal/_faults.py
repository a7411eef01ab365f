"""What goes wrong, and when: injected where Modal itself would produce it.

A :class:`Fault` picks inputs (``match``) and a moment: ``after`` seconds into an input's run
in a container, or ``on`` a request that container sends while it runs the input (that
request is dropped: it never arrives). Kinds:

- ``"preempt"``: the container is killed and Modal runs the same input again on another
  container (same input id and retry count); the client sees nothing of it.
- ``"crash"``: the container is killed (``SIGKILL``, as the out-of-memory killer does); the
  input fails with ``Runner failed with exit code: 137`` and no exception data, which the
  client raises as ``RemoteError`` (or retries, under ``modal.Retries``).
- ``"timeout"``: the input hits the function's timeout now: it fails with Modal's
  ``Task's current input ... hit its timeout of Ns`` (``FunctionTimeoutError``) and its
  container is stopped.
- ``"error"``: the request that ``on`` picks is answered with a gRPC error (``status``),
  whoever sent it; ``match`` is not used.

Other faults are settings: ``failing_builds`` (image builds that fail) here, and missing
secrets are simply secrets the server was not given (``FakeModal(secrets=...)``).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal

from grpclib import Status
from modal_proto import api_pb2

from fake_modal._rpc import Rpc

if TYPE_CHECKING:
    from fake_modal._functions import InputView, Running

Kind = Literal["preempt", "crash", "timeout", "error"]


def everything(view: InputView) -> bool:
    return True


@dataclass
class Fault:
    kind: Kind
    match: Callable[[InputView], bool] = everything
    after: float | None = None
    """Seconds after the input starts in a container (0 when neither this nor ``on``)."""
    on: Callable[[Rpc, Running | None], bool] | None = None
    """A request that triggers the fault: it gets the request and the run of the input it
    belongs to (``None`` for requests not from a container running an input)."""
    times: int = 1
    """How many times the fault fires at most."""
    status: Status = Status.UNAVAILABLE
    message: str = "injected by the fake Modal server"
    fired: list[str] = field(default_factory=list)
    """The input ids (or RPC names, for ``"error"``) it fired on."""

    @property
    def spent(self) -> bool:
        return len(self.fired) >= self.times


@dataclass
class Faults:
    """The faults of one server; tests append to ``rules`` at any time."""

    rules: list[Fault] = field(default_factory=list)
    failing_builds: list[str] = field(default_factory=list)
    """Image builds whose Dockerfile has a command containing one of these fail at that step."""

    def add(self, kind: Kind, **options: Any) -> Fault:
        fault = Fault(kind, **options)
        self.rules.append(fault)
        return fault

    def failing_build(self, image: api_pb2.Image) -> str | None:
        for text in self.failing_builds:
            if any(text in command for command in image.dockerfile_commands):
                return text
        return None
