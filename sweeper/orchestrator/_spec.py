"""A trial just asked for, turned into what its worker needs: the :class:`TrialSpec`.

This is where sampling happens up front (the parameters the sampler decides jointly, and
values drawn ahead for the ones the objective will likely ask for), so it runs wherever
trials are asked: the asker's thread, or a sampler process (:mod:`sweeper.orchestrator._asker`).
Everything here is picklable for that reason.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import optuna
from optuna.distributions import BaseDistribution

from sweeper._logging import get_logger
from sweeper.study._recovery import FAIL_REASON_KEY, RETRY_OF_KEY
from sweeper.trial._messages import TrialSpec

logger = get_logger(__name__)

# Samplers whose sample_independent looks only at finished trials, not at the trial's other
# parameters: a value for a parameter can be drawn before the objective asks for it.
INDEPENDENT_SAMPLERS = frozenset(
    {
        "AutoSampler",
        "RandomSampler",
        "TPESampler",
        "CmaEsSampler",
        "GPSampler",
        "QMCSampler",
        "NSGAIISampler",
        "NSGAIIISampler",
    }
)


@dataclass(frozen=True)
class SpecPlan:
    """What preparing a spec needs besides the trial."""

    log_dir: str
    checkpoints: str | None = None
    """Local trials' checkpoint folders (on Modal the trial finds its own on the Volume)."""
    recent_space: dict[str, BaseDistribution] = field(default_factory=dict)
    """Parameters recent trials asked for: values for them are drawn ahead."""


def prepare_for(live: optuna.Trial, plan: SpecPlan) -> TrialSpec:
    """:func:`prepare_spec`, and if the sampler fails at it, the trial (asked already) is
    told FAIL with the sampler's error before the error goes on: nothing is left running."""
    try:
        return prepare_spec(live, plan)
    except BaseException as error:
        import traceback

        reason = f"the sampler failed: {type(error).__name__}: {error}"
        try:
            live.study._storage.set_trial_system_attr(
                live._trial_id, FAIL_REASON_KEY, f"{reason}\n\n{traceback.format_exc()}"
            )
            live.study.tell(live, state=optuna.trial.TrialState.FAIL)
        except Exception as telling:  # the next sweep's recovery will see it RUNNING
            logger.debug("could not record the failed ask of trial %d: %s", live.number, telling)
        raise


def prepare_spec(live: optuna.Trial, plan: SpecPlan) -> TrialSpec:
    """The spec of a trial just asked for, with everything sampled up front."""
    spec = build_spec(live, log_path=str(Path(plan.log_dir) / f"trial-{live.number}.log"))
    proposals = propose(live, spec, plan.recent_space)
    if proposals:
        spec = replace(spec, proposals=proposals)
    if plan.checkpoints is not None:
        root = spec.root if spec.root is not None else spec.number
        spec = replace(spec, checkpoint_dir=str(Path(plan.checkpoints) / f"trial-{root}"))
    return spec


def build_spec(live: optuna.Trial, log_path: str | None = None) -> TrialSpec:
    """The spec of a trial just asked for: what the sampler decided up front travels with it."""
    relative_params = live.relative_params  # samples the jointly sampled parameters now
    frozen = live._cached_frozen_trial  # what ask() read; no extra storage round trip
    return TrialSpec(
        number=live.number,
        study_name=live.study.study_name,
        directions=tuple(d.name.lower() for d in live.study.directions),
        fixed_params=dict(live._fixed_params),
        relative_params=dict(relative_params),
        relative_search_space=dict(live.relative_search_space or {}),
        user_attrs=dict(frozen.user_attrs),
        datetime_start=live.datetime_start,
        log_path=log_path,
        root=frozen.system_attrs.get(RETRY_OF_KEY),
        trial_id=live._trial_id,
        study_id=live.study._study_id,
    )


def propose(
    live: optuna.Trial, spec: TrialSpec, recent_space: dict[str, BaseDistribution]
) -> dict[str, tuple[Any, Any]]:
    """Values for the parameters recent trials asked for, sampled now by the study's sampler,
    so the worker needs no round trip for them. Only for samplers whose independent sampling
    does not depend on the trial's other parameters; a value the objective does not use is
    simply not recorded."""
    sampler = live.study.sampler
    if type(sampler).__name__ not in INDEPENDENT_SAMPLERS:
        return {}
    frozen = live._cached_frozen_trial
    proposals = {}
    for name, distribution in recent_space.items():
        # A parameter of the relative search space that the sampler did not sample jointly
        # (its random start, say) is sampled independently when asked for: draw it now.
        if name in spec.fixed_params or name in spec.relative_params:
            continue
        if distribution.single():
            continue
        try:
            value = sampler.sample_independent(live.study, frozen, name, distribution)
        except Exception as error:  # the worker will ask instead
            logger.debug("could not propose %s: %s", name, error)
            continue
        proposals[name] = (distribution, value)
    return proposals
