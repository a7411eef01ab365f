"""Tune a small PyTorch network, and stop unpromising trials early (pruning).

    python -m sweeper run objectives/mlp.py --n-trials 40 --parallel 4

The data is made here, so nothing is downloaded: two interleaved spirals, a classic task
that a linear model cannot solve and a small multi-layer perceptron can. The objective trains
a network whose depth, width, dropout and optimizer are chosen by the trial, and reports the
validation accuracy after every epoch. The study's pruner (the median pruner here) compares
that curve with earlier trials' at the same epoch and stops trials that fall behind, so the
sweep spends its time on promising settings.

Each worker process imports this file once: the data below is made once per worker, not
once per trial. On a machine with GPUs, each worker sees one GPU (sweeper sets
CUDA_VISIBLE_DEVICES), and the model trains there.
"""

import math

import optuna
import torch
from torch import nn

SWEEP = {
    "direction": "maximize",
    "n_trials": 40,
    "pruner": "median",
    "pruner_args": {"n_startup_trials": 5, "n_warmup_steps": 3},
}

DEVICE = torch.device("cuda" if torch.cuda.is_available() else "cpu")
EPOCHS = 20
BATCH_SIZE = 128


def make_spirals(n: int, noise: float, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Two spirals wound around each other; the label says which spiral a point is on."""
    generator = torch.Generator().manual_seed(seed)
    label = torch.randint(0, 2, (n,), generator=generator)
    radius = torch.rand(n, generator=generator) * 3.0 + 0.2
    angle = radius * 2.2 + label * math.pi
    points = torch.stack([radius * torch.cos(angle), radius * torch.sin(angle)], dim=1)
    points += noise * torch.randn(n, 2, generator=generator)
    return points, label


# Noisy enough that the spirals overlap: a good network reaches about 96% accuracy, a poor
# one stays near 87%, and telling them apart early is what pruning is for.
X_TRAIN, Y_TRAIN = make_spirals(4000, noise=0.3, seed=0)
X_VALID, Y_VALID = make_spirals(1000, noise=0.3, seed=1)
X_TRAIN, Y_TRAIN, X_VALID, Y_VALID = (t.to(DEVICE) for t in (X_TRAIN, Y_TRAIN, X_VALID, Y_VALID))


def define_model(trial: optuna.Trial) -> nn.Module:
    n_layers = trial.suggest_int("n_layers", 1, 3)
    width = trial.suggest_int("width", 8, 128, log=True)
    dropout = trial.suggest_float("dropout", 0.0, 0.3)
    layers: list[nn.Module] = []
    features = 2
    for _ in range(n_layers):
        layers += [nn.Linear(features, width), nn.ReLU(), nn.Dropout(dropout)]
        features = width
    layers.append(nn.Linear(features, 2))
    return nn.Sequential(*layers).to(DEVICE)


def objective(trial: optuna.Trial) -> float:
    torch.manual_seed(trial.number)
    model = define_model(trial)
    optimizer_name = trial.suggest_categorical("optimizer", ["Adam", "SGD"])
    lr = trial.suggest_float("lr", 1e-4, 1e-1, log=True)
    if optimizer_name == "SGD":
        momentum = trial.suggest_float("momentum", 0.5, 0.99)
        optimizer: torch.optim.Optimizer = torch.optim.SGD(
            model.parameters(), lr=lr, momentum=momentum
        )
    else:
        optimizer = torch.optim.Adam(model.parameters(), lr=lr)
    loss_fn = nn.CrossEntropyLoss()

    accuracy = 0.0
    for epoch in range(EPOCHS):
        model.train()
        order = torch.randperm(len(X_TRAIN), device=DEVICE)
        for start in range(0, len(order), BATCH_SIZE):
            batch = order[start : start + BATCH_SIZE]
            optimizer.zero_grad()
            loss = loss_fn(model(X_TRAIN[batch]), Y_TRAIN[batch])
            loss.backward()
            optimizer.step()

        model.eval()
        with torch.no_grad():
            accuracy = (model(X_VALID).argmax(dim=1) == Y_VALID).float().mean().item()

        # Report the learning curve; the pruner decides on the orchestrator.
        trial.report(accuracy, epoch)
        if trial.should_prune():
            raise optuna.TrialPruned()

    trial.set_user_attr("device", str(DEVICE))
    return accuracy


if __name__ == "__main__":
    study = optuna.create_study(direction="maximize")
    study.optimize(objective, n_trials=20)
    print(study.best_value, study.best_params)
