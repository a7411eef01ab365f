"""A worker's traceback, written as the user's code is seen where the sweep runs."""

from __future__ import annotations

import linecache
import re
import sys
from pathlib import Path

from sweeper.objective._ref import sent_from

_SWEEPER_DIR = str(Path(__file__).resolve().parent.parent)
_FRAME = re.compile(
    r'^(?P<indent>\s*)File "(?P<file>[^"]+)", line (?P<line>\d+)(?P<rest>(?:, in (?P<name>.+))?)$'
)


def user_traceback(trace: str) -> str:
    """``trace`` without sweeper's own frames (the call of the objective), with the frames
    of a function sent by value (cloudpickle names their file ``<dynamic-code>``) in the
    file or notebook cell the function came from, a cell named as IPython names it
    (``Cell In[3], line 5``), and each such frame's line of code, which the worker had no
    copy of."""
    lines = trace.rstrip().splitlines()
    shown: list[str] = []
    skipping = False
    for index, line in enumerate(lines):
        frame = _FRAME.match(line)
        if frame is None:
            if not (skipping and line.startswith(" ")):
                skipping = False
                shown.append(line)
            continue
        filename, number = frame["file"], int(frame["line"])
        skipping = filename.startswith(_SWEEPER_DIR)
        if skipping:
            continue
        if filename == "<dynamic-code>" and frame["name"]:
            filename = sent_from(frame["name"], number) or filename
        cell = _cell_name(filename)
        where = cell if cell is not None else f'File "{filename}"'
        if where == f'File "{frame["file"]}"':
            shown.append(line)
        else:
            shown.append(f"{frame['indent']}{where}, line {number}{frame['rest']}")
        following = lines[index + 1] if index + 1 < len(lines) else ""
        if _FRAME.match(following) or not following.startswith(frame["indent"] + " "):
            code = linecache.getline(filename, number).strip()
            if code:  # the worker had no copy of a cell's code (or of a function sent)
                shown.append(f"{frame['indent']}  {code}")
    return "\n".join(shown)


def _cell_name(filename: str) -> str | None:
    """``Cell In[3]`` for the file name IPython gave a cell's code, else None."""
    if "IPython" not in sys.modules:
        return None
    from IPython import get_ipython

    named = getattr(getattr(get_ipython(), "compile", None), "format_code_name", None)
    try:
        found = named(filename) if named is not None else None
    except Exception:
        return None
    return f"{found[0]} {found[1]}" if found else None
