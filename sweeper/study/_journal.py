"""Optuna's journal storage and journal file, with two problems of Optuna's own fixed.

The storage (:class:`SweeperJournalStorage`): ``Study.ask`` looks for enqueued (WAITING)
trials on every call, and Optuna's journal storage answers by walking every trial of the study,
so each ask costs O(trials so far): at 10,000 trials that walk was most of sweeper's per-trial
time (see BENCHMARKS.md, growth). A trial is WAITING from its creation until it is first popped,
and Optuna's API never makes it WAITING again, so the walk can start at the oldest trial that was
still WAITING the last time: the remedy Optuna applied to its in-memory storage
(optuna/optuna#5993), not yet to the journal.

It reads two fields of the journal's replay result. Were a future Optuna to rename them, the
storage falls back to Optuna's own walk (correct, only slower); a test checks the fast path is
the one taken with the installed Optuna.

The file (:class:`SweeperJournalFileBackend`): Optuna writes each record as one JSON line ending
in ``\\n``, and its reader skips a last line that has no ``\\n`` yet (a record still being
written, or one whose write never finished: a power cut, a full disk). Its next append goes
after such a torn line, which makes a line that does not parse, and from then on every read of
the journal fails. This file cuts a torn tail off before it appends, under the journal's lock,
and keeps the bytes next to the journal, the way SQLite and Postgres cut a torn log tail before
they write; a line that does not parse anywhere else is reported by number, never appended to.

Optuna also waits for the disk (``fsync``) after every record, a third of a millisecond each on
this kind of machine and eight or more records per trial. The file here waits only for the
records that must survive a power cut when the append returns: a trial's end, and changes to a
study. A trial's parameters, reports and attributes are written at once (every reader sees
them, and a kill -9 loses none) and reach the disk with the next record that waits, as a
database's group commit does. A power cut can lose them only for a trial that was still
running, which the next sweep treats as interrupted anyway.
"""

from __future__ import annotations

import copy
import itertools
import json
import os
import threading
import time
from collections.abc import Container, Generator, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from optuna.distributions import (
    BaseDistribution,
    check_distribution_compatibility,
    distribution_to_json,
)
from optuna.storages.journal import (
    BaseJournalBackend,
    JournalFileBackend,
    JournalFileSymlinkLock,
    JournalStorage,
)
from optuna.storages.journal._storage import JournalOperation
from optuna.trial import FrozenTrial, TrialState

from sweeper._errors import StorageError
from sweeper._logging import get_logger

logger = get_logger(__name__)

_CHUNK = 1 << 16
_NOT_A_RECORD = "valid JSON, but not a journal record"
_SETTLE_SECONDS = 0.05
"""How long to wait before reading a line again that may have been mid-write (or mid-cut)."""


class SweeperJournalStorage(JournalStorage):
    def __init__(self, backend: BaseJournalBackend) -> None:
        self._deferring = threading.local()  # before Optuna's __init__: it reads the journal
        self._kinds: dict[tuple[int, str], BaseDistribution] = {}
        """Per study and parameter: a distribution the study has accepted for it."""
        super().__init__(backend)
        self._waiting_from: dict[int, int] = {}
        """Per study: the position of the first trial that may still be WAITING."""

    def __getstate__(self) -> dict[Any, Any]:
        state = super().__getstate__()
        state.pop("_deferring", None)
        return state

    def __setstate__(self, state: dict[Any, Any]) -> None:
        super().__setstate__(state)
        self._deferring = threading.local()

    # -- parameters written together -----------------------------------------------------

    @contextmanager
    def deferred_params(self) -> Iterator[None]:
        """Within the block, this thread's parameter writes are collected and appended
        together, with its next other storage call or at the end of the block: one append
        and one read back for a batch of trials' parameters instead of one each.

        Only parameters that cannot be refused when the journal is read back are deferred:
        of a trial still running, with a distribution of the same kind as one the study has
        accepted for that name. Any other goes through at once, as Optuna writes it, so an
        error (a categorical's changed choices, say) is raised where it was made.
        """
        replay = getattr(self, "_replay_result", None)
        known = self.fast_waiting_scan() and isinstance(
            getattr(replay, "_trial_id_to_study_id", None), dict
        )
        if getattr(self._deferring, "logs", None) is not None or not known:
            yield  # nested, or an Optuna whose replay fields are not as expected
            return
        self._deferring.logs = []
        try:
            yield
        finally:
            with self._thread_lock:
                self._flush_deferred()
            self._deferring.logs = None

    def set_trial_param(
        self,
        trial_id: int,
        param_name: str,
        param_value_internal: float,
        distribution: BaseDistribution,
    ) -> None:
        logs: list[dict[str, Any]] | None = getattr(self._deferring, "logs", None)
        if logs is None or not self._cannot_be_refused(trial_id, param_name, distribution):
            super().set_trial_param(trial_id, param_name, param_value_internal, distribution)
            return
        logs.append(
            {
                "op_code": JournalOperation.SET_TRIAL_PARAM,
                "worker_id": self._replay_result.worker_id,
                "trial_id": trial_id,
                "param_name": param_name,
                "param_value_internal": param_value_internal,
                "distribution": distribution_to_json(distribution),
            }
        )

    def _cannot_be_refused(self, trial_id: int, name: str, distribution: BaseDistribution) -> bool:
        replay: Any = self._replay_result
        with self._thread_lock:
            trial = replay._trials.get(trial_id)
            if trial is None or trial.state.is_finished():
                return False
            study_id = replay._trial_id_to_study_id.get(trial_id)
            known = self._kinds.get((study_id, name))
            if known is None:
                for other in replay._study_id_to_trial_ids.get(study_id, ()):
                    known = replay._trials[other].distributions.get(name)
                    if known is not None:
                        self._kinds[(study_id, name)] = known
                        break
        if known is None:  # the study's first: Optuna's own write checks it
            return False
        try:
            check_distribution_compatibility(known, distribution)
        except ValueError:
            return False
        return True

    def _flush_deferred(self) -> None:
        """Append what this thread deferred (called with the thread lock held)."""
        logs: list[dict[str, Any]] | None = getattr(self._deferring, "logs", None)
        if logs:
            self._backend.append_logs(list(logs))
            logs.clear()

    def _write_log(self, op_code: int, extra_fields: dict[str, Any]) -> None:
        self._flush_deferred()  # in the order they were made
        super()._write_log(op_code, extra_fields)

    def _sync_with_backend(self) -> None:
        self._flush_deferred()  # so this thread reads its own writes
        super()._sync_with_backend()

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


# Records about a trial that is still running: a parameter, a report, an attribute. They are
# written at once (another process, or this one after a kill -9, reads them), but made durable
# against a power cut only with the next record that must be, which flushes the file up to it.
_RUNNING_TRIAL_RECORDS = frozenset(
    {
        JournalOperation.CREATE_TRIAL,
        JournalOperation.SET_TRIAL_PARAM,
        JournalOperation.SET_TRIAL_INTERMEDIATE_VALUE,
        JournalOperation.SET_TRIAL_USER_ATTR,
        JournalOperation.SET_TRIAL_SYSTEM_ATTR,
    }
)


def _must_be_durable(log: dict[str, Any]) -> bool:
    """Whether an append with ``log`` waits for the disk (``fsync``): everything but the
    records of a running trial. A trial's end (its state and values), and every change to a
    study, is on disk when the append returns, as Optuna's journal makes every record."""
    op = log.get("op_code")
    if op == JournalOperation.SET_TRIAL_STATE_VALUES:
        return TrialState(log["state"]).is_finished() or log["state"] == TrialState.WAITING
    return op not in _RUNNING_TRIAL_RECORDS


class SweeperJournalFileBackend(JournalFileBackend):
    """Optuna's journal file that never appends after a torn last record, and waits for the
    disk only where a record must survive a power cut (a trial's end, a study's change).

    Reads take no lock, as Optuna's do. Appends are serialized, as Optuna's are, by the lock
    file ``<path>.lock`` (:class:`~optuna.storages.journal.JournalFileSymlinkLock`, Optuna's
    default, which every Optuna or sweeper process that appends to the file takes). Holding it,
    no append is in progress, so a last line without its ``\\n`` is a write that will never
    finish: it is copied to ``<path>.torn-<time>`` (made durable first), then cut off, and the
    new records follow the last complete one. A reader in another process is not disturbed:
    Optuna's reader only remembers where a line that ends in ``\\n`` ends, so it never holds a
    position past the cut, and a line that changed under it while it was read is read again.

    :meth:`check_tail` does the same when a sweep opens the journal, before anything is
    appended, and says what it did; ``status`` uses it without cutting.
    """

    def __init__(self, file_path: str, shown: str | None = None) -> None:
        self._journal_lock = JournalFileSymlinkLock(file_path)
        super().__init__(file_path, lock_obj=self._journal_lock)
        self._path = Path(file_path)
        self._shown = shown or file_path
        """The journal's name in messages (relative to the working directory, say)."""

    def read_logs(self, log_number_from: int) -> Generator[dict[str, Any], None, None]:
        number = log_number_from  # Optuna numbers records by line, from 0
        for attempt in (1, 2):
            try:
                for log in super().read_logs(number):
                    if not _is_record(log):
                        raise self._damaged(number + 1, _NOT_A_RECORD)
                    yield log
                    number += 1
                return
            except ValueError as error:  # JSONDecodeError, UnicodeDecodeError, a line cut short
                if attempt == 2:
                    raise self._damaged(number + 1, _reason(error)) from None
                time.sleep(_SETTLE_SECONDS)  # it may have been written, or cut, as it was read

    def append_logs(self, logs: list[dict[str, Any]]) -> None:
        data = "\n".join(json.dumps(log, separators=(",", ":")) for log in logs) + "\n"
        with self._locked(), _open(self._path, os.O_RDWR | os.O_APPEND | os.O_CREAT) as fd:
            if _read(fd, max(os.fstat(fd).st_size - 1, 0), 1) not in (b"", b"\n"):
                # Torn since the sweep opened the journal (another process's write cut short).
                logger.warning(self._set_aside(fd, _Tail.of(fd)))
            _write_all(fd, data.encode("utf-8"))
            if any(_must_be_durable(log) for log in logs):
                os.fsync(fd)

    def check_tail(self, *, repair: bool) -> str | None:
        """Check the journal's last record before a sweep appends to it (``repair``) or reads it.

        Raises :class:`StorageError` if the last complete record does not parse (a damaged
        record elsewhere is found by :meth:`read_logs`). If the journal ends in a torn record,
        returns the line to show the user: with ``repair`` it has been set aside and cut off
        under the journal's lock; without, the file is left as it is.
        """
        if repair:
            with self._locked(), _open(self._path, os.O_RDWR) as fd:
                tail = _Tail.of(fd)
                self._check_last_record(fd, tail)
                return self._set_aside(fd, tail) if tail.torn else None
        with _open(self._path, os.O_RDONLY) as fd:
            tail = _Tail.of(fd)
            if tail.torn:  # perhaps a record being appended right now: look again in a moment
                time.sleep(_SETTLE_SECONDS)
                tail = _Tail.of(fd)
            self._check_last_record(fd, tail)
            if not tail.torn:
                return None
            line = _line_number(fd, tail.end)
            return (
                f"{self._shown} ends in a record cut off mid-write (line {line}, "
                f"{tail.size - tail.end} bytes), which is left out here; the next "
                f"`python -m sweeper run` on it moves it to {self._shown}.torn-<time>."
            )

    @contextmanager
    def _locked(self) -> Iterator[None]:
        self._journal_lock.acquire()
        try:
            yield
        finally:
            self._journal_lock.release()

    def _check_last_record(self, fd: int, tail: _Tail) -> None:
        if tail.end == 0:
            return
        try:
            log = json.loads(_read(fd, tail.last, tail.end - tail.last))
        except ValueError as error:
            raise self._damaged(_line_number(fd, tail.last), _reason(error)) from None
        if not _is_record(log):
            raise self._damaged(_line_number(fd, tail.last), _NOT_A_RECORD)

    def _set_aside(self, fd: int, tail: _Tail) -> str:
        """Copy the torn bytes to a new side file, then cut them off. Under the lock."""
        torn = _read(fd, tail.end, tail.size - tail.end)
        line = _line_number(fd, tail.end)
        try:
            side = _write_new(self._path, torn)
        except OSError as error:
            raise StorageError(
                f"{self._shown} ends in a record cut off mid-write (line {line}, {len(torn)} "
                f"bytes), and it cannot be set aside in {self._shown}.torn-<time>: "
                f"{error.strerror or error}. Free some disk space or make the folder writable, "
                "and run again; the journal is unchanged."
            ) from None
        os.ftruncate(fd, tail.end)
        os.fsync(fd)
        return (
            f"{self._shown} ended in a record cut off mid-write (line {line}, {len(torn)} "
            f"bytes): moved it to {self._shown}{side.name[len(self._path.name) :]}, and the "
            f"journal goes on from the {line - 1} complete records before it."
        )

    def _damaged(self, line: int, reason: str) -> StorageError:
        keep = (
            f"or keep the {line - 1} records before it: `head -n {line - 1} {self._shown} > "
            f"kept && mv kept {self._shown}`"
            if line > 1
            else "or move it away to start over"
        )
        return StorageError(
            f"line {line} of {self._shown} is damaged ({reason}): the studies in it cannot be "
            f"read, and sweeper leaves the file as it is. Restore it from a backup, {keep}."
        )


@dataclass(frozen=True)
class _Tail:
    """Where a journal's complete records end, by the bytes of the file."""

    size: int
    end: int
    """Just after the last ``\\n``: records are ``[0, end)``, a torn one ``[end, size)``."""
    last: int
    """Where the last complete record starts."""

    @property
    def torn(self) -> bool:
        return self.end < self.size

    @classmethod
    def of(cls, fd: int) -> _Tail:
        size = os.fstat(fd).st_size
        end = _newline_before(fd, size) + 1
        return cls(size, end, _newline_before(fd, end - 1) + 1 if end else 0)


def _is_record(log: Any) -> bool:
    return isinstance(log, dict) and isinstance(log.get("op_code"), int)


def _reason(error: ValueError) -> str:
    if isinstance(error, json.JSONDecodeError):
        at_end = error.pos >= len(error.doc.rstrip())
        where = "the end of the line" if at_end else f"character {error.pos + 1}"
        return f"not JSON: {error.msg.removesuffix(' at')} at {where}"  # some msgs end in "at"
    if isinstance(error, UnicodeDecodeError):
        return "not UTF-8 text"
    return f"{error}".rstrip(".")


@contextmanager
def _open(path: Path, flags: int) -> Iterator[int]:
    fd = os.open(path, flags | getattr(os, "O_BINARY", 0), 0o666)
    try:
        yield fd
    finally:
        os.close(fd)


def _read(fd: int, offset: int, size: int) -> bytes:
    os.lseek(fd, offset, os.SEEK_SET)
    parts = []
    while size > 0:
        part = os.read(fd, min(size, _CHUNK))
        if not part:
            break
        parts.append(part)
        size -= len(part)
    return b"".join(parts)


def _newline_before(fd: int, end: int) -> int:
    """The offset of the last ``\\n`` before ``end``, or -1."""
    while end > 0:
        start = max(end - _CHUNK, 0)
        found = _read(fd, start, end - start).rfind(b"\n")
        if found >= 0:
            return start + found
        end = start
    return -1


def _line_number(fd: int, offset: int) -> int:
    """The number, from 1, of the line that starts at ``offset``."""
    lines = 1
    for start in range(0, offset, _CHUNK):
        lines += _read(fd, start, min(_CHUNK, offset - start)).count(b"\n")
    return lines


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view) :]


def _write_new(journal: Path, data: bytes) -> Path:
    """Write ``data`` durably to a new ``<journal>.torn-<time>`` file, never over an old one."""
    stamp = time.strftime("%Y%m%d-%H%M%S")
    for n in itertools.count(1):
        side = journal.with_name(f"{journal.name}.torn-{stamp}" + (f"-{n}" if n > 1 else ""))
        try:
            flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_BINARY", 0)
            fd = os.open(side, flags, 0o666)
        except FileExistsError:
            continue
        try:
            _write_all(fd, data)
            os.fsync(fd)
        except OSError:
            os.close(fd)
            side.unlink(missing_ok=True)
            raise
        os.close(fd)
        _fsync_folder(journal.parent)
        return side
    raise AssertionError("unreachable")


def _fsync_folder(folder: Path) -> None:
    """Make a new file's name durable (POSIX; there is no such call for a folder on Windows)."""
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)
