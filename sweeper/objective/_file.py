"""Read an objective file without running it.

The orchestrator never imports the user's file: its module-level code (imports, data
loading) runs once per worker, and on Modal the orchestrator's machine may not even have the
objective's packages. So the file is checked and its settings are read from its syntax tree:

- the function (``objective`` unless told otherwise) must be defined at module level and
  take the trial as its one required argument;
- a module-level ``SWEEP = {...}`` dict literal carries the sweep's settings;
- settings written for plain Optuna are picked up too, so unmodified Optuna examples run as
  their authors meant: literal arguments of ``optuna.create_study(direction=...,
  directions=..., sampler=..., pruner=...)`` and ``study.optimize(objective, n_trials=...,
  timeout=...)``, wherever they appear (usually under ``if __name__ == "__main__":``, which
  is never executed).
"""

from __future__ import annotations

import ast
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sweeper._errors import ObjectiveError
from sweeper.objective._ast import call_name, is_main_guard

SETTINGS_VARIABLE = "SWEEP"
DEFAULT_FUNCTION = "objective"


@dataclass(frozen=True)
class ObjectiveFile:
    """What the orchestrator knows about an objective file before any worker imports it."""

    path: Path
    function: str
    settings: dict[str, Any] = field(default_factory=dict)
    """Settings from the ``SWEEP`` dict, as written."""
    optuna_settings: dict[str, Any] = field(default_factory=dict)
    """Settings read from the literal arguments of ``create_study``/``optimize`` calls."""
    optuna_lines: dict[str, int] = field(default_factory=dict)
    """The line of each of those."""
    unreadable: dict[str, int] = field(default_factory=dict)
    """Settings those calls give that are not literals, by line: running the main block
    (:mod:`sweeper.objective._capture`) takes them."""
    main_block: bool = False
    """Whether its ``if __name__ == "__main__":`` block sets up a study (and is run)."""
    import_effects: bool = False
    """Whether importing it does more than define things (module code that reads, writes or
    computes): the first import then runs before the others, so they do not race."""


def read_objective_file(
    path: str | os.PathLike[str], function: str | None = None
) -> ObjectiveFile:
    """Check ``path`` and read its settings; raise :class:`ObjectiveError` if it is unusable."""
    file = Path(path)
    source = _read_source(file)
    try:
        tree = ast.parse(source, filename=str(file))
    except SyntaxError as error:
        where = f"{file}:{error.lineno}" if error.lineno else str(file)
        raise ObjectiveError(
            f"{where}: syntax error: {error.msg}. Fix the file and run again."
        ) from None

    settings = _read_settings_dict(tree, file)
    unreadable: dict[str, int] = {}
    lines: dict[str, int] = {}
    optuna_settings, inferred_function = _read_optuna_calls(tree, unreadable, lines)

    name = function or settings.get("objective") or inferred_function or DEFAULT_FUNCTION
    if not isinstance(name, str):
        raise ObjectiveError(f"{file}: SWEEP['objective'] must be a function name (a string).")
    _check_function(tree, file, name)
    settings.pop("objective", None)
    from sweeper.objective._capture import needs_capture

    return ObjectiveFile(
        path=file.resolve(),
        function=name,
        settings=settings,
        optuna_settings=optuna_settings,
        optuna_lines=lines,
        unreadable=unreadable,
        main_block=needs_capture(tree),
        import_effects=_has_import_effects(tree),
    )


def _read_source(file: Path) -> str:
    if not file.exists():
        raise ObjectiveError(
            f"objective file not found: {file}. Give the path to a Python file that defines "
            "objective(trial)."
        )
    if file.is_dir():
        raise ObjectiveError(
            f"{file} is a directory. Give the path to a Python file that defines objective(trial)."
        )
    try:
        data = file.read_bytes()
    except OSError as error:
        raise ObjectiveError(
            f"cannot read {file}: {error.strerror or error}. Check its permissions."
        ) from None
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        raise ObjectiveError(
            f"{file} is not a UTF-8 text file. Give the path to a Python source file."
        ) from None


def _read_settings_dict(tree: ast.Module, file: Path) -> dict[str, Any]:
    for node in tree.body:
        targets: list[ast.expr] = []
        value: ast.expr | None = None
        if isinstance(node, ast.Assign):
            targets, value = node.targets, node.value
        elif isinstance(node, ast.AnnAssign) and node.value is not None:
            targets, value = [node.target], node.value
        if value is None or not any(
            isinstance(t, ast.Name) and t.id == SETTINGS_VARIABLE for t in targets
        ):
            continue
        try:
            settings = ast.literal_eval(value)
        except (ValueError, SyntaxError):
            raise ObjectiveError(
                f"{file}:{node.lineno}: {SETTINGS_VARIABLE} must be a literal dict "
                "(strings, numbers, lists, dicts), because sweeper reads it without running "
                "the file."
            ) from None
        if not isinstance(settings, dict) or not all(isinstance(k, str) for k in settings):
            raise ObjectiveError(
                f"{file}:{node.lineno}: {SETTINGS_VARIABLE} must be a dict with string keys, "
                f'for example {SETTINGS_VARIABLE} = {{"n_trials": 50}}.'
            )
        return dict(settings)
    return {}


def _literal(node: ast.expr) -> tuple[bool, Any]:
    try:
        return True, ast.literal_eval(node)
    except (ValueError, SyntaxError, TypeError):
        return False, None


def _read_optuna_calls(
    tree: ast.Module, unreadable: dict[str, int], lines: dict[str, int]
) -> tuple[dict[str, Any], str | None]:
    """Settings from the literal arguments of ``create_study(...)`` and ``study.optimize(...)``
    calls; the settings given there that are not literals go in ``unreadable`` (by line),
    and the line of each setting read in ``lines``."""
    found: dict[str, list[Any]] = {}
    functions: list[str] = []
    for node in ast.walk(tree):
        if not isinstance(node, ast.Call):
            continue
        name = call_name(node)
        if name == "create_study":
            for keyword in node.keywords:
                if keyword.arg in ("direction", "directions"):
                    ok, value = _literal(keyword.value)
                    if ok:
                        key = "directions" if keyword.arg == "directions" else "direction"
                        found.setdefault(key, []).append(value)
                        lines["directions"] = node.lineno
                    else:
                        unreadable["directions"] = node.lineno
                elif keyword.arg in ("sampler", "pruner"):
                    component = _component(keyword.value)
                    if component is not None:
                        found.setdefault(keyword.arg, []).append(component)
                        lines[keyword.arg] = node.lineno
                    elif not (
                        isinstance(keyword.value, ast.Constant) and keyword.value.value is None
                    ):
                        unreadable[keyword.arg] = node.lineno
        elif name == "optimize" and node.args:
            first = node.args[0]
            if isinstance(first, ast.Name):
                functions.append(first.id)
            for keyword in node.keywords:
                if keyword.arg in ("n_trials", "timeout"):
                    ok, value = _literal(keyword.value)
                    if ok and value is not None:
                        found.setdefault(keyword.arg, []).append(value)
                        lines[keyword.arg] = node.lineno
                    elif not ok:
                        unreadable[keyword.arg] = node.lineno
                elif keyword.arg == "callbacks":
                    unreadable["callbacks"] = node.lineno
    settings: dict[str, Any] = {}
    for key, values in found.items():
        if key in ("n_trials", "timeout"):  # several optimize calls: one after the other
            settings[key] = sum(values)
        elif len({repr(v) for v in values}) == 1:
            settings[key] = values[0]
        else:
            unreadable[key] = lines.get(key, 0)
    if "direction" in settings and "directions" not in settings:
        settings["directions"] = [settings.pop("direction")]
    settings.pop("direction", None)
    if "sampler" in settings:
        settings["sampler"], settings["sampler_args"] = settings["sampler"]
    if "pruner" in settings:
        settings["pruner"], settings["pruner_args"] = settings["pruner"]
    function = functions[0] if len(set(functions)) == 1 else None
    return settings, function


def _component(node: ast.expr) -> tuple[str, dict[str, Any]] | None:
    """``optuna.samplers.TPESampler(seed=1)`` -> ("TPESampler", {"seed": 1}), or None when
    it is not such a call with literal arguments."""
    if not isinstance(node, ast.Call) or node.args:
        return None
    name = call_name(node)
    arguments: dict[str, Any] = {}
    for keyword in node.keywords:
        ok, value = _literal(keyword.value)
        if not ok or keyword.arg is None:
            return None
        arguments[keyword.arg] = value
    return (name or ""), arguments


def _check_function(tree: ast.Module, file: Path, name: str) -> None:
    definitions: dict[str, ast.stmt] = {}
    for statement in tree.body:
        for bound in _bound_names(statement):
            definitions[bound] = statement
    node = definitions.get(name)
    if node is None:
        functions = sorted(
            n.name for n in tree.body if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef))
        )
        listed = f" Functions defined there: {', '.join(functions)}." if functions else ""
        fix = "Pick one with --objective NAME." if functions else "Define objective(trial)."
        raise ObjectiveError(f"{file} has no function `{name}`.{listed} {fix}")
    if isinstance(node, ast.AsyncFunctionDef):
        raise ObjectiveError(
            f"{file}:{node.lineno}: `{name}` is an async function; the objective must be a "
            f"plain function: def {name}(trial): ..."
        )
    if isinstance(node, ast.FunctionDef):
        problem = _signature_problem(node.args)
        if problem:
            raise ObjectiveError(
                f"{file}:{node.lineno}: `{name}` {problem}; it must take the trial as its one "
                f"argument: def {name}(trial): ..."
            )


def _has_import_effects(tree: ast.Module) -> bool:
    """Whether the module does anything at import beyond imports, definitions and literal
    assignments (and its main block, which workers never run)."""
    for node in tree.body:
        if isinstance(
            node,
            (
                ast.Import,
                ast.ImportFrom,
                ast.FunctionDef,
                ast.AsyncFunctionDef,
                ast.ClassDef,
                ast.Pass,
            ),
        ):
            continue
        if isinstance(node, ast.Expr) and isinstance(node.value, ast.Constant):
            continue  # a docstring
        if isinstance(node, ast.If) and is_main_guard(node.test):
            continue
        if (
            isinstance(node, (ast.Assign, ast.AnnAssign))
            and node.value is not None
            and (_literal(node.value)[0] or isinstance(node.value, (ast.Name, ast.Attribute)))
        ):
            continue
        return True
    return False


def _bound_names(node: ast.stmt) -> list[str]:
    if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
        return [node.name]
    if isinstance(node, ast.Assign):
        return [n.id for t in node.targets for n in ast.walk(t) if isinstance(n, ast.Name)]
    if isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name):
        return [node.target.id]
    if isinstance(node, (ast.Import, ast.ImportFrom)):
        return [(a.asname or a.name).split(".")[0] for a in node.names]
    if isinstance(node, ast.If) and is_main_guard(node.test):
        return []  # never runs in a worker
    if isinstance(node, (ast.If, ast.Try, ast.With)):
        names: list[str] = []
        for child in ast.iter_child_nodes(node):
            if isinstance(child, ast.stmt):
                names.extend(_bound_names(child))
        return names
    return []


def _signature_problem(args: ast.arguments) -> str | None:
    positional = len(args.posonlyargs) + len(args.args)
    required = positional - len(args.defaults)
    required_keywords = [
        a.arg for a, d in zip(args.kwonlyargs, args.kw_defaults, strict=True) if d is None
    ]
    if required_keywords:
        return f"requires keyword argument(s) {', '.join(required_keywords)}"
    if required > 1:
        return f"takes {required} required arguments"
    if positional == 0 and args.vararg is None:
        return "takes no arguments"
    return None
