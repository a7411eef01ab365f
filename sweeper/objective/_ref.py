"""How a worker finds the objective: a file and a function name, or a function sent by value."""

from __future__ import annotations

import importlib.util
import inspect
import os
import sys
import traceback
import types
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import cloudpickle

from sweeper._errors import ObjectiveError

_SWEEPER_DIR = str(Path(__file__).resolve().parent.parent)


@dataclass(frozen=True)
class ObjectiveRef:
    """A picklable pointer to the objective, resolved in each worker by :meth:`load`.

    A file is imported once per worker under its own module name (never as ``__main__``, so
    its ``if __name__ == "__main__":`` block does not run), with its folder first on
    ``sys.path`` as ``python file.py`` would have it. A function is sent by value with
    cloudpickle (by reference when its module is importable in the worker).
    """

    label: str
    path: str | None = None
    function: str = "objective"
    pickled: bytes | None = None
    sys_path: tuple[str, ...] = ()
    imports: tuple[str, ...] = ()
    """Top-level modules a function objective uses (for container images)."""
    import_first: bool = False
    """Whether one worker should import the file before the others do: its module code does
    more than define things (creates a database, downloads data), and two workers doing it
    at once could race, as they never do under plain ``python FILE``."""

    @classmethod
    def from_file(
        cls, path: str | os.PathLike[str], function: str, *, import_first: bool = False
    ) -> ObjectiveRef:
        resolved = Path(path).resolve()
        return cls(
            label=f"{path}:{function}",
            path=str(resolved),
            function=function,
            import_first=import_first,
        )

    @classmethod
    def from_function(cls, function: Callable[..., Any]) -> ObjectiveRef:
        name = getattr(function, "__qualname__", None) or type(function).__name__
        check_signature(function, name)
        try:
            pickled = cloudpickle.dumps(function)
        except Exception as error:
            raise ObjectiveError(
                f"the objective {name} cannot be sent to workers ({type(error).__name__}: "
                f"{error}). Move what it uses that cannot be pickled (open files, locks, "
                "clients) inside the function."
            ) from None
        from sweeper.objective._imports import function_imports

        return cls(
            label=name,
            function=name,
            pickled=pickled,
            # "" is the working directory now, wherever the workers start.
            sys_path=tuple(os.path.abspath(p) if p == "" else p for p in sys.path),
            imports=tuple(sorted(function_imports(function))),
        )

    def load(self) -> Callable[[Any], Any]:
        """Import or unpickle the objective in this process; raise ObjectiveError if unusable."""
        for entry in reversed(self.sys_path):
            if entry not in sys.path:
                sys.path.insert(0, entry)
        if self.pickled is not None:
            try:
                function = cloudpickle.loads(self.pickled)
            except Exception as error:
                raise ObjectiveError(
                    f"the objective {self.label} could not be loaded in a worker "
                    f"({type(error).__name__}: {error}). Define it in an importable module "
                    "or make what it uses importable in the worker."
                ) from None
        else:
            assert self.path is not None
            module = import_file(Path(self.path))
            try:
                function = getattr(module, self.function)
            except AttributeError:
                raise ObjectiveError(
                    f"{self.path} has no function `{self.function}` once imported. Define "
                    f"{self.function}(trial) at module level."
                ) from None
        check_signature(function, self.label)
        return function  # type: ignore[no-any-return]


def import_file(path: Path) -> types.ModuleType:
    """Import ``path`` as a module named after its stem (never ``__main__``)."""
    folder = str(path.parent)
    if folder not in sys.path:
        sys.path.insert(0, folder)
    name = path.stem if path.stem.isidentifier() else "_sweeper_objective"
    if name in sys.modules and getattr(sys.modules[name], "__file__", None) != str(path):
        name = "_sweeper_objective"
    spec = importlib.util.spec_from_file_location(name, path)
    if spec is None or spec.loader is None:
        raise ObjectiveError(f"cannot import {path}. Give the path to a Python source file.")
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    try:
        spec.loader.exec_module(module)
    except BaseException as error:
        sys.modules.pop(name, None)
        raise ObjectiveError(_import_failure(path, error)) from error
    return module


def check_signature(function: Any, label: str) -> None:
    if not callable(function):
        raise ObjectiveError(
            f"the objective {label} is a {type(function).__name__}, not a function. "
            "Give a function that takes the trial: def objective(trial): ..."
        )
    try:
        signature = inspect.signature(function)
    except (TypeError, ValueError):
        return  # builtins and some callables have none; let the call decide
    try:
        signature.bind(object())
    except TypeError:
        raise ObjectiveError(
            f"the objective {label}{signature} cannot be called with one argument; it must "
            "take the trial: def objective(trial): ..."
        ) from None


def _import_failure(path: Path, error: BaseException) -> str:
    """One line: what the file raised while being imported, and where in it."""
    line = ""
    for frame in traceback.extract_tb(error.__traceback__):
        if frame.filename == str(path):
            line = f":{frame.lineno}"
    if isinstance(error, SyntaxError):
        return f"{path}:{error.lineno}: syntax error: {error.msg}. Fix the file and run again."
    message = str(error).strip().splitlines()
    detail = f": {message[0]}" if message else ""
    fix = (
        "Install it in the workers' environment."
        if isinstance(error, ImportError)
        else "Fix the file and run again."
    )
    first = f"{path}{line} raised {type(error).__name__} while being imported{detail}. {fix}"
    # The traceback from the file on (not sweeper's or importlib's part), shown once, where
    # it says more than the line above: the error came from deeper than the file's line.
    frames = [
        frame
        for frame in traceback.extract_tb(error.__traceback__)
        if not frame.filename.startswith(_SWEEPER_DIR)
        and "importlib" not in frame.filename
        and not frame.filename.startswith("<frozen")
    ]
    if len(frames) < 2 or isinstance(error, ImportError):
        return first  # the one line says where already
    trace = "".join(traceback.format_list(frames)).rstrip()
    return f"{first}\nTraceback (most recent call last):\n{trace}"
