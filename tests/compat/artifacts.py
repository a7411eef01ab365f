"""Files a trial makes, uploaded to an artifact store.

Imitates the "Artifact Tutorial" of Optuna's documentation: a ``FileSystemArtifactStore``
built at module level, ``optuna.artifacts.upload_artifact(study_or_trial=trial, ...)`` in
the objective, the artifact's id kept in a user attribute, and the best trial's file
downloaded again at the end.
"""

import json
import os
import tempfile

import optuna
from optuna.artifacts import FileSystemArtifactStore, download_artifact, upload_artifact

base_path = "./artifacts"
os.makedirs(base_path, exist_ok=True)
artifact_store = FileSystemArtifactStore(base_path=base_path)


def objective(trial):
    x = trial.suggest_float("x", -10, 10)
    y = trial.suggest_int("y", -3, 3)
    value = (x - 2) ** 2 + y**2

    # Creating and writing an artifact.
    with tempfile.TemporaryDirectory() as tmpdir:
        file_path = os.path.join(tmpdir, f"result-{trial.number}.json")
        with open(file_path, "w") as f:
            json.dump({"number": trial.number, "x": x, "y": y, "value": value}, f)
        artifact_id = upload_artifact(
            artifact_store=artifact_store,
            file_path=file_path,
            study_or_trial=trial,
        )  # The return value is the artifact ID.
    trial.set_user_attr("artifact_id", artifact_id)
    return value


if __name__ == "__main__":
    study = optuna.create_study()
    study.optimize(objective, n_trials=20)

    best_artifact_id = study.best_trial.user_attrs["artifact_id"]
    download_artifact(
        artifact_store=artifact_store, file_path="best_result.json", artifact_id=best_artifact_id
    )
    with open("best_result.json") as f:
        print("Best trial's artifact:", f.read())
