"""Write tracking events into an Aim repo. Only one process at a time does this for a repo.

Many writers corrupt Aim repos (on shared or network filesystems especially), so a writer
takes an exclusive lock on the repo folder and keeps it while it lives. It is the local
tracking hub's process, or the Aim hub container on Modal; the orchestrator only sends it
events.

What a trial's Aim run holds:

- experiment: the study name; name: ``trial <number>``; tags: its state;
- ``hparams``: the trial's parameters;
- ``sweeper``: study, trial number(s), state, worker, the reason a trial failed;
- ``result``: state, value(s), duration;
- metric ``objective``: every ``trial.report(value, step)``, at its step;
- any metric the objective logs with ``trial.log`` / ``sweeper.log``.

The study's run (name ``study``) holds the sweep's settings, and the metrics ``best_value``
(single objective) or ``pareto_front_size``, plus ``complete``, ``pruned`` and ``failed``,
each against the number of finished trials.

Aim 3.29 no longer indexes a run when it closes, and the SDK's queries read the index, so
a finished run is indexed here, unless ``sweeper ui`` is serving the repo (its indexer does
it then, and two indexers must not fight over the index).
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import logging
import os
import sys
import warnings
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from sweeper._errors import SweeperError
from sweeper._logging import get_logger
from sweeper.tracking._events import (
    Event,
    Logged,
    ParamsSet,
    Reported,
    StudyDeleted,
    StudyOpened,
    StudyProgress,
    TrialFinished,
    TrialStarted,
)

logger = get_logger(__name__)

RUNS_FILE = "sweeper-runs.jsonl"
"""Which Aim run belongs to which study and trial (one JSON object per line)."""
WRITER_LOCK = "sweeper-writer.lock"
UI_MARKER = "sweeper-ui.pid"
REPORT_METRIC = "objective"
STATE_TAGS = ("complete", "pruned", "failed", "running")


class TrackingError(SweeperError):
    """The Aim repo cannot be written (Aim missing, repo unusable, another writer)."""


class AimWriter:
    """Applies :mod:`sweeper.tracking` events to the Aim repo at ``path``.

    Not thread-safe; one instance per repo per machine, enforced by a file lock.
    """

    def __init__(self, path: str | os.PathLike[str], *, index_runs: bool = True) -> None:
        self.path = Path(path)
        self._index_runs = index_runs
        try:
            self.path.mkdir(parents=True, exist_ok=True)
            self._lock_file = open(self.path / WRITER_LOCK, "a+")  # noqa: SIM115 - held open
        except OSError as error:
            raise TrackingError(
                f"cannot use {self.path} for the Aim repo: {error.strerror or error}"
            ) from None
        try:
            fcntl.flock(self._lock_file, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            self._lock_file.close()
            raise TrackingError(
                f"another sweep is writing to the Aim repo {self.path}; only one may at a time"
            ) from None
        try:
            from aim.sdk.repo import Repo, RepoStatus
            from aim.sdk.run import Run
        except ImportError as error:
            self._release()
            raise TrackingError(f"Aim cannot be imported ({error})") from None
        self._repo_cls, self._run_cls = Repo, Run
        try:
            if Repo.check_repo_status(str(self.path)) == RepoStatus.UPDATED:
                self._repo = Repo.from_path(str(self.path))
            else:
                self._repo = _init_repo(Repo, str(self.path))
        except Exception as error:
            self._release()
            raise TrackingError(f"the Aim repo {self.path} is unusable ({error})") from None
        self._hashes: dict[tuple[str, int | None], str] = self._read_runs_file()
        self._open: dict[tuple[str, int | None], Any] = {}
        self._unindexed: list[str] = []
        self._last: dict[str, StudyProgress] = {}

    # -- public ----------------------------------------------------------------------------

    def apply(self, events: Iterable[Event]) -> None:
        """Write ``events`` in order. An event Aim cannot write is logged and skipped."""
        for event in events:
            try:
                self._apply(event)
            except Exception as error:
                logger.warning("tracking: could not write %s: %s", type(event).__name__, error)

    def close(self) -> None:
        """Finish every open run (a sweep that stops leaves none running) and unlock."""
        for key in list(self._open):
            self._close_run(key)
        self._release()

    @property
    def repo_path(self) -> Path:
        return self.path

    # -- events ----------------------------------------------------------------------------

    def _apply(self, event: Event) -> None:
        if isinstance(event, TrialStarted):
            run = self._run(event.study, event.root, event.number)
            run["sweeper", "trial"] = event.number
            run["sweeper", "state"] = "RUNNING"
            run["sweeper", "started"] = event.started
            self._set_state_tag(run, "running")
        elif isinstance(event, ParamsSet):
            run = self._run(event.study, event.root)
            for name, value in event.params.items():
                run["hparams", name] = value
        elif isinstance(event, Reported):
            self._run(event.study, event.root).track(
                event.value, name=REPORT_METRIC, step=event.step
            )
        elif isinstance(event, Logged):
            run = self._run(event.study, event.root)
            for name, value in event.metrics.items():
                run.track(value, name=name, step=event.step, context=event.context)
        elif isinstance(event, TrialFinished):
            self._finish(event)
        elif isinstance(event, StudyOpened):
            run = self._run(event.study, None)
            run["sweeper", "kind"] = "study"
            run["sweeper", "directions"] = list(event.directions)
            run["settings"] = event.settings
        elif isinstance(event, StudyProgress):
            self._progress(event)
        elif isinstance(event, StudyDeleted):
            self._delete_study(event.study)

    def _finish(self, event: TrialFinished) -> None:
        key = (event.study, event.root)
        run = self._run(event.study, event.root, event.number)
        for name, value in event.params.items():
            run["hparams", name] = value
        result: dict[str, Any] = {"state": event.state, "duration": event.duration}
        if event.values is not None:
            result["values"] = list(event.values)
            if len(event.values) == 1:
                result["value"] = event.values[0]
        run["result"] = result
        run["sweeper", "trial"] = event.number
        run["sweeper", "state"] = event.state
        run["sweeper", "worker"] = event.worker
        run["sweeper", "fail_reason"] = event.reason if event.state == "FAIL" else None
        self._set_state_tag(run, {"FAIL": "failed"}.get(event.state, event.state.lower()))
        self._close_run(key)

    def _delete_study(self, study: str) -> None:
        keys = [key for key in self._hashes if key[0] == study]
        for key in keys:
            run = self._open.pop(key, None)
            if run is not None:
                run.close()
        hashes = [self._hashes.pop(key) for key in keys]
        self._rewrite_runs_file()
        with contextlib.suppress(AttributeError):
            self._repo_cls._all_run_hashes.cache_clear()
        self._repo.delete_runs(hashes)

    def _progress(self, event: StudyProgress) -> None:
        run = self._run(event.study, None)
        step = event.finished
        for name, label in (("COMPLETE", "complete"), ("PRUNED", "pruned"), ("FAIL", "failed")):
            run.track(float(event.counts.get(name, 0)), name=label, step=step)
        if event.best_value is not None:
            run.track(event.best_value, name="best_value", step=step)
            run["best"] = {"value": event.best_value, "trial": event.best_number}
        if event.pareto_front:
            run.track(float(len(event.pareto_front)), name="pareto_front_size", step=step)
            run["pareto_front"] = [
                {"trial": number, "values": list(values)} for number, values in event.pareto_front
            ]
        run["counts"] = dict(event.counts)

    # -- runs ------------------------------------------------------------------------------

    def _run(self, study: str, root: int | None, number: int | None = None) -> Any:
        key = (study, root)
        run = self._open.get(key)
        if run is not None:
            return run
        options = {
            "repo": self._repo,
            "system_tracking_interval": None,
            "log_system_params": False,
            "capture_terminal_logs": False,
        }
        known = self._hashes.get(key)
        run = None
        if known is not None:
            with contextlib.suppress(AttributeError):
                # Aim caches the list of runs for half a second; a run closed just now
                # would look missing.
                self._repo_cls._all_run_hashes.cache_clear()
            try:
                run = self._run_cls(run_hash=known, force_resume=True, **options)
            except Exception as error:
                logger.debug(
                    "tracking: cannot resume run %s (%s); starting a new one", known, error
                )
        if run is None:
            run = self._run_cls(experiment=study, **options)
            run.name = "study" if root is None else f"trial {root if number is None else number}"
            run["sweeper"] = {
                "study": study,
                "root": root,
                "kind": "study" if root is None else "trial",
            }
            self._hashes[key] = run.hash
            self._append_runs_file({"study": study, "trial": root, "run": run.hash})
        self._open[key] = run
        return run

    def _close_run(self, key: tuple[str, int | None]) -> None:
        run = self._open.pop(key, None)
        if run is None:
            return
        run_hash = run.hash
        run.close()
        if self._index_runs and not self._ui_is_serving():
            self._index(run_hash)
        else:
            self._unindexed.append(run_hash)

    def index_pending(self) -> None:
        """Index the runs closed while someone else was indexing (a UI that has stopped)."""
        pending, self._unindexed = self._unindexed, []
        for run_hash in dict.fromkeys(pending):
            self._index(run_hash)

    def _index(self, run_hash: str) -> None:
        try:
            from aim.sdk.index_manager import RepoIndexManager

            RepoIndexManager.get_index_manager(self._repo).index(run_hash)
        except Exception as error:  # the index is busy (another indexer): it will catch up
            logger.debug("tracking: could not index run %s: %s", run_hash, error)
        finally:
            self._repo.container_pool.clear()  # let go of the index for other readers

    def _set_state_tag(self, run: Any, tag: str) -> None:
        for old in STATE_TAGS:
            if old != tag and old in run.tags:
                run.remove_tag(old)
        if tag not in run.tags:
            run.add_tag(tag)

    def _ui_is_serving(self) -> bool:
        marker = self.path / UI_MARKER
        try:
            pid = int(marker.read_text().strip())
            os.kill(pid, 0)
        except (OSError, ValueError):
            return False
        return True

    # -- the runs file ---------------------------------------------------------------------

    def _read_runs_file(self) -> dict[tuple[str, int | None], str]:
        hashes: dict[tuple[str, int | None], str] = {}
        try:
            lines = (self.path / RUNS_FILE).read_text().splitlines()
        except FileNotFoundError:
            return hashes
        for line in lines:
            with contextlib.suppress(ValueError, KeyError, TypeError):
                entry = json.loads(line)
                hashes[(entry["study"], entry["trial"])] = entry["run"]
        return hashes

    def _rewrite_runs_file(self) -> None:
        lines = [
            json.dumps({"study": study, "trial": trial, "run": run_hash}) + "\n"
            for (study, trial), run_hash in self._hashes.items()
        ]
        (self.path / RUNS_FILE).write_text("".join(lines))

    def _append_runs_file(self, entry: dict[str, Any]) -> None:
        with open(self.path / RUNS_FILE, "a") as file:
            file.write(json.dumps(entry) + "\n")

    def _release(self) -> None:
        if not self._lock_file.closed:
            with contextlib.suppress(OSError):
                fcntl.flock(self._lock_file, fcntl.LOCK_UN)
            self._lock_file.close()


_DB_URL_VARIABLE = "AIM_RUN_META_DATA_DB_URL"  # what Aim's migrations read


def _init_repo(repo_cls: Any, path: str) -> Any:
    """Create (or upgrade) the Aim repo at ``path``, running Aim's database migrations here.

    Aim runs them with ``python -m alembic`` in a new interpreter that imports Aim again:
    over a second of CPU, taken from the trials when the machine is busy. The same alembic
    upgrade in this process, where Aim is imported already, costs a tenth of that. Where
    Aim's internals are not as expected, or the upgrade fails here, Aim's own way runs.
    """
    try:
        from aim.storage.migrations.utils import create_migration_cmd
        from aim.storage.structured import db as aim_db
        from alembic import command
        from alembic.config import Config

        aims_upgrade = getattr(aim_db, "upgrade_database")  # noqa: B009 - not exported
        migration: list[str] = create_migration_cmd()  # type: ignore[no-untyped-call]
        ini = migration[migration.index("-c") + 1]
    except (ImportError, AttributeError, ValueError, IndexError):
        return repo_cls.from_path(path, init=True)

    def upgrade(db_url: str) -> None:
        # The migrations' env.py reads the URL from the environment and reconfigures
        # logging (disabling every other logger); put both back afterwards.
        previous_url = os.environ.get(_DB_URL_VARIABLE)
        path_before = list(sys.path)
        root = logging.getLogger()
        root_state = (root.level, list(root.handlers))
        disabled = {
            name: log.disabled
            for name, log in logging.Logger.manager.loggerDict.items()
            if isinstance(log, logging.Logger)
        }
        os.environ[_DB_URL_VARIABLE] = db_url
        try:
            with warnings.catch_warnings():  # alembic's about Aim's ini file, not for users
                warnings.simplefilter("ignore", DeprecationWarning)
                command.upgrade(Config(ini), "head")
        except Exception as error:
            logger.debug("tracking: in-process Aim migration failed (%s); using Aim's", error)
            aims_upgrade(db_url)
        finally:
            if previous_url is None:
                os.environ.pop(_DB_URL_VARIABLE, None)
            else:
                os.environ[_DB_URL_VARIABLE] = previous_url
            sys.path[:] = path_before
            root.setLevel(root_state[0])
            root.handlers[:] = root_state[1]
            for name, was in disabled.items():
                log = logging.Logger.manager.loggerDict.get(name)
                if isinstance(log, logging.Logger):
                    log.disabled = was

    setattr(aim_db, "upgrade_database", upgrade)  # noqa: B010
    try:
        return repo_cls.from_path(path, init=True)
    finally:
        setattr(aim_db, "upgrade_database", aims_upgrade)  # noqa: B010
