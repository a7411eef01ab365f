"""A sweep's options made into a Modal backend: the App's settings, the input of one
trial's call, and what must be there to run (the modal package, credentials, files)."""

from __future__ import annotations

import os
from typing import Any

from sweeper._errors import ConfigError
from sweeper.backends._modal import ModalBackend
from sweeper.backends._modal_session import ModalCloud
from sweeper.objective._ref import ObjectiveRef
from sweeper.trial._messages import TrialSpec

MODAL_DEFAULT_PARALLEL = 4
"""Trials at once on Modal when ``--parallel`` is not given."""


def settings_from(config: Any) -> Any:
    """The :class:`ModalSettings` a sweep's options ask for."""
    from sweeper.backends._modal_app import DEFAULT_TIMEOUT, ModalSettings

    gpu: str | list[str] | None = None
    if config.gpu:
        gpu = config.gpu[0] if len(config.gpu) == 1 else list(config.gpu)
    # Modal's own timeout comes a little after the sweep's, so the sweep reports it.
    timeout = int(config.trial_timeout) + 60 if config.trial_timeout else DEFAULT_TIMEOUT
    return ModalSettings(
        gpu=gpu,
        cpu=config.cpu,
        memory=config.memory,
        timeout=min(timeout, 24 * 3600),
        retries=config.retries or 0,
        secrets=tuple(config.secrets or ()),
        volume=config.volume or "sweeper",
        pip=tuple(config.pip or ()),
        requirements_file=config.requirements,
    )


def make_request(
    spec: TrialSpec, channel: Any, objective: ObjectiveRef, volume: str | None
) -> Any:
    """The ``run_trial`` input for one trial."""
    from sweeper.backends._modal_app import TrialRequest

    root = spec.root if spec.root is not None else spec.number
    return TrialRequest(
        spec=spec,
        objective=objective,
        queue=channel,
        study=spec.study_name,
        root=root,
        volume=volume,
    )


def make_modal_backend(objective: ObjectiveRef, config: Any, parallel: int) -> ModalBackend:
    """The Modal backend for a sweep, or a UsageError saying what is missing to run it."""
    try:
        from sweeper.backends import _modal_app
    except ImportError as error:
        raise ConfigError(
            f"the Modal backend needs the modal package ({error}): pip install modal"
        ) from None
    if not _modal_app.has_credentials():
        raise ConfigError(
            "--backend modal needs Modal credentials, and none are set up here. Run `modal "
            "setup` once (or set MODAL_TOKEN_ID and MODAL_TOKEN_SECRET), then run again."
        )
    if config.requirements and not os.path.isfile(config.requirements):
        raise ConfigError(f"--requirements {config.requirements}: no such file.")
    settings = settings_from(config)
    deployment = _modal_app.build(settings, objective)
    return ModalBackend(ModalCloud(deployment), parallel, make_request, retries=settings.retries)
