"""The Modal side of sweeper: the functions that run in containers, and how they are defined.

Kept thin on purpose. :func:`build` defines, without contacting Modal, an ephemeral App with:

- ``run_trial``: runs one trial of the objective (the body is :func:`run_trial_remote`,
  the same shared code local workers run), on the GPU, image, volume and secrets the sweep
  asked for;
- ``aim_hub``: the one container that writes the Aim repo on the Volume, from the tracking
  events the orchestrator sends, and serves the Aim UI through a tunnel while it runs;
- ``aim_ui``: serves that repo read-only through a tunnel after the sweep
  (``python -m sweeper ui --backend modal``).

Nothing here needs credentials until the App runs. The function bodies are plain functions
in this module's global scope (decorated in :func:`build`), so containers import them by
name, and tests run them in-process with ``Function.local()``.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import random
import sys
import time
import urllib.parse
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field, replace
from pathlib import Path, PurePosixPath
from typing import Any

import modal

from sweeper._errors import ObjectiveError
from sweeper.channel._base import TrialChannel
from sweeper.channel._queue import UP, QueueTransport
from sweeper.objective._imports import file_imports, pinned, requirements
from sweeper.objective._ref import ObjectiveRef
from sweeper.tracking._readonly import new_secret
from sweeper.trial._messages import TrialResult, TrialSpec
from sweeper.trial._runner import run_trial, worker_identity

VOLUME_MOUNT = "/sweeper"
"""Where the sweep's Volume is mounted in every container."""
REMOTE_OBJECTIVE_DIR = "/root/sweeper_objective"
TRACKING_PARTITION = "tracking"
"""Where the orchestrator sends the hub its tracking events (the hub's own messages go to
the partition the orchestrator reads, ``UP``)."""
UI_PORT = 43800
DEFAULT_TIMEOUT = 2 * 3600
"""Seconds a trial may run on Modal when --trial-timeout is not given."""
CALL_BATCH_SECONDS = 0.5


@dataclass(frozen=True)
class ModalSettings:
    """What a sweep on Modal asks of Modal. Built from the sweep's options."""

    gpu: str | list[str] | None = None
    cpu: float | None = None
    memory: int | None = None
    timeout: int = DEFAULT_TIMEOUT
    retries: int = 0
    secrets: tuple[str, ...] = ()
    volume: str = "sweeper"
    pip: tuple[str, ...] = ()
    requirements_file: str | None = None
    python_version: str = field(
        default_factory=lambda: f"{sys.version_info.major}.{sys.version_info.minor}"
    )
    app_name: str = "sweeper"


@dataclass(frozen=True)
class TrialRequest:
    """One input of the ``run_trial`` map: the trial and how to reach the orchestrator."""

    spec: TrialSpec
    objective: ObjectiveRef
    queue: Any
    """The sweep's ``modal.Queue`` (the trial channel)."""
    study: str
    root: int
    """The trial this one repeats, if it is a rerun (names its checkpoint folder)."""
    volume: str | None = None
    try_number: int = 1
    """Which time sweeper hands this trial to Modal (``--retries`` hands it again after a
    failure); the container says it in its first message, so each start is told apart."""


@dataclass
class ModalDeployment:
    """An App ready to run: its functions, the Volume, and the objective as containers see it."""

    app: modal.App
    run_trial: modal.Function[Any, Any, Any]
    aim_hub: modal.Function[Any, Any, Any]
    aim_ui: modal.Function[Any, Any, Any]
    volume: modal.Volume
    objective: ObjectiveRef
    settings: ModalSettings
    images: tuple[ImagePlan, ImagePlan] | None = None
    """The plans of the trial and hub images."""


# -- in the container ----------------------------------------------------------------------

_OBJECTIVES: dict[str, Callable[[Any], Any]] = {}


def _objective_key(ref: ObjectiveRef) -> str:
    if ref.pickled is not None:
        return hashlib.sha256(ref.pickled).hexdigest()
    return f"{ref.path}:{ref.function}"


def _load(ref: ObjectiveRef) -> Callable[[Any], Any]:
    """The objective, imported once per container (its module code runs once)."""
    key = _objective_key(ref)
    if key not in _OBJECTIVES:
        _OBJECTIVES[key] = ref.load()
    return _OBJECTIVES[key]


def volume_path(*parts: str) -> str:
    """A path on the Volume as containers see it (``SWEEPER_VOLUME_MOUNT`` moves the mount,
    for running these bodies outside Modal)."""
    return "/".join([os.environ.get("SWEEPER_VOLUME_MOUNT", VOLUME_MOUNT), *parts])


def checkpoint_dir(study: str, root: int) -> str:
    safe = "".join(c if c.isalnum() or c in "._-" else "_" for c in study)
    return volume_path("checkpoints", safe, f"trial-{root}")


def run_trial_remote(request: TrialRequest) -> TrialResult:
    """Run one trial in this container and return how it ended; never raises for the
    objective. A container that Modal restarts (preemption, retry) runs this again for the
    same trial: it announces a new attempt, and it is the same Optuna trial. Its parameters
    are the same too: those it carries are in its input, and a parameter it asks for is
    answered with the value the trial already has, if the first attempt asked for it.

    The announcement does not wait for an answer: a trial's first message costs no round
    trip through the orchestrator before the objective starts. No heartbeats: the
    orchestrator waits on each trial's call, so Modal itself says when a container is lost."""
    spec = request.spec
    attempt = random.getrandbits(48) + 1
    transport = QueueTransport(request.queue, spec.number, attempt, heartbeat=0)
    channel = TrialChannel(
        transport,
        spec.number,
        attempt=attempt,
        max_delay=CALL_BATCH_SECONDS,
        cheap_sends=False,  # each send is a Modal queue put
    )
    try:
        channel.notify("started", worker_identity(), {"try": request.try_number}, urgent=True)
        directory = checkpoint_dir(request.study, request.root)
        os.makedirs(directory, exist_ok=True)
        if request.volume:
            os.environ["SWEEPER_VOLUME"] = request.volume
        spec = replace(spec, attempt=attempt, checkpoint_dir=directory)
        try:
            objective = _load(request.objective)
        except ObjectiveError as error:
            return TrialResult(
                number=spec.number,
                state="FAIL",
                reason=str(error),
                load_error=str(error),
                n_calls=channel.n_calls,
                attempt=attempt,
                worker=worker_identity(),
            )
        return run_trial(objective, spec, channel)
    finally:
        transport.close()


def commit_volume(name: str | None) -> None:
    """Persist what this container wrote to the Volume (a restarted trial then sees it)."""
    if name:
        modal.Volume.from_name(name).commit()


def aim_hub_remote(queue: Any, secret: str, volume: str, commit_every: float = 30.0) -> None:
    """The Aim hub: the only writer of the repo on the Volume. Serves the UI while it runs.

    It cannot read the study's storage: what the repo lacks (a hub killed before it
    committed, events it never got) arrives from the orchestrator as reconcile and rebuild
    events, read from the storage there. Events that arrive together are written together.
    """
    from sweeper.tracking._writer import AimWriter

    if volume:
        with contextlib.suppress(Exception):  # a new container sees the last commit anyway
            modal.Volume.from_name(volume).reload()
    writer = AimWriter(volume_path("aim"), index_runs=False)  # the UI indexes while it runs
    try:
        with _served_ui(queue, secret):
            committed = time.monotonic()
            closing = False
            while not closing:
                try:
                    batches = queue.get_many(100, partition=TRACKING_PARTITION, timeout=1.0)
                except Exception:  # queue.Empty
                    batches = []
                for batch in batches:
                    if batch == "close":
                        closing = True
                    else:
                        writer.apply(batch)
                writer.flush()
                if time.monotonic() - committed > commit_every:
                    commit_volume(volume)
                    committed = time.monotonic()
    finally:
        writer.close(index_pending=True)  # the UI is down now: nobody else indexes
        commit_volume(volume)
        queue.put(("closed",), partition=UP)


def aim_ui_remote(queue: Any, secret: str, volume: str) -> None:
    """Serve the repo on the Volume read-only through a tunnel until told to stop."""
    with _served_ui(queue, secret):
        while True:
            try:
                if queue.get(partition="ui", timeout=30.0) == "stop":
                    return
            except Exception:  # queue.Empty: look for what a running sweep committed since
                modal.Volume.from_name(volume).reload()


@contextlib.contextmanager
def _served_ui(queue: Any, secret: str) -> Iterator[None]:
    """Aim's UI on the repo, read-only, behind a tunnel whose URL path is ``secret``; the
    URL goes to the orchestrator on the partition it reads (``UP``)."""
    from sweeper.tracking._ui import aim_ui

    host = os.environ.get("SWEEPER_UI_HOST", "0.0.0.0")  # only the tunnel reaches it
    with aim_ui(Path(volume_path("aim")), host, UI_PORT, base_path=f"/{secret}") as url:
        port = urllib.parse.urlsplit(url).port or UI_PORT
        with modal.forward(port) as tunnel:
            queue.put(("url", f"{tunnel.url}/{secret}/"), partition=UP)
            yield


# -- on the user's machine -----------------------------------------------------------------


def runtime_packages(*, hub: bool = False) -> list[str]:
    """What sweeper's own code needs in a container, pinned to this machine's versions."""
    packages = ["optuna", "cloudpickle"] + (["aim"] if hub else [])
    return [pinned(name) for name in packages]


def objective_packages(objective: ObjectiveRef) -> list[str]:
    """The packages the objective imports, when the user said nothing about packages."""
    if objective.path is not None:
        modules, _ = file_imports(Path(objective.path))
    else:
        modules = set(objective.imports)
    return requirements(modules)


@dataclass(frozen=True)
class ImagePlan:
    """What goes into a container image, decided here and applied by :meth:`to_image`."""

    python_version: str
    packages: tuple[str, ...]
    requirements_file: str | None = None
    files: tuple[tuple[str, str], ...] = ()
    """(local path, path in the container) pairs; folders are added whole."""
    sources: tuple[str, ...] = ("sweeper",)
    """Local Python packages added to the container's path."""

    def to_image(self) -> modal.Image:
        image = modal.Image.debian_slim(python_version=self.python_version)
        if self.packages:
            image = image.pip_install(*self.packages)
        if self.requirements_file:
            image = image.pip_install_from_requirements(self.requirements_file)
        image = image.add_local_python_source(*self.sources)
        for local, remote in self.files:
            if Path(local).is_dir():
                image = image.add_local_dir(local, remote)
            else:
                image = image.add_local_file(local, remote)
        return image


def plan_images(
    settings: ModalSettings, objective: ObjectiveRef
) -> tuple[ImagePlan, ImagePlan, ObjectiveRef]:
    """The trial image, the hub image, and the objective as trial containers load it."""
    if settings.pip or settings.requirements_file:
        user_packages = list(settings.pip)
    else:
        user_packages = objective_packages(objective)
    files: list[tuple[str, str]] = []
    remote = objective
    if objective.path is not None:
        local = Path(objective.path)
        files.append((str(local), f"{REMOTE_OBJECTIVE_DIR}/{local.name}"))
        for sibling in sorted(file_imports(local)[1]):
            module = local.parent / f"{sibling}.py"
            path = module if module.is_file() else local.parent / sibling
            files.append((str(path), f"{REMOTE_OBJECTIVE_DIR}/{path.name}"))
        remote = ObjectiveRef(
            label=objective.label,
            path=f"{REMOTE_OBJECTIVE_DIR}/{local.name}",
            function=objective.function,
        )
    trial = ImagePlan(
        python_version=settings.python_version,
        packages=tuple(sorted(set(runtime_packages() + user_packages))),
        requirements_file=settings.requirements_file,
        files=tuple(files),
    )
    hub = ImagePlan(
        python_version=settings.python_version, packages=tuple(runtime_packages(hub=True))
    )
    return trial, hub, remote


def build(settings: ModalSettings, objective: ObjectiveRef) -> ModalDeployment:
    """Define the App for a sweep (offline: no credentials needed until it runs)."""
    trial_plan, hub_plan, remote = plan_images(settings, objective)
    image, hub_image = trial_plan.to_image(), hub_plan.to_image()
    volume = modal.Volume.from_name(settings.volume, create_if_missing=True)
    mounts: dict[str | PurePosixPath, modal.Volume | modal.CloudBucketMount] = {
        VOLUME_MOUNT: volume
    }
    app = modal.App(settings.app_name)
    trial_function = app.function(
        image=image,
        gpu=settings.gpu,
        cpu=settings.cpu,
        memory=settings.memory,
        timeout=settings.timeout,
        retries=0,  # sweeper hands a failed trial to Modal again itself (--retries)
        secrets=[modal.Secret.from_name(name) for name in settings.secrets],
        volumes=mounts,
        name="run_trial",
        include_source=False,
    )(run_trial_remote)
    hub_function = app.function(
        image=hub_image, volumes=mounts, timeout=24 * 3600, name="aim_hub", include_source=False
    )(aim_hub_remote)
    ui_function = app.function(
        image=hub_image, volumes=mounts, timeout=24 * 3600, name="aim_ui", include_source=False
    )(aim_ui_remote)
    return ModalDeployment(
        app=app,
        run_trial=trial_function,
        aim_hub=hub_function,
        aim_ui=ui_function,
        volume=volume,
        objective=remote,
        settings=settings,
        images=(trial_plan, hub_plan),
    )


def has_credentials() -> bool:
    """Whether Modal has credentials to use here (a token or OAuth settings)."""
    from modal.config import config

    token = config.get("token_id") and config.get("token_secret")
    oauth = config.get("oauth_refresh_token") and config.get("oauth_client_id")
    return bool(token or oauth)


def build_ui(settings: ModalSettings) -> tuple[modal.App, modal.Function[Any, Any, Any]]:
    """An App with only ``aim_ui``, for ``python -m sweeper ui --backend modal``."""
    _, hub_plan, _ = plan_images(settings, ObjectiveRef(label="ui", pickled=b""))
    volume = modal.Volume.from_name(settings.volume, create_if_missing=True)
    app = modal.App(f"{settings.app_name}-ui")
    function = app.function(
        image=hub_plan.to_image(),
        volumes={VOLUME_MOUNT: volume},
        timeout=24 * 3600,
        name="aim_ui",
        include_source=False,
    )(aim_ui_remote)
    return app, function


def serve_ui(settings: ModalSettings, announce: Callable[[str], None]) -> None:
    """Serve the Aim repo on the Volume through a tunnel until Ctrl-C (blocking)."""
    app, function = build_ui(settings)
    with app.run(), modal.Queue.ephemeral() as channel:
        call = function.spawn(channel, new_secret(), settings.volume)
        try:
            message: Any = channel.get(partition=UP, timeout=900)
            announce(str(message[1]))
            while True:
                time.sleep(3600)
        except KeyboardInterrupt:
            pass
        finally:
            channel.put("stop", partition="ui")
            with contextlib.suppress(Exception):
                call.get(timeout=60)
