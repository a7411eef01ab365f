"""Reports, logs metrics from a helper with sweeper.log, and fails or prunes on demand."""

import optuna

import sweeper


def train_step(step, lr):
    loss = 1.0 / (1.0 + step * lr)
    sweeper.log({"loss": loss}, step=step)  # code that has no trial at hand
    return loss


def objective(trial):
    lr = trial.suggest_float("lr", 0.1, 1.0)
    mode = trial.suggest_categorical("mode", ["ok", "fail", "prune_now"])
    if mode == "prune_now":
        raise optuna.TrialPruned()  # pruned before any report
    if mode == "fail":
        raise RuntimeError("tracked failure")
    loss = 1.0
    for step in range(5):
        loss = train_step(step, lr)
        trial.log({"accuracy": 1.0 - loss}, step=step, context={"subset": "valid"})
        trial.report(loss, step)
    return loss
