"""``run --dry-run``: what a sweep would build and start, and what it would cost an hour,
without contacting Modal or needing credentials."""

from __future__ import annotations

import os
from typing import Any

from sweeper._cost import (
    MODAL_DEFAULT_CPU,
    MODAL_DEFAULT_MEMORY_MIB,
    Resources,
    format_usd,
    modal_prices,
    parse_gpu,
    rate_for,
)
from sweeper._errors import ConfigError
from sweeper._format import format_duration
from sweeper.backends._modal_setup import MODAL_DEFAULT_PARALLEL, settings_from
from sweeper.objective._ref import ObjectiveRef

GPU_PLAN_LIMITS = (("Starter", 10), ("Team", 50))
"""GPUs at once per Modal plan (Enterprise: by arrangement), as the pricing page says."""


def dry_run_lines(objective: ObjectiveRef, config: Any, notes: tuple[str, ...] = ()) -> list[str]:
    """What ``run`` would build and start for this sweep, and what it would cost an hour,
    without contacting Modal (``--dry-run``)."""
    parallel = config.parallel or _default_parallel(config)
    head = [
        f"Dry run: nothing is built, started or charged. This is what `run` would do for "
        f"{objective.label} (study {config.study!r}).",
    ]
    head += [f"note: {text}" for text in notes]
    budget = "; ".join(
        part
        for part in (
            f"{config.n_trials} trials" if config.n_trials else "",
            f"timeout {format_duration(config.timeout)}" if config.timeout else "",
            f"budget {format_usd(config.budget)}" if config.budget is not None else "",
        )
        if part
    )
    if config.backend != "modal":
        return [
            *head,
            f"Local backend: {parallel} worker processes on this machine, one trial each at "
            "a time; " + (budget or "until interrupted (Ctrl-C)") + ".",
            "Cost: none (local workers); --budget does not apply.",
        ]
    try:
        from sweeper.backends import _modal_app
    except ImportError as error:
        raise ConfigError(
            f"the Modal backend needs the modal package ({error}): pip install modal"
        ) from None
    if config.requirements and not os.path.isfile(config.requirements):
        raise ConfigError(f"--requirements {config.requirements}: no such file.")
    settings = settings_from(config)
    rate = rate_for(config)  # refuses a budget it cannot price
    deployment = _modal_app.build(settings, objective)  # Modal's own checks, offline
    assert deployment.images is not None
    trial_image, hub_image = deployment.images
    prices = modal_prices()
    lines = [
        *head,
        f"Modal App {settings.app_name!r}, ephemeral: it exists while the sweep runs, and its "
        "containers stop with it.",
        "",
        "Function run_trial: one call per trial, "
        f"{parallel} at once (--parallel), so at most {parallel} containers; "
        + (budget or "until interrupted (Ctrl-C)"),
    ]
    if config.gpu:
        kinds = []
        for choice in config.gpu:
            kind, count = parse_gpu(choice)
            known = prices.gpu_price(kind) is not None
            kinds.append(f"{count} x {kind}" + ("" if known else " (not in the price table)"))
        gpu = ", else ".join(kinds)
        if len(kinds) > 1:
            gpu += " (a fallback list: Modal gives the first it has)"
        lines.append(f"  GPU: {gpu} per container")
        if parallel > GPU_PLAN_LIMITS[0][1]:
            plans = ", ".join(f"{plan} {limit}" for plan, limit in GPU_PLAN_LIMITS)
            lines.append(
                f"  note: Modal's plans limit the GPUs a workspace has at once ({plans}, on "
                f"{prices.date}'s pricing page); trials past yours wait for a GPU, unbilled"
            )
    else:
        lines.append("  GPU: none (CPU containers; --gpu H100, for one)")
    cpu = (
        f"{config.cpu:g} cores" if config.cpu else f"{MODAL_DEFAULT_CPU:g} cores (Modal's default)"
    )
    memory = (
        f"{config.memory} MiB"
        if config.memory
        else f"{MODAL_DEFAULT_MEMORY_MIB} MiB (Modal's default)"
    )
    lines.append(f"  CPU: {cpu}; memory: {memory}")
    lines.append(
        f"  timeout: {settings.timeout} s per trial"
        + (
            f" (--trial-timeout {config.trial_timeout:g} s, and 60 s for sweeper to report it)"
            if config.trial_timeout
            else " (Modal's limit when --trial-timeout is not given)"
        )
    )
    lines.append(
        f"  retries: {settings.retries} (--retries: a trial whose container fails runs again "
        "as the same trial; Modal restarts a preempted one regardless)"
    )
    lines.append(
        "  secrets: "
        + (
            ", ".join(settings.secrets) + " (as environment variables)"
            if settings.secrets
            else "none (--secret NAME)"
        )
    )
    lines.append(
        f"  volume: {settings.volume!r} at {_modal_app.VOLUME_MOUNT} (trial checkpoints, the Aim "
        "repo); created if missing"
    )
    lines += _image_lines(trial_image)
    if config.track:
        lines += [
            "",
            "Function aim_hub: one container while the sweep runs; writes the Aim repo on the "
            "volume and serves its UI through a tunnel",
            f"  CPU: {MODAL_DEFAULT_CPU:g} cores; memory: {MODAL_DEFAULT_MEMORY_MIB} MiB "
            "(Modal's defaults); timeout 86400 s",
            *_image_lines(hub_image),
        ]
    hub = modal_prices().rate(Resources()) if config.track else None
    lines += [
        "",
        f"Estimated price ({rate.provenance}, {prices.source}):",
        f"  one trial container: {format_usd(rate.per_hour, exact=True)} an hour = "
        f"{rate.breakdown()}",
        f"  {parallel} at once: {format_usd(rate.per_hour * parallel, exact=True)} an hour"
        + (f"; the Aim hub {format_usd(hub.per_hour, exact=True)} an hour" if hub else ""),
    ]
    if rate.unpriced:
        lines.append(
            f"  not priced: GPU {', '.join(rate.unpriced)} (not in the table; give its price in "
            "SWEEPER_PRICES)"
        )
    if config.trial_timeout:
        # A trial is cancelled at --trial-timeout, and its container stopped.
        worst = rate.per_second * config.trial_timeout
        lines.append(
            f"  a trial that runs its whole --trial-timeout: {format_usd(worst, exact=True)}"
            + (
                f"; {config.n_trials} of them: {format_usd(worst * config.n_trials)}"
                if config.n_trials
                else ""
            )
        )
    if config.budget is not None:
        lines.append(
            f"  --budget {format_usd(config.budget)}: no trial is asked for once the estimate "
            "(spent, plus what running trials are expected to cost) would pass it"
        )
    lines += [
        "  Modal bills each container by the second for what it requests (and for CPU and "
        "memory it uses beyond that); "
        "the estimate counts each trial from its input to its output, restarts included.",
        "",
        "Modal credentials: "
        + (
            "set up here."
            if _modal_app.has_credentials()
            else "none here; a real run needs `modal setup` (or MODAL_TOKEN_ID and "
            "MODAL_TOKEN_SECRET)."
        ),
    ]
    return lines


def _image_lines(plan: Any) -> list[str]:
    lines = [f"  image: debian_slim, Python {plan.python_version}"]
    lines.append("    pip install: " + (" ".join(plan.packages) if plan.packages else "nothing"))
    if plan.requirements_file:
        lines.append(f"    pip install -r {plan.requirements_file}")
    for local, remote in plan.files:
        lines.append(f"    file: {local} -> {remote}")
    lines.append(f"    local Python packages: {', '.join(plan.sources)}")
    return lines


def _default_parallel(config: Any) -> int:
    if config.backend == "modal":
        return MODAL_DEFAULT_PARALLEL
    from sweeper.backends._local import default_parallel

    return default_parallel()
