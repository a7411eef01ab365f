"""Child Python processes connected to this one by a socket: workers and the tracking hub."""

from __future__ import annotations

import faulthandler
import os
import socket
import subprocess
import sys
import threading
import time
import traceback
from collections.abc import Callable, Mapping, Sequence
from multiprocessing.connection import Connection
from pathlib import Path
from typing import IO, NoReturn

_PACKAGE_ROOT = str(Path(__file__).resolve().parent.parent)


def spawn_python(
    entry: str,
    args: Sequence[str] = (),
    *,
    env: Mapping[str, str],
    output: IO[bytes] | int | None = None,
) -> tuple[subprocess.Popen[bytes], Connection]:
    """Start ``python -c "from MODULE import main; main(sys.argv)" FD *args``.

    ``entry`` is ``"package.module"`` with a ``main(argv)``; ``argv[1]`` is the child's end of
    a socket pair whose other end is returned. The child runs in a session of its own, so a
    Ctrl-C in the terminal reaches only this process, which decides what the child does.
    Started with ``-c`` rather than ``-m`` so the module keeps its name and its classes
    unpickle on both sides.
    """
    parent, child = socket.socketpair()
    child_fd = child.detach()
    environment = dict(env)
    environment["PYTHONPATH"] = os.pathsep.join(
        p for p in (_PACKAGE_ROOT, environment.get("PYTHONPATH", "")) if p
    )
    code = f"import sys; from {entry} import main; main(sys.argv)"
    try:
        process = subprocess.Popen(
            [sys.executable, "-c", code, str(child_fd), *args],
            pass_fds=(child_fd,),
            env=environment,
            stdin=subprocess.DEVNULL,
            stdout=output,
            stderr=subprocess.STDOUT if output is not None else None,
            start_new_session=True,
        )
    except OSError:
        parent.close()
        raise
    finally:
        os.close(child_fd)
    return process, Connection(parent.detach())


def child_main(serve: Callable[[], None]) -> NoReturn:
    """The body of a child's ``main``: exit with the parent, dump the Python stack on a crash,
    print an unexpected error to the child's log, and exit without interpreter teardown
    (objectives may leave threads or CUDA contexts behind)."""
    faulthandler.enable()
    die_with_parent()
    status = 0
    try:
        serve()
    except BaseException:
        traceback.print_exc()
        status = 1
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(status)


def die_with_parent() -> None:
    """In a child: exit when the parent dies (``kill -9`` included), even mid-trial."""
    parent = os.getppid()
    if sys.platform.startswith("linux"):
        try:
            import ctypes
            import signal

            libc = ctypes.CDLL("libc.so.6", use_errno=True)
            if libc.prctl(1, signal.SIGKILL) == 0:  # PR_SET_PDEATHSIG
                if os.getppid() != parent:
                    os._exit(70)
                return
        except Exception:
            pass

    def watch() -> None:
        while True:
            time.sleep(1.0)
            if os.getppid() != parent:
                os._exit(70)

    threading.Thread(target=watch, name="sweeper-parent-watch", daemon=True).start()
