"""Shared fixtures: a project folder per test, and the CLI run as a real process."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import optuna
import pytest
from optuna.storages.journal import JournalFileBackend, JournalStorage

OBJECTIVES = Path(__file__).parent / "objectives"
REPO = Path(__file__).resolve().parent.parent

optuna.logging.set_verbosity(optuna.logging.WARNING)


class Project:
    """A working directory with the sweeper CLI run in it as a subprocess."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.env = {k: v for k, v in os.environ.items() if not k.startswith("SWEEPER_")}
        self.env["PYTHONPATH"] = os.pathsep.join(
            p for p in (str(REPO), self.env.get("PYTHONPATH", "")) if p
        )

    def write(self, name: str, source: str) -> Path:
        path = self.path / name
        path.write_text(source)
        return path

    def objective(self, name: str) -> str:
        """Path of a shared test objective."""
        return str(OBJECTIVES / name)

    def command(self, *args: str) -> list[str]:
        return [sys.executable, "-m", "sweeper", *args]

    def sweeper(
        self, *args: str, timeout: float = 120, env: dict[str, str] | None = None
    ) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            self.command(*args),
            cwd=self.path,
            env={**self.env, **(env or {})},
            capture_output=True,
            text=True,
            timeout=timeout,
        )

    def start(self, *args: str, env: dict[str, str] | None = None) -> subprocess.Popen[str]:
        return subprocess.Popen(
            self.command(*args),
            cwd=self.path,
            env={**self.env, **(env or {})},
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )

    @property
    def journal(self) -> Path:
        return self.path / ".sweeper" / "optuna.journal"

    def storage(self) -> JournalStorage:
        return JournalStorage(JournalFileBackend(str(self.journal)))

    def study(self, name: str) -> optuna.Study:
        return optuna.load_study(study_name=name, storage=self.storage())

    def study_names(self) -> list[str]:
        if not self.journal.exists():
            return []
        return [s.study_name for s in self.storage().get_all_studies()]


@pytest.fixture
def project(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Project]:
    monkeypatch.chdir(tmp_path)
    for key in list(os.environ):
        if key.startswith("SWEEPER_"):
            monkeypatch.delenv(key)
    yield Project(tmp_path)


def states(study: optuna.Study) -> dict[str, int]:
    counts: dict[str, int] = {}
    for trial in study.get_trials(deepcopy=False):
        counts[trial.state.name] = counts.get(trial.state.name, 0) + 1
    return counts
