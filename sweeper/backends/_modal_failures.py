"""What a trial's Modal call failing means, in words for the user: a container that died
(and of what signal), Modal's timeout, an exception raised in the container outside the
objective, or a client that cannot use Modal at all."""

from __future__ import annotations

import re
import traceback
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class Failure:
    """What a trial's call failed with, in words for the user."""

    reason: str
    traceback: str | None = None
    retry: bool = True
    """Whether ``--retries`` runs the trial again after it (not after Modal's timeout: a
    trial that ran out its time would run it out again, at the same cost)."""


_EXIT_CODE = re.compile(r"exit code:?\s*(-?\d+)", re.IGNORECASE)
_SIGNALS = {
    6: "aborted (exit code {code}, SIGABRT)",
    9: "was killed (exit code {code}, SIGKILL), most often for running out of memory: give "
    "it more with --memory",
    11: "crashed (exit code {code}, SIGSEGV: a segmentation fault)",
    15: "was terminated (exit code {code}, SIGTERM)",
}


def describe_failure(error: BaseException) -> Failure:
    """What a trial's call failing with ``error`` means, for the user."""
    import modal.exception

    text = str(error).strip()
    first = text.splitlines()[0] if text else ""
    if isinstance(error, modal.exception.FunctionTimeoutError):
        return Failure(
            "Modal stopped it at run_trial's timeout (give it more with --trial-timeout) "
            f"[{type(error).__name__}: {first}]",
            retry=False,
        )
    if isinstance(error, modal.exception.RemoteError):
        match = _EXIT_CODE.search(text)
        if match is not None:
            code = int(match.group(1))
            signal = code - 128 if code > 128 else -code if code < 0 else 0
            if signal:
                what = _SIGNALS.get(signal, f"was killed (exit code {{code}}, signal {signal})")
            else:
                what = "exited with code {code} (the objective, or a library it uses, ended it)"
            return Failure(f"its Modal container {what.format(code=code)} [RemoteError: {first}]")
        return Failure(f"Modal lost its container [RemoteError: {first}]")
    if isinstance(error, modal.exception.Error):
        return Failure(f"Modal lost its container [{type(error).__name__}: {first}]")
    # Anything else was raised in the container by sweeper's run_trial (or what it needs to
    # import), outside the objective: Modal sends it with the container's traceback.
    trace = "".join(traceback.format_exception(error))
    return Failure(
        f"run_trial raised {one_line(error)} in its Modal container (outside the objective)",
        traceback=trace,
    )


def is_session_error(error: Any) -> bool:
    """Whether ``error`` says the client cannot use Modal at all (not a trial's failure)."""
    if not isinstance(error, BaseException):
        return False
    try:
        import modal.exception
    except ImportError:  # pragma: no cover - the backend needs modal
        return False
    return isinstance(
        error,
        (
            modal.exception.AuthError,
            modal.exception.ClientClosed,
            modal.exception.ConnectionError,
        ),
    )


def failure_text(reason: str | None, trace: str | None) -> str:
    text = reason or "failed"
    return f"{text}\n{trace.rstrip()}" if trace else text


def one_line(error: BaseException) -> str:
    text = str(error).strip().splitlines()
    return f"{type(error).__name__}: {text[0]}" if text else type(error).__name__


def describe_session_error(error: BaseException) -> str:
    try:
        import modal.exception

        if isinstance(error, modal.exception.AuthError):
            return (
                "Modal refused the credentials here. Run `modal setup` (or set MODAL_TOKEN_ID "
                "and MODAL_TOKEN_SECRET) and try again."
            )
    except ImportError:
        pass
    return f"the Modal app could not run: {one_line(error)}"
