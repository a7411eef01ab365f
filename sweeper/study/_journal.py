"""Optuna's journal storage, with the one scan that made long sweeps slow down made incremental.

``Study.ask`` looks for enqueued (WAITING) trials on every call, and Optuna's journal storage
answers by walking every trial of the study, so each ask costs O(trials so far): at 10,000
trials that walk was most of sweeper's per-trial time (see BENCHMARKS.md, growth). A trial is
WAITING from its creation until it is first popped, and Optuna's API never makes it WAITING
again, so the walk can start at the oldest trial that was still WAITING the last time: the
remedy Optuna applied to its in-memory storage (optuna/optuna#5993), not yet to the journal.

It reads two fields of the journal's replay result. Were a future Optuna to rename them, the
storage falls back to Optuna's own walk (correct, only slower); a test checks the fast path is
the one taken with the installed Optuna.
"""

from __future__ import annotations

import copy
from collections.abc import Container, Sequence
from typing import Any

from optuna.storages.journal import BaseJournalBackend, JournalStorage
from optuna.trial import FrozenTrial, TrialState


class SweeperJournalStorage(JournalStorage):
    def __init__(self, backend: BaseJournalBackend) -> None:
        super().__init__(backend)
        self._waiting_from: dict[int, int] = {}
        """Per study: the position of the first trial that may still be WAITING."""

    def fast_waiting_scan(self) -> bool:
        """Whether the installed Optuna has the fields the incremental scan reads."""
        replay = getattr(self, "_replay_result", None)
        return isinstance(getattr(replay, "_study_id_to_trial_ids", None), dict) and isinstance(
            getattr(replay, "_trials", None), dict
        )

    def get_all_trials(
        self,
        study_id: int,
        deepcopy: bool = True,
        states: Container[TrialState] | None = None,
    ) -> list[FrozenTrial]:
        if states != (TrialState.WAITING,) or not self.fast_waiting_scan():
            return super().get_all_trials(study_id, deepcopy=deepcopy, states=states)
        with self._thread_lock:
            self._sync_with_backend()
            replay: Any = self._replay_result
            trial_ids: list[int] | None = replay._study_id_to_trial_ids.get(study_id)
            if trial_ids is not None:
                waiting = self._waiting(study_id, trial_ids, replay._trials)
        if trial_ids is None:  # no such study: let Optuna raise its own error
            return super().get_all_trials(study_id, deepcopy=deepcopy, states=states)
        return copy.deepcopy(waiting) if deepcopy else waiting

    def _waiting(
        self, study_id: int, trial_ids: list[int], trials: dict[int, FrozenTrial]
    ) -> list[FrozenTrial]:
        waiting = []
        first_waiting = len(trial_ids)
        for position in range(self._waiting_from.get(study_id, 0), len(trial_ids)):
            trial = trials[trial_ids[position]]
            if trial.state == TrialState.WAITING:
                first_waiting = min(first_waiting, position)
                waiting.append(trial)
        self._waiting_from[study_id] = first_waiting
        return waiting

    def set_trial_state_values(
        self, trial_id: int, state: TrialState, values: Sequence[float] | None = None
    ) -> bool:
        if state == TrialState.WAITING:  # not done by Optuna's API; rescan from the start
            self._waiting_from.clear()
        return super().set_trial_state_values(trial_id, state, values)
