"""Objectives for the backend contract suite (importable, so workers load them by name)."""

from __future__ import annotations

import json
import math
import os
import time
from pathlib import Path

import optuna

import sweeper


def quadratic(trial):
    x = trial.suggest_float("x", -5, 5)
    kind = trial.suggest_categorical("kind", ["plain", "shifted"])
    shift = trial.suggest_int("shift", 1, 3) if kind == "shifted" else 0
    return (x - 1) ** 2 + shift


def timed(trial):
    """Sleeps, and records when it ran in the folder CONTRACT_DIR."""
    duration = trial.suggest_float("duration", 0.2, 0.5)
    start = time.time()
    time.sleep(duration)
    record = {"start": start, "end": time.time(), "number": trial.number}
    Path(os.environ["CONTRACT_DIR"], f"{trial.number}.json").write_text(json.dumps(record))
    return duration


def modes(trial):
    mode = trial.suggest_categorical(
        "mode", ["ok", "raise", "nan", "none", "pair", "sleep", "prune", "text"]
    )
    if mode == "raise":
        raise ValueError(f"bad value in trial {trial.number}")
    if mode == "nan":
        return math.nan
    if mode == "none":
        return None
    if mode == "pair":
        return 1.0, 2.0
    if mode == "sleep":
        time.sleep(4)
    if mode == "text":
        return "fast"
    if mode == "prune":
        trial.report(0.5, 0)
        raise optuna.TrialPruned()
    return 1.0


def learning(trial):
    """Reports a learning curve; trials with a small rate learn slowly and get pruned."""
    rate = trial.suggest_float("rate", 0.01, 0.3, log=True)
    score = 0.0
    for step in range(12):
        score += (1 - score) * rate
        trial.report(score, step)
        sweeper.log({"score_squared": score * score}, step=step)
        time.sleep(0.01)
        if trial.should_prune():
            raise optuna.TrialPruned()
    return score


def two_objectives(trial):
    x = trial.suggest_float("x", 0, 2)
    return x**2, (x - 2) ** 2


def resumable(trial):
    """Counts its own starts in its checkpoint folder, and reports a step a second."""
    folder = trial.checkpoint_dir
    starts = folder / "starts"
    count = int(starts.read_text()) + 1 if starts.exists() else 1
    starts.write_text(str(count))
    trial.commit_checkpoint()
    x = trial.suggest_float("x", 0, 1)
    for step in range(4):
        trial.report(x + step, step)
        time.sleep(0.2)
    trial.set_user_attr("starts", count)
    return x
