"""``python -m sweeper ui``: Aim's UI over a sweep's repo, read-only, on loopback.

The server is :mod:`sweeper.tracking._ui_server`, in a process group of its own."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import IO

from sweeper._errors import ConfigError, UsageError
from sweeper.tracking._readonly import normalize_base_path
from sweeper.tracking._ui_server import BASE_PATH_VARIABLE
from sweeper.tracking._writer import UI_MARKER

DEFAULT_PORT = 43800


def free_port(host: str, preferred: int) -> int:
    """``preferred`` if nothing listens there, else a free port the OS picks."""
    for port in (preferred, 0):
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
            try:
                probe.bind((host, port))
            except OSError:
                continue
            chosen: int = probe.getsockname()[1]
            return chosen
    raise ConfigError(f"no free port on {host}")


def check_repo(repo: Path) -> None:
    if not (repo / ".aim").is_dir():
        raise UsageError(
            f"no Aim repo at {repo}. Run a sweep first (python -m sweeper run FILE), or give "
            "--aim-repo."
        )


@contextlib.contextmanager
def aim_ui(
    repo: Path, host: str = "127.0.0.1", port: int = DEFAULT_PORT, base_path: str = ""
) -> Iterator[str]:
    """Serve Aim's UI on ``repo`` while the block runs; yield its URL once it answers.

    The server is read-only: it answers only requests on the allow-list of reads in
    :mod:`sweeper.tracking._readonly`, so nothing can be created, edited or deleted from
    the page or with a request of one's own. It runs in a process group of its own, which
    is stopped on the way out, whatever happens. ``base_path`` puts every page and API
    route under that path (for a secret in a public URL); the server never prints it.
    """
    check_repo(repo)
    port = free_port(host, port)
    local = "127.0.0.1" if host in ("0.0.0.0", "") else host
    base_path = normalize_base_path(base_path)
    url = f"http://{local}:{port}{base_path}"
    marker = repo / UI_MARKER
    marker.write_text(str(os.getpid()))
    with tempfile.TemporaryFile() as errors:  # not a pipe: nobody reads it while it serves
        process = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "sweeper.tracking._ui_server",
                "--repo",
                str(repo),
                "--host",
                host,
                "--port",
                str(port),
            ],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=errors,
            env={**_importable_env(), BASE_PATH_VARIABLE: base_path},
            start_new_session=True,
        )
        try:
            _wait_until_up(url, process, errors)
            yield url
        finally:
            _stop(process)
            with contextlib.suppress(OSError):
                marker.unlink()


def _importable_env() -> dict[str, str]:
    """This environment, with sweeper importable wherever the server's working folder is
    (a Modal container adds it to this process's path, not necessarily to a child's)."""
    root = str(Path(__file__).resolve().parents[2])
    path = os.environ.get("PYTHONPATH", "")
    return {**os.environ, "PYTHONPATH": os.pathsep.join(p for p in (root, path) if p)}


def _wait_until_up(
    url: str, process: subprocess.Popen[bytes], errors: IO[bytes], timeout: float = 120
) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            errors.seek(0)
            error = errors.read().decode(errors="replace").strip()
            last = error.splitlines()[-1] if error else "no output"
            raise UsageError(f"the Aim UI did not start ({last}).")
        try:
            with urllib.request.urlopen(f"{url}/api/projects/", timeout=2):
                return
        except (urllib.error.URLError, OSError):
            time.sleep(0.25)
    raise UsageError(f"the Aim UI did not answer at {url} within {timeout:.0f}s.")


def _stop(process: subprocess.Popen[bytes]) -> None:
    """Stop the server and everything it started (uvicorn workers, Aim's migrations)."""
    # Read-only: nothing is lost if it stops short, so it gets 5 s to stop (uvicorn's graceful
    # shutdown can wait on a connection that lingers), then less.
    for sig, wait in ((signal.SIGINT, 5.0), (signal.SIGTERM, 3.0), (signal.SIGKILL, 5.0)):
        if process.poll() is not None:
            break
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(process.pid, sig)
        with contextlib.suppress(subprocess.TimeoutExpired):
            process.wait(wait)
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(process.pid, signal.SIGKILL)  # anything of the group left behind


def serve_until_interrupted(
    repo: Path, host: str, port: int, announce: Callable[[str], None]
) -> None:
    """The ``ui`` command: serve, say where, and stop cleanly on Ctrl-C (or SIGTERM)."""

    def interrupt(signum: int, frame: object) -> None:
        raise KeyboardInterrupt

    previous = signal.signal(signal.SIGTERM, interrupt)
    try:
        with contextlib.suppress(KeyboardInterrupt), aim_ui(repo, host, port) as url:
            announce(url)
            while True:
                time.sleep(3600)
    finally:
        signal.signal(signal.SIGTERM, previous)
