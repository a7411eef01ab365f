"""Plain functions that tests of the fake itself run as Modal functions.

They are decorated by the tests (``app.function(...)(examples.square)``), not here, so this
module imports without Modal; containers import it from the image's mount of
``fake_modal`` (``Image.add_local_python_source("fake_modal")``).
"""

from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path


def square(x: int) -> int:
    return x * x


def fail(x: int) -> int:
    raise ValueError(f"no square for {x}")


def sleep(seconds: float) -> float:
    time.sleep(seconds)
    return seconds


def where() -> dict[str, str]:
    """Where this container imported this module from, and what it sees."""
    return {
        "module": __file__,
        "cwd": os.getcwd(),
        "path0": sys.path[0],
        "secret": os.environ.get("EXAMPLE_SECRET", ""),
    }


def _local(mount: str) -> str:
    """Where the fake server put the volume mounted at ``mount``."""
    return dict(json.loads(os.environ.get("FAKE_MODAL_VOLUMES") or "{}")).get(mount, mount)


def write(volume: str, mount: str, name: str, text: str, commit: bool) -> None:
    import modal

    Path(_local(mount), name).write_text(text)
    if commit:
        modal.Volume.from_name(volume).commit()


def read(volume: str, mount: str, name: str, reload: bool) -> str | None:
    import modal

    if reload:
        modal.Volume.from_name(volume).reload()
    path = Path(_local(mount), name)
    return path.read_text() if path.exists() else None
