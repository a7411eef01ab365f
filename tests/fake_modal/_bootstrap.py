"""A fake Modal container's first code: set the process up as Modal's would be, then run
modal's own container entrypoint (``python -m modal._container_entrypoint``).

Run as a script by :class:`fake_modal._containers.Container`, with the container's ``root``
folder (which plays ``/root``) as the working directory. It uses only the standard library
until the entrypoint starts.

- ``sys.path`` starts with the working directory, as in a Modal container (not with this
  script's folder).
- Files the image put at absolute paths (``/root/...``) are under ``FAKE_MODAL_FS`` here; an
  objective file sweeper loads by such a path is looked up there.
- ``FAKE_MODAL_PATCHES`` (JSON ``{"module:attribute": value}``) sets module attributes, so
  that what a test monkeypatches in its own process (a shorter heartbeat, say) holds in the
  containers too.
"""

from __future__ import annotations

import importlib
import json
import os
import runpy
import sys
from pathlib import Path


def _container_path(path: str) -> str:
    """Where a file the image put at ``path`` is on this machine."""
    fs = os.environ.get("FAKE_MODAL_FS")
    if fs and os.path.isabs(path) and not os.path.exists(path):
        local = os.path.join(fs, path.lstrip("/"))
        if os.path.exists(local):
            return local
    return path


def _map_objective_paths() -> None:
    try:
        from sweeper.objective import _ref
    except ImportError:
        return
    original = _ref.import_file

    def import_file(path: Path):  # type: ignore[no-untyped-def]
        return original(Path(_container_path(str(path))))

    _ref.import_file = import_file


def _apply_patches() -> None:
    patches = json.loads(os.environ.get("FAKE_MODAL_PATCHES") or "{}")
    for target, value in patches.items():
        module_name, attribute = target.split(":")
        setattr(importlib.import_module(module_name), attribute, value)


def main() -> None:
    sys.path[0] = os.getcwd()
    _map_objective_paths()
    _apply_patches()
    runpy.run_module("modal._container_entrypoint", run_name="__main__", alter_sys=True)


if __name__ == "__main__":
    main()
