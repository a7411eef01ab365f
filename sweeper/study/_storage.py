"""Open the Optuna storage a sweep lives in, and the study inside it."""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import optuna
from optuna.storages import BaseStorage

from sweeper._errors import StorageError

HOME = ".sweeper"
"""Sweeper's folder in the working directory: the default journal, trial logs, Aim repo."""
DEFAULT_JOURNAL = "optuna.journal"


def home(workdir: str | os.PathLike[str] | None = None) -> Path:
    """The ``.sweeper`` folder of ``workdir`` (default: the current directory)."""
    return Path(workdir or os.getcwd()) / HOME


@dataclass(frozen=True)
class OpenedStorage:
    storage: BaseStorage
    description: str
    """How to show the storage to the user (a path or a URL without its password)."""
    url: str | None
    """What to pass as --storage to reach it again, or None for the default."""
    notes: tuple[str, ...] = ()
    """What opening it found and the user should hear (a torn journal record set aside)."""
    location: str = ""
    """How another process opens the same storage: the journal's absolute path, or the URL."""


def open_storage(
    spec: str | None,
    workdir: str | os.PathLike[str] | None = None,
    *,
    read_only: bool = False,
) -> OpenedStorage:
    """Open ``spec``: a database URL, a ``redis://`` URL or a journal file path.

    ``None`` means the default journal file ``.sweeper/optuna.journal`` under ``workdir``.
    A journal file whose last record was torn (cut off mid-write) has it set aside first, so
    that the sweep's appends follow the last complete record, and says so in ``notes``;
    ``read_only`` (for commands that only read the study) leaves the file as it is and only
    says it is torn. A damaged record raises :class:`StorageError` either way.
    """
    if spec is None:
        path = home(workdir) / DEFAULT_JOURNAL
        return _journal(path, None, read_only)
    if "://" not in spec:
        path = Path(spec).expanduser()
        if path.is_dir():
            raise StorageError(
                f"--storage {spec} is a directory. Give a journal file path inside it "
                f"(for example {Path(spec) / DEFAULT_JOURNAL}) or a database URL."
            )
        if _is_sqlite_file(path):
            return _database(f"sqlite:///{path.resolve()}", spec)
        return _journal(path, spec, read_only)
    scheme = spec.split("://", 1)[0].lower()
    if scheme.startswith("redis"):
        return _redis(spec)
    return _database(spec, spec)


def _journal(path: Path, url: str | None, read_only: bool) -> OpenedStorage:
    from sweeper.study._journal import SweeperJournalFileBackend, SweeperJournalStorage

    shown = _relative(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        backend = SweeperJournalFileBackend(str(path), shown=shown)
        storage = SweeperJournalStorage(backend)  # reads every record: damage raises here
        note = backend.check_tail(repair=not read_only)  # after, so damage stops before a cut
    except OSError as error:
        raise StorageError(
            f"cannot use {path} as the study journal: {error.strerror or error}. "
            "Choose a writable path with --storage."
        ) from None
    return OpenedStorage(
        storage, shown, url, notes=(note,) if note else (), location=str(path.resolve())
    )


def _redis(url: str) -> OpenedStorage:
    from optuna.storages.journal import JournalRedisBackend

    from sweeper.study._journal import SweeperJournalStorage

    try:
        backend = JournalRedisBackend(url)
    except ImportError:
        raise StorageError(
            f"--storage {_hide_password(url)} needs the redis package: pip install redis"
        ) from None
    return OpenedStorage(SweeperJournalStorage(backend), _hide_password(url), url, location=url)


def _database(url: str, given: str) -> OpenedStorage:
    import sqlalchemy.exc

    try:
        storage = optuna.storages.RDBStorage(url)
    except (sqlalchemy.exc.ArgumentError, sqlalchemy.exc.NoSuchModuleError):
        raise StorageError(
            f"--storage {_hide_password(given)} is not a storage URL sweeper can open. Use a "
            "database URL such as sqlite:///sweeps.db or postgresql://user@host/db, or a "
            "journal file path such as .sweeper/optuna.journal."
        ) from None
    except ImportError as error:
        raise StorageError(
            f"--storage {_hide_password(given)} needs a database driver that is not "
            f"installed ({error}). Install it, or use a journal file path."
        ) from None
    except (sqlalchemy.exc.SQLAlchemyError, OSError) as error:
        detail = str(error).strip().splitlines()[0] if str(error).strip() else type(error)
        raise StorageError(
            f"cannot open --storage {_hide_password(given)}: {detail}. Check that the "
            "database is reachable and the URL is right."
        ) from None
    return OpenedStorage(
        optuna.storages._CachedStorage(storage), _hide_password(given), given, location=url
    )


def _is_sqlite_file(path: Path) -> bool:
    try:
        with path.open("rb") as file:
            return file.read(16) == b"SQLite format 3\x00"
    except OSError:
        return False


def _hide_password(url: str) -> str:
    if "://" not in url or "@" not in url:
        return url
    scheme, rest = url.split("://", 1)
    credentials, host = rest.rsplit("@", 1)
    user = credentials.split(":", 1)[0]
    return f"{scheme}://{user}:***@{host}" if ":" in credentials else url


def _relative(path: Path) -> str:
    try:
        return str(path.resolve().relative_to(Path.cwd()))
    except ValueError:
        return str(path)


SWEEPS_INDEX = "sweeps.json"
"""Which study, in which storage, each objective file's last sweep here used: so that
``status FILE`` finds a study the file's own code named and stored elsewhere."""


def remember_sweep(
    file: str, study: str, storage: str | None, workdir: str | os.PathLike[str] | None = None
) -> None:
    """Note that the sweep of ``file`` runs study ``study`` in ``storage`` (None: default)."""
    index = home(workdir) / SWEEPS_INDEX
    entries = _read_index(index)
    entry = {"study": study, "storage": storage}
    if entries.get(file) == entry:
        return
    entries[file] = entry
    try:
        index.parent.mkdir(parents=True, exist_ok=True)
        temporary = index.with_suffix(".tmp")
        temporary.write_text(json.dumps(entries, indent=1, sort_keys=True))
        temporary.replace(index)
    except OSError:
        pass  # only a convenience for status and best


def remembered_sweep(
    file: str, workdir: str | os.PathLike[str] | None = None
) -> dict[str, str | None] | None:
    """The study and storage the last sweep of ``file`` here used, if one ran."""
    entry = _read_index(home(workdir) / SWEEPS_INDEX).get(str(Path(file).resolve()))
    return entry if isinstance(entry, dict) else None


def _read_index(path: Path) -> dict[str, Any]:
    try:
        entries = json.loads(path.read_text())
    except (OSError, ValueError):
        return {}
    return entries if isinstance(entries, dict) else {}


def existing_directions(storage: BaseStorage, study_name: str) -> tuple[str, ...] | None:
    """The directions of ``study_name`` in ``storage``, or None if there is no such study."""
    try:
        study_id = storage.get_study_id_from_name(study_name)
    except KeyError:
        return None
    return tuple(d.name.lower() for d in storage.get_study_directions(study_id))


def study_names(storage: BaseStorage) -> list[str]:
    return [s.study_name for s in storage.get_all_studies()]


def adopt_trial(storage: BaseStorage, study_id: int, trial_id: int) -> None:
    """Make ``storage`` able to write a trial that another process created.

    Optuna opens a database through ``_CachedStorage``, which writes a parameter only for a
    trial it has read: a trial a sampler process asked for is unknown to it until something
    in this process next reads the study's trials, and ``set_trial_param`` raises
    ``KeyError`` meanwhile. Reading the trials that are new since the last read makes it
    known (one small query); other storages need nothing.
    """
    known = getattr(storage, "_trial_id_to_study_id_and_number", None)
    if isinstance(known, dict) and trial_id not in known:
        storage.get_all_trials(study_id, deepcopy=False, states=(optuna.trial.TrialState.RUNNING,))
