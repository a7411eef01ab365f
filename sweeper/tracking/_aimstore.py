"""Aim runs written straight into an Aim 3.29 repo's storage, many at a time.

``aim.Run`` costs about 50 ms a trial on a small machine: two new RocksDB databases, a lock
file, a heartbeat thread, an SQL commit for each of its name, experiment and tags, and an
index pass that opens the run again. Trials can finish faster than that. Here a run is the
same keys that ``aim.Run`` writes (``tests/test_reconcile.py`` compares them key by key),
each change to a database one write batch; opening and closing a run's databases (where
the time goes, with RocksDB's file syncs) runs on threads, many runs at once, and the SQL
rows and the index entries of a whole batch of runs are written together.

The layout, as Aim 3.29 writes it:

- ``meta/chunks/<hash>``, tree ``meta``: ``chunks/<hash>/`` holds ``attrs`` (the run's
  params), ``end_time`` (None while it runs), ``traces`` (per context and sequence: dtype,
  version, first/last value and step, min, max), ``typed_traces`` and ``contexts``; the
  repo-wide ``attrs``, ``contexts`` and ``traces_types`` are repeated in every chunk.
- ``seqs/chunks/<hash>``, tree ``seqs``: ``v2/chunks/<hash>/<context>/<name>/`` holds the
  arrays ``step``, ``val``, ``epoch`` and ``time``, each keyed by the step's hash.
- ``meta/index``: every finished chunk's keys, plus ``index_cache/<hash>`` (a checksum of
  the chunk's files, which tells Aim's own indexer that the entry is current).
- ``run_metadata.sqlite``: the run's row (hash, name, creation time, experiment, tags).
"""

from __future__ import annotations

import contextlib
import datetime
import hashlib
import math
import os
import shutil
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from aim.storage import encoding as _encoding
from aim.storage import hashing as _hashing
from aim.storage import treeutils
from aim.storage.context import Context as _Context
from aim.storage.rockscontainer import RocksContainer
from aim.storage.utils import ArrayFlag

# Aim's storage layer is compiled (Cython); its partial type hints are not what it accepts.
E: Any = _encoding
hash_auto: Any = getattr(_hashing, "hash_auto")  # noqa: B009 - not exported
Context: Any = _Context

Path_ = tuple[Any, ...]
Key = tuple[int, str]  # (context index, sequence name)

_ARRAYS = ("step", "val", "epoch", "time")


@dataclass
class _Sequence:
    """What aim.Run's tracker keeps about a sequence while it writes it."""

    count: int = 0
    """One past the highest step written (the next step when none is given)."""
    max: float = -math.inf
    min: float = math.inf


@dataclass
class RunStore:
    """The two databases of one run, open for writing.

    Not thread-safe; different runs may be opened, written and closed on different threads.
    """

    root: Path
    """The repo's ``.aim`` folder."""
    hash: str
    existed: bool = False
    """Whether the run's chunk was there when it was opened (a run continued)."""
    _meta: Any = None
    _seqs: Any = None
    _meta_batch: Any = None
    _seqs_batch: Any = None
    _sequences: dict[Key, _Sequence] = field(default_factory=dict)
    _contexts: set[int] = field(default_factory=set)

    # -- opening and closing ---------------------------------------------------------------

    @property
    def is_open(self) -> bool:
        return self._meta is not None

    def open(self) -> None:
        """Open the run's two databases, creating them (and the run) if need be (aim.Run
        creates both, metrics or not)."""
        meta_path = self.root / "meta" / "chunks" / self.hash
        self.existed = meta_path.is_dir()
        self._meta = RocksContainer(str(meta_path), read_only=False)
        if self.existed:
            self._load()
        if not self.existed or not self._has_attrs():
            self.set_attr((), {})  # what aim.Run does for a run without params
        self.set_end_time(None)
        self.open_seqs()

    def read(
        self, name: str, context: Mapping[str, Any] | None = None
    ) -> tuple[Any, dict[int, float]]:
        """An existing run's params and one sequence, read without writing anything."""
        meta = RocksContainer(str(self.root / "meta" / "chunks" / self.hash), read_only=True)
        try:
            self._meta = meta
            self._load()
            attrs = self.attrs()
        finally:
            self._meta = None
            meta.close()
        seqs_path = self.root / "seqs" / "chunks" / self.hash
        if not seqs_path.is_dir():
            return attrs, {}
        self._seqs = RocksContainer(str(seqs_path), read_only=True)
        try:
            return attrs, self.sequence(name, context)
        finally:
            self._seqs.close()
            self._seqs = None

    @property
    def has_seqs(self) -> bool:
        return self._seqs is not None

    def open_seqs(self) -> None:
        """Open (create) the run's sequences' database."""
        if self._seqs is None:
            path = self.root / "seqs" / "chunks" / self.hash
            self._seqs = RocksContainer(str(path), read_only=False)

    def commit(self) -> None:
        """Write what was set since the last commit (one batch per database)."""
        if self._meta_batch is not None:
            self._meta.commit(self._meta_batch)
            self._meta_batch = None
        if self._seqs_batch is not None:
            self._seqs.commit(self._seqs_batch)
            self._seqs_batch = None

    def meta_items(self) -> list[tuple[bytes, bytes]]:
        """Every key of the meta database (what the index holds for this run)."""
        self.commit()
        return list(self._meta.items())

    def close(self) -> None:
        """Commit and close both databases.

        The sequences are flushed to a table file, as Aim does: a reader (the UI) opening
        a database that still has a write-ahead log would write it, to flush it. The meta
        database keeps its writes in its log, which costs a flush less: nobody else reads
        it (the index has its keys, and its checksum says the entry is current), and
        RocksDB replays the log when it is opened again."""
        self.commit()
        if self._seqs is not None:
            self._seqs.close()
        if self._meta is not None:
            _close_unflushed(self._meta)
        self._meta = self._seqs = None

    def checksum(self) -> str:
        """The checksum Aim's indexer keeps for a chunk it has indexed (its
        ``RepoIndexManager._get_run_checksum``: file paths, times and sizes)."""
        digest = hashlib.md5()
        for folder, _, files in os.walk(self.root / "meta" / "chunks" / self.hash):
            for name in sorted(files):
                if name.startswith("LOG"):
                    continue
                path = os.path.join(folder, name)
                try:
                    stat = os.stat(path)
                except FileNotFoundError:
                    continue
                digest.update(path.encode("utf-8"))
                digest.update(str(stat.st_mtime).encode("utf-8"))
                digest.update(str(stat.st_size).encode("utf-8"))
        return digest.hexdigest()

    # -- params ----------------------------------------------------------------------------

    def set_attr(self, path: Path_, value: Any) -> None:
        """``run[path] = value``: the run's params, and the repo-wide copy aim.Run keeps."""
        self._set_meta(("meta", "chunks", self.hash, "attrs", *path), value)
        self._set_meta(("meta", "attrs", *path), value)

    def set_end_time(self, when: float | None) -> None:
        self._set_meta(("meta", "chunks", self.hash, "end_time"), when)

    def attrs(self) -> Any:
        """The run's params as written so far."""
        self.commit()
        tree = self._meta.tree()
        with contextlib.suppress(KeyError):
            return tree.subtree(("meta", "chunks", self.hash, "attrs")).collect()
        return {}

    def _has_attrs(self) -> bool:
        return self.has_attr(())

    def has_attr(self, path: Path_) -> bool:
        """Whether the run has params at ``path`` (written and committed)."""
        prefix = E.encode_path(("meta", "chunks", self.hash, "attrs", *path))
        return any(True for _ in self._meta.items(prefix))

    # -- sequences -------------------------------------------------------------------------

    def track(
        self,
        name: str,
        value: float,
        step: int | None,
        when: float,
        context: Mapping[str, Any] | None = None,
    ) -> None:
        """``run.track(value, name=name, step=step, context=context)`` at time ``when``."""
        ctx = Context(dict(context or {}))
        idx = ctx.idx
        key = (idx, name)
        sequence = self._sequences.get(key)
        base = ("seqs", "v2", "chunks", self.hash, idx, name)
        if sequence is None:
            self.open_seqs()
            for array in _ARRAYS:
                self._put_seqs(E.encode_path((*base, array)), E.encode(ArrayFlag))
            sequence = self._sequences[key] = _Sequence()
        if step is None:
            step = sequence.count
        if idx not in self._contexts:
            self._contexts.add(idx)
            self._set_meta(("meta", "contexts", idx), ctx.to_dict())
            self._set_meta(("meta", "chunks", self.hash, "contexts", idx), ctx.to_dict())
        trace = ("meta", "chunks", self.hash, "traces", idx, name)
        if sequence.count == 0:
            self._set_meta(("meta", "traces_types", "float", idx, name), 1)
            self._set_meta((*trace, "dtype"), "float")
            self._set_meta((*trace, "version"), 2)
            self._set_meta((*trace, "first"), value)
            self._set_meta((*trace, "first_step"), step)
            self._set_meta(("meta", "chunks", self.hash, "typed_traces", "metric", idx, name), 1)
        if step >= sequence.count:
            self._set_meta((*trace, "last"), value)
            self._set_meta((*trace, "last_step"), step)
            sequence.count = step + 1
        if value > sequence.max:
            self._set_meta((*trace, "max"), value)
            sequence.max = value
        if value < sequence.min:
            self._set_meta((*trace, "min"), value)
            sequence.min = value
        step_hash = hash_auto(step)
        self._set_seqs((*base, "val", step_hash), value)
        self._set_seqs((*base, "epoch", step_hash), None)
        self._set_seqs((*base, "time", step_hash), when)
        self._set_seqs((*base, "step", step_hash), step)

    def drop_sequence(self, name: str, context: Mapping[str, Any] | None = None) -> None:
        """Remove a sequence and everything the run records about it."""
        idx = Context(dict(context or {})).idx
        self._sequences.pop((idx, name), None)
        self._delete_meta(("meta", "chunks", self.hash, "traces", idx, name))
        self._delete_meta(("meta", "chunks", self.hash, "typed_traces", "metric", idx, name))
        if self._seqs is not None:
            self._delete_seqs(("seqs", "v2", "chunks", self.hash, idx, name))

    def has_sequence(self, name: str, context: Mapping[str, Any] | None = None) -> bool:
        return (Context(dict(context or {})).idx, name) in self._sequences

    def sequence(self, name: str, context: Mapping[str, Any] | None = None) -> dict[int, float]:
        """The steps and values of a sequence as stored (a step appears once, by design)."""
        self.commit()
        idx = Context(dict(context or {})).idx
        if self._seqs is None or (idx, name) not in self._sequences:
            return {}
        base = ("seqs", "v2", "chunks", self.hash, idx, name)
        steps = dict(self._array(E.encode_path((*base, "step"))))
        values = dict(self._array(E.encode_path((*base, "val"))))
        return {int(steps[h]): float(values[h]) for h in steps if h in values}

    def _array(self, prefix: bytes) -> Iterator[tuple[Any, Any]]:
        for key, raw in self._seqs.items(prefix):
            rest = key[len(prefix) :]
            if rest:  # not the array's own flag
                yield E.decode_path(rest)[0], E.decode(raw)

    def _load(self) -> None:
        """Read back the sequences and contexts of a run being continued."""
        tree = self._meta.tree()
        try:
            traces = tree.subtree(("meta", "chunks", self.hash, "traces")).collect()
        except KeyError:
            traces = {}
        for idx, by_name in (traces or {}).items():
            for name, info in by_name.items():
                if not isinstance(info, dict) or "last_step" not in info:
                    continue
                self._sequences[(idx, name)] = _Sequence(
                    count=int(info["last_step"]) + 1,
                    max=info.get("max", -math.inf),
                    min=info.get("min", math.inf),
                )
        try:
            contexts = tree.subtree(("meta", "chunks", self.hash, "contexts")).collect()
        except KeyError:
            contexts = {}
        self._contexts = set(contexts or {})

    # -- batches ---------------------------------------------------------------------------

    def _set_meta(self, path: Path_, value: Any) -> None:
        if self._meta_batch is None:
            self._meta_batch = self._meta.batch()
        _set(self._meta, self._meta_batch, path, value)

    def _delete_meta(self, path: Path_) -> None:
        if self._meta_batch is None:
            self._meta_batch = self._meta.batch()
        prefix = E.encode_path(path)
        self._meta.delete_range(prefix, prefix + b"\xff", store_batch=self._meta_batch)

    def _set_seqs(self, path: Path_, value: Any) -> None:
        if self._seqs_batch is None:
            self._seqs_batch = self._seqs.batch()
        _set(self._seqs, self._seqs_batch, path, value)

    def _put_seqs(self, key: bytes, value: bytes) -> None:
        if self._seqs_batch is None:
            self._seqs_batch = self._seqs.batch()
        self._seqs.set(key, value, store_batch=self._seqs_batch)

    def _delete_seqs(self, path: Path_) -> None:
        if self._seqs_batch is None:
            self._seqs_batch = self._seqs.batch()
        prefix = E.encode_path(path)
        self._seqs.delete_range(prefix, prefix + b"\xff", store_batch=self._seqs_batch)


def _set(container: Any, batch: Any, path: Path_, value: Any) -> None:
    """What Aim's ``ContainerTreeView.set`` does, into ``batch``: the same keys and values.

    Aim deletes the key range under ``path`` first, whatever the value. A number, string or
    None replaces what was at its key without that (a sweeper run never holds a tree where
    a scalar goes), which spares the database a range tombstone per value: most of what a
    run writes, and work on every later read."""
    prefix = E.encode_path(path)
    if isinstance(value, (dict, list, tuple)):
        container.delete_range(prefix, prefix + b"\xff", store_batch=batch)
        for key, encoded in treeutils.encode_tree(value, strict=True):
            container.set(prefix + key, encoded, store_batch=batch)
    else:
        batch.put(prefix, E.encode(value))


def _close_unflushed(container: Any) -> None:
    """Close a RocksContainer without flushing its memtable (its log has the writes)."""
    resources: Any = getattr(container, "_resources", None)
    db = getattr(resources, "_db", None)
    if db is None:
        container.close()
        return
    db.flush_wal()
    resources._db = None  # what Aim's cleanup would flush first
    del db  # RocksDB closes it; with a write-ahead log, closing does not flush
    container.close()  # the lock and the "in progress" marker


def remove_chunks(root: Path, run_hash: str) -> None:
    """Delete a run's databases (a run that is rebuilt from nothing)."""
    for kind in ("meta", "seqs"):
        shutil.rmtree(root / kind / "chunks" / run_hash, ignore_errors=True)
        with contextlib.suppress(FileNotFoundError):
            (root / kind / "progress" / run_hash).unlink()


# -- the index --------------------------------------------------------------------------------


class Index:
    """Aim's run index (``meta/index``), written in batches: open it, add runs, close it."""

    def __init__(self, root: Path) -> None:
        self._container = RocksContainer(str(root / "meta" / "index"), read_only=False)
        self._batch = self._container.batch()

    def add(self, run_hash: str, items: Iterable[tuple[bytes, bytes]], checksum: str) -> None:
        """What Aim's indexer does for a finished chunk, without reading it again."""
        prefix = E.encode_path(("meta", "chunks", run_hash))
        self._container.delete_range(prefix, prefix + b"\xff", store_batch=self._batch)
        for key, value in items:
            self._container.set(key, value, store_batch=self._batch)
        _set(self._container, self._batch, ("index_cache", run_hash), checksum)

    def remove(self, run_hash: str) -> None:
        prefix = E.encode_path(("meta", "chunks", run_hash))
        self._container.delete_range(prefix, prefix + b"\xff", store_batch=self._batch)
        key = E.encode_path(("index_cache", run_hash))
        self._container.delete_range(key, key + b"\xff", store_batch=self._batch)

    def indexed(self) -> set[str]:
        """The runs the index has an entry for."""
        found: set[str] = set()
        prefix = E.encode_path(("index_cache",))
        for key, _ in self._container.items(prefix):
            with contextlib.suppress(Exception):
                found.add(str(E.decode_path(key[len(prefix) :])[0]))
        return found

    def close(self) -> None:
        self._container.commit(self._batch)
        self._container.close()


# -- the SQL rows -------------------------------------------------------------------------------


@dataclass
class RunRow:
    """What the run's SQL row should say."""

    hash: str
    name: str
    experiment: str
    tag: str | None
    created: float | None = None
    """Unix time; None: now (a row that exists keeps its own)."""


def write_rows(repo: Any, rows: Iterable[RunRow]) -> None:
    """Create or update the SQL rows of ``rows`` in one transaction."""
    from aim.storage.structured.sql_engine import models

    ExperimentModel: Any = models.Experiment
    RunModel: Any = models.Run
    TagModel: Any = models.Tag
    wanted = {row.hash: row for row in rows}
    if not wanted:
        return
    session = repo.structured_db.get_session(autocommit=False)
    try:
        existing = {
            model.hash: model
            for model in session.query(RunModel).filter(RunModel.hash.in_(list(wanted)))
        }
        experiments: dict[str, Any] = {}
        tags: dict[str, Any] = {}

        def experiment(name: str) -> Any:
            if name not in experiments:
                found = session.query(ExperimentModel).filter(ExperimentModel.name == name).first()
                if found is None:
                    found = ExperimentModel(name)
                    session.add(found)
                experiments[name] = found
            return experiments[name]

        def tag(name: str) -> Any:
            if name not in tags:
                found = session.query(TagModel).filter(TagModel.name == name).first()
                if found is None:
                    found = TagModel(name)
                    session.add(found)
                tags[name] = found
            return tags[name]

        for row in wanted.values():
            model = existing.get(row.hash)
            if model is None:
                created = (
                    datetime.datetime.fromtimestamp(row.created, datetime.timezone.utc).replace(
                        tzinfo=None
                    )
                    if row.created is not None
                    else datetime.datetime.utcnow()
                )
                model = RunModel(row.hash, created)
                session.add(model)
            model.name = row.name
            model.experiment = experiment(row.experiment)
            if row.tag is not None:
                kept = [t for t in model.tags if t.name not in STATE_TAGS]
                model.tags = [*kept, tag(row.tag)]
        session.commit()
    except BaseException:
        session.rollback()
        raise


def delete_rows(repo: Any, hashes: Iterable[str]) -> None:
    from aim.storage.structured.sql_engine import models

    RunModel: Any = models.Run
    hashes = list(hashes)
    if not hashes:
        return
    session = repo.structured_db.get_session(autocommit=False)
    try:
        for model in session.query(RunModel).filter(RunModel.hash.in_(hashes)):
            model.tags = []
            session.delete(model)
        session.commit()
    except BaseException:
        session.rollback()
        raise


STATE_TAGS = ("complete", "pruned", "failed", "running")
