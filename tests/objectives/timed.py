"""Each trial records when it ran, in the folder named by TIMED_DIR, then sleeps."""

import json
import os
import time


def objective(trial):
    duration = trial.suggest_float("duration", 0.2, 0.6)
    start = time.time()
    folder = os.environ["TIMED_DIR"]
    time.sleep(duration)
    with open(os.path.join(folder, f"{trial.number}.json"), "w") as file:
        json.dump({"start": start, "end": time.time(), "pid": os.getpid()}, file)
    return duration
