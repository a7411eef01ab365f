"""Containers: processes on this machine that run modal's own container entrypoint.

Each container gets, as on Modal: its function's mounts written out under a root folder of
its own (``<task>/fs``, whose ``root`` folder plays ``/root``: the working directory, first on
``sys.path``), a view of each volume it mounts, its secrets as environment variables, a
socket of its own to the server, and ``ContainerArguments`` in a file. It runs
``python -m modal._container_entrypoint`` (through :mod:`fake_modal._bootstrap`) with this
machine's Python, so the packages the image would install are this virtualenv's.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import sys
from pathlib import Path
from typing import TYPE_CHECKING

import psutil
from modal_proto import api_pb2

if TYPE_CHECKING:
    from fake_modal._functions import Function, Functions, Input, Running

BOOTSTRAP = Path(__file__).with_name("_bootstrap.py")
VOLUME_MOUNT_VARIABLE = "SWEEPER_VOLUME_MOUNT"
"""sweeper's containers find the Volume mounted at /sweeper under this path instead (and
any container finds each of its volumes in ``FAKE_MODAL_VOLUMES``, by mount path)."""


class Container:
    def __init__(self, functions: Functions, function: Function, task_id: str) -> None:
        self.functions = functions
        self.function = function
        self.task_id = task_id
        self.server = functions.server
        self.folder = self.server.root / "tasks" / task_id
        self.process: asyncio.subprocess.Process | None = None
        self.returncode: int | None = None
        self.running: Input | None = None
        self.run: Running | None = None
        self.waiting = False
        self.hello = False
        self.heartbeats = 0
        self.inputs_taken = 0
        self.dead = False
        self.killed_for: str | None = None
        self.task_result: api_pb2.GenericResult | None = None
        self.stale_outputs: list[api_pb2.FunctionPutOutputsItem] = []
        self._exited = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    def __repr__(self) -> str:
        state = "dead" if self.dead else "running" if self.running else "idle"
        return f"Container({self.task_id} of {self.function.name}, {state})"

    @property
    def log(self) -> Path:
        """Everything the container printed (modal's own messages included)."""
        return self.folder / "output.log"

    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._live())

    async def _live(self) -> None:
        returncode = -1
        try:
            environ = self._prepare()
            await self.server.listen(self.task_id, self.server.socket_path(self.task_id))
            with open(self.log, "ab") as log:
                self.process = await asyncio.create_subprocess_exec(
                    sys.executable,
                    str(BOOTSTRAP),
                    cwd=str(self.folder / "fs" / "root"),
                    env=environ,
                    stdin=asyncio.subprocess.DEVNULL,
                    stdout=log,
                    stderr=asyncio.subprocess.STDOUT,
                    start_new_session=True,
                )
            if self.dead:  # killed while it was being prepared
                self._signal(signal.SIGKILL)
            returncode = await self.process.wait()
        except Exception as error:  # the fake's own failure to start it
            self.server.errors.append((None, error))  # type: ignore[arg-type]
        finally:
            self.returncode = returncode
            self._exited.set()
            await self.functions.container_exited(self, returncode)

    def _prepare(self) -> dict[str, str]:
        """Write the container's files; return its environment."""
        function = self.function
        assert function.definition is not None
        definition = function.definition
        images = self.functions.service.images
        fs = self.folder / "fs"
        (fs / "root").mkdir(parents=True, exist_ok=True)
        for mount_id in definition.mount_ids:
            for path, content, mode in images.mount_files(mount_id):
                target = fs / path.lstrip("/")
                target.parent.mkdir(parents=True, exist_ok=True)
                target.write_bytes(content)
                if mode:
                    target.chmod(mode & 0o777 | 0o600)
        app = self.functions.service.apps.get(function.app_id)
        arguments = api_pb2.ContainerArguments(
            task_id=self.task_id,
            function_id=function.function_id,
            app_id=function.app_id,
            function_def=definition,
            environment_name="main",
            app_layout=self.functions.layout(app),
        )
        (self.folder / "arguments.bin").write_bytes(arguments.SerializeToString())
        environ = {
            key: value
            for key, value in os.environ.items()
            if not key.startswith("MODAL_") and key not in ("PYTHONPATH", VOLUME_MOUNT_VARIABLE)
        }
        environ.update(images.secret_env(list(definition.secret_ids)))
        mounted: dict[str, str] = {}
        for mount in definition.volume_mounts:
            view = self.functions.service.volumes.mount(
                self.task_id, mount.volume_id, self.folder / "volumes" / mount.volume_id
            )
            mounted[mount.mount_path] = str(view.path)
            if mount.mount_path == "/sweeper":
                environ[VOLUME_MOUNT_VARIABLE] = str(view.path)
        environ.update(
            {
                "MODAL_SERVER_URL": self.server.url_for(self.task_id),
                "MODAL_IS_REMOTE": "1",
                "MODAL_TASK_ID": self.task_id,
                "MODAL_CONTAINER_ARGUMENTS_PATH": str(self.folder / "arguments.bin"),
                "MODAL_ENVIRONMENT": "main",
                "PYTHONUNBUFFERED": "1",
                "FAKE_MODAL_FS": str(fs),
                "FAKE_MODAL_PATCHES": json.dumps(self.server.container_patches),
                "FAKE_MODAL_VOLUMES": json.dumps(mounted),
            }
        )
        if self.server.pythonpath:
            environ["PYTHONPATH"] = os.pathsep.join(self.server.pythonpath)
        return environ

    def _signal(self, number: int) -> None:
        """Signal the container's processes: all of them, as a container's end takes its
        whole cgroup (children in sessions of their own too, like Aim's UI server)."""
        if self.process is None or self.process.returncode is not None:
            return
        try:
            children = psutil.Process(self.process.pid).children(recursive=True)
        except psutil.Error:
            children = []
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.process.pid, number)
        for child in children:
            with contextlib.suppress(psutil.Error):
                child.send_signal(number)

    async def kill(self, reason: str) -> None:
        """Kill the container now (``SIGKILL``) and wait until it is gone."""
        if self.killed_for is None:
            self.killed_for = reason
        self.dead = True
        self._signal(signal.SIGKILL)
        if self.process is not None:
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(self._exited.wait(), 30)

    def output(self) -> str:
        try:
            return self.log.read_text(errors="replace")
        except FileNotFoundError:
            return ""
