"""The journal storage sweeper opens: Optuna's, with the scan for enqueued trials incremental."""

from __future__ import annotations

import random
from pathlib import Path
from typing import Any

import optuna
from optuna.storages.journal import JournalFileBackend, JournalStorage
from optuna.trial import TrialState

from sweeper.study._journal import SweeperJournalStorage
from sweeper.study._storage import open_storage


class CountingDict(dict[int, Any]):
    """The replay's trials, counting how many the scan looks at."""

    looked_at = 0

    def __getitem__(self, key: int) -> Any:
        CountingDict.looked_at += 1
        return super().__getitem__(key)


def test_sweeper_opens_its_own_journal_storage_and_the_fast_scan_is_active(tmp_path: Path) -> None:
    storage = open_storage(str(tmp_path / "j.journal")).storage
    assert isinstance(storage, SweeperJournalStorage)
    # If an Optuna upgrade renames what the scan reads, this fails here, not silently slow.
    assert storage.fast_waiting_scan()


def test_ask_looks_at_the_new_trials_only_not_all_of_them(tmp_path: Path) -> None:
    storage = SweeperJournalStorage(JournalFileBackend(str(tmp_path / "j.journal")))
    study = optuna.create_study(storage=storage, sampler=optuna.samplers.RandomSampler(seed=0))
    replay: Any = storage._replay_result
    replay._trials = CountingDict(replay._trials)

    def looked_at_by_ask() -> int:
        CountingDict.looked_at = 0
        trial = study.ask()
        study.tell(trial, trial.suggest_float("x", 0, 1))
        return CountingDict.looked_at

    early = [looked_at_by_ask() for _ in range(50)]
    for _ in range(1000):
        looked_at_by_ask()
    late = [looked_at_by_ask() for _ in range(50)]
    assert max(late) <= max(early) < 50  # Optuna's own walk looks at all 1000+


def test_waiting_trials_are_the_same_as_optunas_own_scan(tmp_path: Path) -> None:
    """Random asks, tells and enqueues, some through a second storage on the same file (as
    another process would): sweeper's storage pops exactly what Optuna's would."""
    journal = str(tmp_path / "j.journal")
    ours = SweeperJournalStorage(JournalFileBackend(journal))
    study = optuna.create_study(storage=ours, study_name="s")
    other = optuna.load_study(study_name="s", storage=JournalStorage(JournalFileBackend(journal)))
    plain = JournalStorage(JournalFileBackend(journal))
    study_id = ours.get_study_id_from_name("s")
    rng = random.Random(0)
    running: list[optuna.Trial] = []
    popped = 0
    for step in range(400):
        choice = rng.random()
        if choice < 0.25:
            (study if rng.random() < 0.5 else other).enqueue_trial({"x": step})
        elif choice < 0.6 or not running:
            trial = study.ask()
            popped += "fixed_params" in ours.get_trial(trial._trial_id).system_attrs
            running.append(trial)
        else:
            trial = running.pop(rng.randrange(len(running)))
            if rng.random() < 0.8:
                study.tell(trial, 0.0)
            else:
                study.tell(trial, state=TrialState.FAIL)
        expected = [t.number for t in plain.get_all_trials(study_id, states=(TrialState.WAITING,))]
        got = [t.number for t in ours.get_all_trials(study_id, states=(TrialState.WAITING,))]
        assert got == expected, step
    assert popped > 20  # enqueued trials were in fact handed out by ask
