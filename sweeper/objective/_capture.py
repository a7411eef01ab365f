"""What an Optuna file's own code builds for its study: its sampler, pruner, directions,
callbacks, study name, budget, enqueued trials.

A file written for plain Optuna builds those in its ``if __name__ == "__main__":`` block:
``sampler = TPESampler(constraints_func=constraints)``, ``optuna.create_study(...)``,
``study.enqueue_trial(...)``, ``study.optimize(objective, n_trials=..., callbacks=[...])``.
Reading the literals of those calls misses every object built from variables, so the block
is *run*: in a child process (:func:`capture`), where the file is imported as the workers
import it, with ``optuna.create_study`` and ``optuna.load_study`` making an in-memory study
and ``Study.optimize`` recording its arguments instead of optimizing. What the block built
comes back pickled (the file's own functions and classes by value), with the line of the
call that built each.

The rest of the block after the last ``optimize`` (printing results, plots) finds an empty
study and usually fails; that is expected, and ignored. A block that fails before it has
built its study is reported with its line.
"""

from __future__ import annotations

import ast
import contextlib
import io
import os
import sys
import time
import traceback
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

from sweeper._errors import ObjectiveError
from sweeper.objective._ast import call_name, is_main_guard

_CAPTURE_SECONDS = 300.0
"""How long the main block may take to build its study."""


@dataclass
class FileStudy:
    """What a file's main block built, each with the line that built it."""

    sampler: Any = None
    pruner: Any = None
    directions: list[str] | None = None
    study_name: str | None = None
    storage: str | None = None
    callbacks: list[Any] = field(default_factory=list)
    n_trials: int | None = None
    timeout: float | None = None
    n_jobs: int | None = None
    enqueued: list[dict[str, Any]] = field(default_factory=list)
    user_attrs: dict[str, Any] = field(default_factory=dict)
    lines: dict[str, int] = field(default_factory=dict)
    """Where each of the above was given: ``{"sampler": 42, "n_trials": 45, ...}``."""
    optimize_calls: int = 0
    problem: str | None = None
    """Why the block could not build its study, with its line (None if it did)."""

    @property
    def built(self) -> bool:
        return bool(self.lines) or self.optimize_calls > 0


def needs_capture(tree: ast.Module) -> bool:
    """Whether the file's main block calls ``create_study``, ``load_study`` or ``optimize``."""
    for node in tree.body:
        if isinstance(node, ast.If) and is_main_guard(node.test):
            for inner in ast.walk(node):
                if isinstance(inner, ast.Call) and call_name(inner) in (
                    "create_study",
                    "load_study",
                    "optimize",
                ):
                    return True
    return False


# -- in the child process ---------------------------------------------------------------------


def run_main_block(module: Any, path: Path) -> FileStudy:
    """Run the main block of ``module`` (imported from ``path``) with Optuna's study calls
    recorded, and return what it built."""
    import optuna

    found = FileStudy()
    source = path.read_text(encoding="utf-8")
    tree = ast.parse(source, filename=str(path))
    blocks = [n for n in tree.body if isinstance(n, ast.If) and is_main_guard(n.test)]
    studies: list[optuna.Study] = []
    real_create, real_load = optuna.create_study, optuna.load_study

    def line() -> int | None:
        frame = sys._getframe(1)
        while frame is not None:
            if frame.f_code.co_filename == str(path):
                return frame.f_lineno
            frame = frame.f_back  # type: ignore[assignment]
        return None

    def note(key: str, value: Any, where: int | None) -> None:
        setattr(found, key, value)
        if where is not None:
            found.lines[key] = where

    def create_study(*args: Any, **kwargs: Any) -> optuna.Study:
        where = line()
        named = dict(
            zip(("storage", "sampler", "pruner", "study_name", "direction"), args, strict=False)
        )
        named.update(kwargs)
        for key in ("sampler", "pruner", "study_name"):
            if named.get(key) is not None:
                note(key, named[key], where)
        if named.get("direction") is not None:
            note("directions", [_direction(named["direction"])], where)
        if named.get("directions") is not None:
            note("directions", [_direction(d) for d in named["directions"]], where)
        if named.get("storage") is not None:
            note("storage", _storage_spec(named["storage"]), where)
        study = real_create(
            sampler=named.get("sampler"),
            pruner=named.get("pruner"),
            study_name=named.get("study_name"),
            direction=named.get("direction"),
            directions=named.get("directions"),
        )
        studies.append(study)
        return study

    def load_study(*args: Any, **kwargs: Any) -> optuna.Study:
        where = line()
        named = dict(zip(("study_name", "storage", "sampler", "pruner"), args, strict=False))
        named.update(kwargs)
        for key in ("sampler", "pruner", "study_name"):
            if named.get(key) is not None:
                note(key, named[key], where)
        if named.get("storage") is not None:
            note("storage", _storage_spec(named["storage"]), where)
        study = real_create(sampler=named.get("sampler"), pruner=named.get("pruner"))
        studies.append(study)
        return study

    def optimize(
        self: optuna.Study,
        func: Any,
        n_trials: Any = None,
        timeout: Any = None,
        n_jobs: int = 1,
        catch: Any = (),
        callbacks: Any = None,
        **rest: Any,
    ) -> None:
        where = line()
        found.optimize_calls += 1
        if n_trials is not None:
            note("n_trials", (found.n_trials or 0) + int(n_trials), where)
        if timeout is not None:
            note("timeout", (found.timeout or 0.0) + float(timeout), where)
        if n_jobs not in (None, 1, -1):
            note("n_jobs", int(n_jobs), where)
        if callbacks:
            note("callbacks", [*found.callbacks, *callbacks], where)

    patches = {"create_study": create_study, "load_study": load_study}
    namespace = dict(vars(module))
    namespace["__name__"] = "__main__"
    for name, value in list(namespace.items()):
        if value is real_create:
            namespace[name] = create_study
        elif value is real_load:
            namespace[name] = load_study
    with (
        _patched(optuna, patches),
        _patched(optuna.study, patches),
        _patched(optuna.Study, {"optimize": optimize}),
        _argv([str(path)]),
    ):
        for block in blocks:
            code = compile(ast.Module(body=block.body, type_ignores=[]), str(path), "exec")
            try:
                exec(code, namespace)  # the user's own file, as `python FILE` runs it
            except BaseException as error:
                if found.optimize_calls == 0:  # it failed before the study was set up
                    found.problem = _where(error, path)
                break
    for study in studies:
        for trial in study.get_trials(deepcopy=False):
            if trial.state == optuna.trial.TrialState.WAITING:
                found.enqueued.append(
                    {
                        "params": dict(trial.system_attrs.get("fixed_params", {})),
                        "user_attrs": dict(trial.user_attrs),
                    }
                )
        found.user_attrs.update(study.user_attrs)
    return found


def serve(connection: Connection, path: str) -> None:
    """The capture process: import ``path``, run its main block, send what it built."""
    import cloudpickle

    from sweeper.objective._ref import import_file

    file = Path(path)
    try:
        module = import_file(file)
    except ObjectiveError as error:
        traceback.print_exc()
        connection.send(("import-failed", str(error)))
        return
    cloudpickle.register_pickle_by_value(module)
    found = run_main_block(module, file)
    try:
        blob = cloudpickle.dumps(found)
    except Exception as error:
        found = FileStudy(problem=f"what it built cannot be sent to the sweep ({_one(error)})")
        blob = cloudpickle.dumps(found)
    connection.send(("built", blob))


def main(argv: Sequence[str]) -> None:
    from sweeper._process import child_main

    child_main(lambda: serve(Connection(int(argv[1])), argv[2]))


# -- on the orchestrator's side ---------------------------------------------------------------


def capture(path: Path, log: Path) -> FileStudy:
    """Run ``path``'s main block in a child process and return what it built (with the
    problem, if it could not be imported here or its block failed). Raises
    :class:`ObjectiveError` if the process itself fails."""
    import cloudpickle

    from sweeper._process import spawn_python

    log.parent.mkdir(parents=True, exist_ok=True)
    with open(log, "ab") as output:
        process, connection = spawn_python(
            "sweeper.objective._capture", [str(path)], env=os.environ, output=output
        )
    try:
        deadline = time.monotonic() + _CAPTURE_SECONDS
        while not connection.poll(0.2):
            if process.poll() is not None:
                raise ObjectiveError(
                    f"{path}: running its main block to read its study settings ended the "
                    f"process (exit status {process.returncode}); see {log}."
                )
            if time.monotonic() > deadline:
                raise ObjectiveError(
                    f"{path}: its main block did not finish setting up its study within "
                    f"{_CAPTURE_SECONDS:.0f}s. Give the settings as flags (--sampler, "
                    "--n-trials, ...) or in a SWEEP dict."
                )
        kind, payload = connection.recv()
        if kind == "import-failed":  # on Modal its packages may be only in the image:
            return FileStudy(problem=f"importing it here failed: {payload}")  # is it needed?
        found: FileStudy = cloudpickle.loads(payload)
        return found
    except (EOFError, OSError):
        raise ObjectiveError(
            f"{path}: the process reading its study settings died; see {log}."
        ) from None
    finally:
        connection.close()
        with contextlib.suppress(Exception):
            process.wait(10)
        if process.poll() is None:
            process.kill()
            process.wait()


# -- helpers ----------------------------------------------------------------------------------


@contextlib.contextmanager
def _patched(owner: Any, names: dict[str, Callable[..., Any]]) -> Iterator[None]:
    saved = {name: getattr(owner, name) for name in names if hasattr(owner, name)}
    for name, value in names.items():
        setattr(owner, name, value)
    try:
        yield
    finally:
        for name, value in saved.items():
            setattr(owner, name, value)


@contextlib.contextmanager
def _argv(argv: list[str]) -> Iterator[None]:
    saved = sys.argv
    sys.argv = argv
    stdin = sys.stdin
    sys.stdin = io.StringIO("")  # the block must not wait for input
    try:
        yield
    finally:
        sys.argv, sys.stdin = saved, stdin


def _direction(value: Any) -> str:
    name = getattr(value, "name", value)
    return str(name).lower()


def _storage_spec(storage: Any) -> str | None:
    """The storage a file gave, as --storage would name it (None for an object sweeper
    cannot reopen)."""
    if isinstance(storage, str):
        return storage
    url = getattr(storage, "url", None)
    if isinstance(url, str):
        return url
    backend = getattr(storage, "_backend", None)
    path = getattr(backend, "_file_path", None)
    return str(path) if path else None


def _where(error: BaseException, path: Path) -> str:
    line = None
    for frame in traceback.extract_tb(error.__traceback__):
        if frame.filename == str(path):
            line = frame.lineno
    place = f"line {line}: " if line else ""
    if isinstance(error, SystemExit):
        return f"{place}the main block exited (sys.exit({error.code!r}))"
    return f"{place}{_one(error)}"


def _one(error: BaseException) -> str:
    text = str(error).strip().splitlines()
    return f"{type(error).__name__}: {text[0]}" if text else type(error).__name__


if __name__ == "__main__":
    main(sys.argv)
