"""A small PyTorch training loop that reports every epoch and prunes.

Imitates ``examples/pytorch/pytorch_simple.py``: the number of layers, their widths and
dropout, the optimizer and its learning rate are suggested define-by-run; each epoch the
validation accuracy goes to ``trial.report`` and ``trial.should_prune`` may stop the trial.
scikit-learn's bundled digits stand in for FashionMNIST (nothing is downloaded), and the
study uses a ``HyperbandPruner`` over the five epochs.
"""

import optuna
import sklearn.datasets
import torch
import torch.nn as nn
import torch.nn.functional as F
from sklearn.model_selection import train_test_split

DEVICE = torch.device("cpu")
BATCHSIZE = 128
CLASSES = 10
EPOCHS = 5

digits = sklearn.datasets.load_digits()
X_train, X_valid, y_train, y_valid = train_test_split(
    digits.data / 16.0, digits.target, test_size=0.25, random_state=0
)
X_train = torch.tensor(X_train, dtype=torch.float32)
X_valid = torch.tensor(X_valid, dtype=torch.float32)
y_train = torch.tensor(y_train)
y_valid = torch.tensor(y_valid)


def define_model(trial):
    # We optimize the number of layers, hidden units and dropout ratio in each layer.
    n_layers = trial.suggest_int("n_layers", 1, 3)
    layers = []

    in_features = 64
    for i in range(n_layers):
        out_features = trial.suggest_int(f"n_units_l{i}", 4, 128)
        layers.append(nn.Linear(in_features, out_features))
        layers.append(nn.ReLU())
        p = trial.suggest_float(f"dropout_l{i}", 0.2, 0.5)
        layers.append(nn.Dropout(p))

        in_features = out_features
    layers.append(nn.Linear(in_features, CLASSES))
    layers.append(nn.LogSoftmax(dim=1))

    return nn.Sequential(*layers)


def objective(trial):
    # Generate the model.
    model = define_model(trial).to(DEVICE)

    # Generate the optimizers.
    optimizer_name = trial.suggest_categorical("optimizer", ["Adam", "RMSprop", "SGD"])
    lr = trial.suggest_float("lr", 1e-5, 1e-1, log=True)
    optimizer = getattr(torch.optim, optimizer_name)(model.parameters(), lr=lr)

    # Training of the model.
    for epoch in range(EPOCHS):
        model.train()
        permutation = torch.randperm(len(X_train))
        for start in range(0, len(X_train), BATCHSIZE):
            index = permutation[start : start + BATCHSIZE]
            data, target = X_train[index].to(DEVICE), y_train[index].to(DEVICE)

            optimizer.zero_grad()
            output = model(data)
            loss = F.nll_loss(output, target)
            loss.backward()
            optimizer.step()

        # Validation of the model.
        model.eval()
        with torch.no_grad():
            pred = model(X_valid.to(DEVICE)).argmax(dim=1)
            accuracy = (pred == y_valid.to(DEVICE)).float().mean().item()

        trial.report(accuracy, epoch)

        # Handle pruning based on the intermediate value.
        if trial.should_prune():
            raise optuna.exceptions.TrialPruned()

    return accuracy


if __name__ == "__main__":
    study = optuna.create_study(
        direction="maximize",
        pruner=optuna.pruners.HyperbandPruner(min_resource=1, max_resource=EPOCHS),
    )
    study.optimize(objective, n_trials=20, timeout=600)

    pruned_trials = study.get_trials(deepcopy=False, states=[optuna.trial.TrialState.PRUNED])
    complete_trials = study.get_trials(deepcopy=False, states=[optuna.trial.TrialState.COMPLETE])

    print("Study statistics: ")
    print("  Number of finished trials: ", len(study.trials))
    print("  Number of pruned trials: ", len(pruned_trials))
    print("  Number of complete trials: ", len(complete_trials))

    print("Best trial:")
    trial = study.best_trial
    print("  Value: ", trial.value)
    print("  Params: ")
    for key, value in trial.params.items():
        print(f"    {key}: {value}")
