"""Two objectives at once with NSGA-II, in the style of Optuna's multi-objective tutorial.

Imitates "Multi-objective Optimization with Optuna" (and ``examples/multi_objective/``): the
objective returns a model's size and its accuracy, the study has one direction per value,
NSGA-II samples, and the Pareto front is printed with ``study.best_trials``. A decision tree
on the bundled breast-cancer data replaces the tutorial's network on FashionMNIST.
"""

import optuna
import sklearn.datasets
import sklearn.model_selection
import sklearn.tree

X, y = sklearn.datasets.load_breast_cancer(return_X_y=True)


def objective(trial):
    max_depth = trial.suggest_int("max_depth", 1, 12)
    min_samples_leaf = trial.suggest_int("min_samples_leaf", 1, 50)
    criterion = trial.suggest_categorical("criterion", ["gini", "entropy"])
    tree = sklearn.tree.DecisionTreeClassifier(
        max_depth=max_depth, min_samples_leaf=min_samples_leaf, criterion=criterion
    )
    accuracy = sklearn.model_selection.cross_val_score(tree, X, y, cv=3).mean()
    n_leaves = tree.fit(X, y).get_n_leaves()
    return n_leaves, accuracy


if __name__ == "__main__":
    study = optuna.create_study(
        directions=["minimize", "maximize"],
        sampler=optuna.samplers.NSGAIISampler(population_size=10, seed=0),
    )
    study.optimize(objective, n_trials=30)

    print("Number of finished trials: ", len(study.trials))
    print("Pareto front:")
    for trial in sorted(study.best_trials, key=lambda t: t.values[0]):
        print(f"  trial {trial.number}: leaves={trial.values[0]}, accuracy={trial.values[1]:.4f}")
