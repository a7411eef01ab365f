"""How a worker finds the objective: a file and a function name, or a function sent by value.

A function also gets its default study name here (:func:`study_name_for`) and the
fingerprint that tells it apart from another function of the same name
(:func:`fingerprint`).
"""

from __future__ import annotations

import functools
import hashlib
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
    fingerprint: str | None = None
    """For a function: :func:`fingerprint`, which its study remembers. None for a file,
    whose study is the file's whatever its code is now (edit it and run it again: the
    study goes on)."""

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
            fingerprint=_remember_sent(function),
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


def study_name_for(function: Callable[..., Any]) -> str:
    """The study a function's sweeps go to unless ``study=`` says otherwise: its qualified
    name, ``make_objective.objective`` for a closure, ``lambda`` for a lambda (the
    fingerprint tells two of a name apart: see :func:`fingerprint`)."""
    target: Any = function
    while isinstance(target, functools.partial):
        target = target.func
    name = getattr(target, "__qualname__", None)
    if not isinstance(name, str) or not isinstance(
        target, (types.FunctionType, types.MethodType, types.BuiltinFunctionType)
    ):
        name = type(target).__qualname__  # a callable object: its class
    return name.replace(".<locals>", "").replace("<lambda>", "lambda")


def fingerprint(function: Callable[..., Any]) -> str:
    """What a study remembers of the function it was run with, to tell whether a function
    given later is the same objective.

    A hash of the function's code (its bytecode and constants: comments, blank lines and
    where it sits in a cell do not count), of the code of the functions of the same module
    or notebook that it calls, and of the values of the plain constants (numbers, strings,
    and tuples, lists and dicts of them) that it and they read from globals and closures.
    Redefining the function as it was gives the same fingerprint, in this session or the
    next; changing its search space, its code, a helper or a constant it reads gives
    another. Data it reads (arrays, tensors, data frames) does not count.
    """
    walk = _Fingerprint()
    walk.callable(function)
    return walk.digest()


_sent: dict[str, list[tuple[str, int, int]]] = {}
"""The code of functions sent to workers by value, by name: (file, first line, last line),
the latest first. Sent by value, code loses its file name (cloudpickle names it
``<dynamic-code>``); tracebacks from the workers are shown with it again."""


def _remember_sent(function: Callable[..., Any]) -> str:
    """Note where the code of ``function`` (and of what it calls) is; its fingerprint."""
    walk = _Fingerprint()
    walk.callable(function)
    for code in walk.codes:
        lines = [line for _, _, line in code.co_lines() if line is not None]
        where = (code.co_filename, code.co_firstlineno, max(lines, default=code.co_firstlineno))
        known = _sent.setdefault(code.co_name, [])
        if where in known:
            known.remove(where)
        known.insert(0, where)
        del known[16:]
    return walk.digest()


def sent_from(name: str, line: int) -> str | None:
    """The file of the function ``name`` sent to workers whose code spans ``line``."""
    for filename, first, last in _sent.get(name, ()):
        if first <= line <= last:
            return filename
    return None


class _Fingerprint:
    def __init__(self) -> None:
        self.parts: list[str] = []
        self.codes: list[types.CodeType] = []
        self._seen: set[int] = set()

    def digest(self) -> str:
        return hashlib.sha256("\x00".join(self.parts).encode()).hexdigest()[:16]

    def callable(self, value: Any) -> None:
        if id(value) in self._seen:
            return
        self._seen.add(id(value))
        if isinstance(value, functools.partial):
            self.parts.append("partial")
            self.callable(value.func)
            self.parts.extend(_constant(a) or type(a).__name__ for a in value.args)
            for key, item in sorted(value.keywords.items()):
                self.parts.append(f"{key}={_constant(item) or type(item).__name__}")
        elif isinstance(value, types.MethodType):
            self.callable(value.__func__)
            self._attributes(value.__self__)
        elif isinstance(value, types.FunctionType):
            self._function(value)
        else:
            cls = type(value)
            self.parts.append(cls.__qualname__)
            call = getattr(cls, "__call__", None)  # noqa: B004 - the class's own method
            if isinstance(call, types.FunctionType):
                self._function(call)
            self._attributes(value)

    def _attributes(self, value: Any) -> None:
        """The plain constants an object holds (a callable object's, a method's ``self``)."""
        attributes = getattr(value, "__dict__", None)
        for key, item in sorted(attributes.items() if isinstance(attributes, dict) else ()):
            constant = _constant(item)
            if constant is not None:
                self.parts.append(f"{key}={constant}")

    def _function(self, function: types.FunctionType) -> None:
        code = function.__code__
        self._code(code)
        for default in function.__defaults__ or ():
            self.parts.append(_constant(default) or type(default).__name__)
        for key, default in sorted((function.__kwdefaults__ or {}).items()):
            self.parts.append(f"{key}={_constant(default) or type(default).__name__}")
        module = function.__module__
        for name, cell in zip(code.co_freevars, function.__closure__ or (), strict=False):
            try:
                self._value(name, cell.cell_contents, module)
            except ValueError:  # an empty cell
                continue
        for name in sorted(_global_names(code)):
            if name in function.__globals__:
                self._value(name, function.__globals__[name], module)

    def _value(self, name: str, value: Any, module: str) -> None:
        constant = _constant(value)
        if constant is not None:
            self.parts.append(f"{name}={constant}")
        elif (
            isinstance(value, (types.FunctionType, functools.partial))
            and getattr(value, "__module__", None) == module
        ):
            self.parts.append(f"{name}:")
            self.callable(value)

    def _code(self, code: types.CodeType) -> None:
        self.codes.append(code)
        self.parts.append(code.co_code.hex())
        self.parts.append(" ".join(code.co_names))
        for const in code.co_consts:
            if isinstance(const, types.CodeType):
                self._code(const)
            else:
                self.parts.append(_constant(const) or type(const).__name__)


def _global_names(code: types.CodeType) -> set[str]:
    names = set(code.co_names)
    for const in code.co_consts:
        if isinstance(const, types.CodeType):
            names |= _global_names(const)
    return names


_CONSTANT_ITEMS = 1000


def _constant(value: Any, depth: int = 0) -> str | None:
    """``value`` written out, if it is a plain constant (in a stable order), else None."""
    if value is None or isinstance(value, (bool, int, float, complex, str, bytes)):
        return repr(value)
    if depth > 3 or not isinstance(value, (tuple, list, dict, set, frozenset)):
        return None
    if len(value) > _CONSTANT_ITEMS:
        return None
    if isinstance(value, dict):
        items = [(_constant(k, depth + 1), _constant(v, depth + 1)) for k, v in value.items()]
        if any(k is None or v is None for k, v in items):
            return None
        return "{" + ", ".join(sorted(f"{k}: {v}" for k, v in items)) + "}"
    written = [_constant(item, depth + 1) for item in value]
    if any(item is None for item in written):
        return None
    if isinstance(value, (set, frozenset)):
        return "{" + ", ".join(sorted(item for item in written if item is not None)) + "}"
    inside = ", ".join(item for item in written if item is not None)
    return f"({inside})" if isinstance(value, tuple) else f"[{inside}]"


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
    argv, sys.argv = sys.argv, [str(path)]  # as `python FILE` sees it (argparse at import)
    try:
        spec.loader.exec_module(module)
    except BaseException as error:
        sys.modules.pop(name, None)
        raise ObjectiveError(_import_failure(path, error)) from error
    finally:
        sys.argv = argv
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
