"""One objective, many ways for a trial to end. Tests enqueue the `mode` they want."""

import ctypes
import os
import signal
import sys
import time

import optuna

MODES = [
    "ok",
    "raise",
    "exit",
    "segfault",
    "killed",
    "nan",
    "pair",
    "sleep",
    "none",
    "text",
    "sysexit",
    "prune",
]


def objective(trial):
    mode = trial.suggest_categorical("mode", MODES)
    print(f"trial {trial.number} runs mode {mode}")
    print(f"to stderr from trial {trial.number}", file=sys.stderr)
    if mode == "raise":
        raise ValueError(f"bad value in trial {trial.number}")
    if mode == "exit":
        os._exit(3)
    if mode == "segfault":
        ctypes.string_at(0)
    if mode == "killed":
        os.kill(os.getpid(), signal.SIGKILL)  # what the kernel's out-of-memory killer sends
    if mode == "nan":
        return float("nan")
    if mode == "pair":
        return 1.0, 2.0
    if mode == "sleep":
        time.sleep(60)
    if mode == "none":
        return None
    if mode == "text":
        return "fast"
    if mode == "sysexit":
        sys.exit(4)
    if mode == "prune":
        trial.report(1.0, 0)
        raise optuna.TrialPruned("asked to")
    return 1.0
