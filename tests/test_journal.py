"""The journal storage sweeper opens: Optuna's, with the scan for enqueued trials incremental,
and a journal file that sets a torn last record aside before it appends and names a damaged one.
"""

from __future__ import annotations

import logging
import random
import threading
import time
from pathlib import Path
from typing import Any

import optuna
import pytest
from conftest import Project
from optuna.storages.journal import JournalFileBackend, JournalFileSymlinkLock, JournalStorage
from optuna.trial import TrialState

from sweeper._errors import StorageError
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


# A torn tail (the last record cut off mid-write) and damaged records.

GOOD = "def objective(trial):\n    return trial.suggest_float('x', 0, 1)\n"


def _trials(storage: Any, name: str = "s") -> list[tuple[Any, ...]]:
    study = optuna.load_study(study_name=name, storage=storage)
    return [(t.number, t.state, t.values, t.params) for t in study.get_trials(deepcopy=False)]


def _write_journal(path: Path, n_trials: int = 4) -> bytes:
    """A real journal: a study and some trials written by Optuna on the journal storage."""
    study = optuna.create_study(
        study_name="s",
        storage=JournalStorage(JournalFileBackend(str(path))),
        sampler=optuna.samplers.RandomSampler(seed=0),
    )
    study.optimize(lambda trial: trial.suggest_float("x", 0, 1), n_trials=n_trials)
    return path.read_bytes()


def _side_files(folder: Path) -> list[Path]:
    return sorted(folder.glob("*.torn-*"))


def test_optunas_reader_skips_a_last_line_without_its_newline(tmp_path: Path) -> None:
    """What the cut relies on: no reader ever used the torn bytes, nor a position past them."""
    data = _write_journal(tmp_path / "j.journal")
    lines = data.splitlines(keepends=True)
    (tmp_path / "j.journal").write_bytes(data[:-5])
    backend = JournalFileBackend(str(tmp_path / "j.journal"))
    assert len(list(backend.read_logs(0))) == len(lines) - 1


def test_a_journal_torn_at_every_byte_of_its_last_record_is_cut_and_goes_on(
    tmp_path: Path,
) -> None:
    source = tmp_path / "source.journal"
    data = _write_journal(source)
    last_start = data.rindex(b"\n", 0, len(data) - 1) + 1
    last = data[last_start:]
    reference = tmp_path / "reference.journal"
    reference.write_bytes(data[:last_start])
    without_last = _trials(JournalStorage(JournalFileBackend(str(reference))))
    with_last = _trials(JournalStorage(JournalFileBackend(str(source))))
    assert without_last != with_last  # the last record matters: it finishes the last trial

    for cut in range(len(last) + 1):
        folder = tmp_path / f"cut-{cut}"
        folder.mkdir()
        journal = folder / "j.journal"
        journal.write_bytes(data[: last_start + cut])
        opened = open_storage(str(journal))
        torn = 0 < cut < len(last)
        sides = _side_files(folder)
        if torn:
            assert [side.read_bytes() for side in sides] == [last[:cut]], cut
            assert journal.read_bytes() == data[:last_start], cut
            (note,) = opened.notes
            assert f"{journal} ended in a record cut off mid-write" in note
            assert f"{cut} bytes" in note and sides[0].name in note, note
        else:
            assert sides == [] and opened.notes == (), cut
        assert _trials(opened.storage) == (with_last if cut == len(last) else without_last), cut

        study = optuna.load_study(study_name="s", storage=opened.storage)
        trial = study.ask()
        study.tell(trial, trial.suggest_float("x", 0, 1))
        # Read back by plain Optuna from the file: every record parses, the new trial is there.
        again = _trials(JournalStorage(JournalFileBackend(str(journal))))
        assert again == _trials(opened.storage), cut
        assert again[-1][:2] == (trial.number, TrialState.COMPLETE), cut


def test_a_tear_while_the_journal_is_open_is_cut_before_the_next_append(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """Another process's write cut short during a sweep: this sweep does not append after it."""
    journal = tmp_path / "j.journal"
    _write_journal(journal)
    opened = open_storage(str(journal))
    study = optuna.load_study(study_name="s", storage=opened.storage)
    with journal.open("ab") as file:
        file.write(b'{"op_code":4,"worker_id":"another-pro')
    with caplog.at_level(logging.WARNING, logger="sweeper"):
        trial = study.ask()
        study.tell(trial, 0.5)
    (side,) = _side_files(tmp_path)
    assert side.read_bytes() == b'{"op_code":4,"worker_id":"another-pro'
    assert any("cut off mid-write" in r.getMessage() for r in caplog.records)
    assert _trials(JournalStorage(JournalFileBackend(str(journal))))[-1][:3] == (
        trial.number,
        TrialState.COMPLETE,
        [0.5],
    )


def test_a_record_being_appended_under_the_lock_is_not_cut(tmp_path: Path) -> None:
    """A sweep opening the journal while another one is mid-append waits for the lock, and then
    finds the record complete: the cut is decided under the lock, never on a half-written line."""
    journal = tmp_path / "j.journal"
    data = _write_journal(journal)
    record = b'{"op_code":3,"worker_id":"w","study_id":0,"system_attr":{"k":1}}\n'
    lock = JournalFileSymlinkLock(str(journal))
    lock.acquire()
    with journal.open("ab") as file:
        file.write(record[:20])
    opened: list[Any] = []
    opener = threading.Thread(target=lambda: opened.append(open_storage(str(journal))))
    opener.start()
    time.sleep(0.5)
    assert not opened  # waiting for the lock
    with journal.open("ab") as file:
        file.write(record[20:])
    lock.release()
    opener.join(timeout=30)
    assert opened and opened[0].notes == ()
    assert _side_files(tmp_path) == []
    assert journal.read_bytes() == data + record


def test_a_side_file_never_replaces_an_earlier_one(tmp_path: Path) -> None:
    journal = tmp_path / "j.journal"
    data = _write_journal(journal)
    now = time.time()
    earlier = [
        tmp_path / f"j.journal.torn-{time.strftime('%Y%m%d-%H%M%S', time.localtime(now + s))}"
        for s in range(4)
    ]
    for path in earlier:
        path.write_bytes(b"earlier")
    journal.write_bytes(data + b'{"op_co')
    open_storage(str(journal))
    journal.write_bytes(journal.read_bytes() + b'{"op_code":')
    open_storage(str(journal))
    assert all(path.read_bytes() == b"earlier" for path in earlier)
    new = {p.read_bytes() for p in _side_files(tmp_path) if p not in earlier}
    assert new == {b'{"op_co', b'{"op_code":'}


DAMAGE = {
    "not JSON": b'{"op_code":5,"worker_id":"w","trial_id":0,"par',
    "not a record": b"[1, 2]",
    "zeros": b"\0" * 40,
    "not UTF-8": b'{"op_code":\xff}',
}


@pytest.mark.parametrize("where", ["middle", "last"])
@pytest.mark.parametrize("damage", list(DAMAGE))
def test_a_damaged_record_stops_with_its_line_and_the_file_unchanged(
    tmp_path: Path, damage: str, where: str
) -> None:
    journal = tmp_path / "j.journal"
    lines = _write_journal(journal).splitlines(keepends=True)
    at = len(lines) // 2 if where == "middle" else len(lines) - 1
    lines[at] = DAMAGE[damage] + b"\n"
    damaged = b"".join(lines) + b'{"op_code":6,"work'  # and a torn tail after it
    journal.write_bytes(damaged)
    for read_only in (False, True):
        with pytest.raises(StorageError) as raised:
            open_storage(str(journal), read_only=read_only)
        message = str(raised.value)
        assert f"line {at + 1} of {journal} is damaged" in message, message
        assert f"head -n {at} {journal}" in message and "\n" not in message
    assert journal.read_bytes() == damaged
    assert _side_files(tmp_path) == []


def test_status_says_the_tail_is_torn_and_run_sets_it_aside(project: Project) -> None:
    project.write("q.py", GOOD)
    first = project.sweeper("run", "q.py", "-n", "3", "-p", "1", "--no-track")
    assert first.returncode == 0, first.stderr
    data = project.journal.read_bytes()
    last_start = data.rindex(b"\n", 0, len(data) - 1) + 1
    torn = data[: last_start + (len(data) - last_start) // 2]
    project.journal.write_bytes(torn)

    status = project.sweeper("status", "q.py")
    assert status.returncode == 0, status.stderr
    assert "3 trials" in status.stdout
    (warning,) = status.stderr.strip().splitlines()
    assert warning.startswith("warning: .sweeper/optuna.journal ends in a record cut off")
    assert "the next `python -m sweeper run` on it moves it to" in warning
    assert project.journal.read_bytes() == torn
    assert _side_files(project.journal.parent) == []

    second = project.sweeper("run", "q.py", "-n", "2", "-p", "1", "--no-track")
    assert second.returncode == 0, second.stderr
    output = second.stdout + second.stderr
    assert "Traceback" not in output
    notes = [line for line in output.splitlines() if "cut off mid-write" in line]
    assert len(notes) == 1, output
    (side,) = _side_files(project.journal.parent)
    assert side.read_bytes() == torn[last_start:]
    assert f".sweeper/{side.name}" in notes[0]
    assert len(project.study("q").trials) == 5

    third = project.sweeper("run", "q.py", "-n", "1", "-p", "1", "--no-track")
    assert third.returncode == 0, third.stderr
    assert "cut off" not in third.stdout + third.stderr
    assert len(_side_files(project.journal.parent)) == 1


def test_run_on_a_journal_damaged_in_the_middle_is_one_line_and_exit_2(project: Project) -> None:
    project.write("q.py", GOOD)
    first = project.sweeper("run", "q.py", "-n", "3", "-p", "1", "--no-track")
    assert first.returncode == 0, first.stderr
    lines = project.journal.read_bytes().splitlines(keepends=True)
    lines[4] = lines[4][: len(lines[4]) // 2] + b"\n"
    damaged = b"".join(lines)
    project.journal.write_bytes(damaged)
    for command in (["run", "q.py", "-n", "2", "-p", "1", "--no-track"], ["status"]):
        result = project.sweeper(*command)
        assert result.returncode == 2, (result.stdout, result.stderr)
        assert "Traceback" not in result.stderr
        (line,) = result.stderr.strip().splitlines()
        assert line.startswith("error: line 5 of .sweeper/optuna.journal is damaged"), line
        assert "Restore it from a backup" in line
        assert project.journal.read_bytes() == damaged
    assert _side_files(project.journal.parent) == []


def test_only_a_trials_end_and_study_changes_wait_for_the_disk(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    storage = open_storage(str(tmp_path / "j.journal")).storage
    study = optuna.create_study(storage=storage, sampler=optuna.samplers.RandomSampler(seed=0))
    synced: list[bytes] = []
    import os

    real_fsync = os.fsync

    def fsync(fd: int) -> None:
        synced.append((tmp_path / "j.journal").read_bytes().splitlines()[-1])
        real_fsync(fd)

    monkeypatch.setattr(os, "fsync", fsync)
    trial = study.ask()
    trial.suggest_float("x", 0, 1)
    trial.report(0.5, 0)
    trial.set_user_attr("note", "a")
    assert synced == []  # a running trial's records: written, not yet waited for
    study.tell(trial, 1.0)
    assert len(synced) == 1 and b'"state":1' in synced[0]  # its end, and everything before
    study.set_user_attr("owner", "me")
    assert len(synced) == 2
    # Whatever was written is there for every reader, waited for or not.
    plain = JournalStorage(JournalFileBackend(str(tmp_path / "j.journal")))
    again = optuna.load_study(study_name=study.study_name, storage=plain)
    assert again.trials[0].params.keys() == {"x"} and again.trials[0].user_attrs == {"note": "a"}
