"""Search algorithms and trial schedulers: the names a sweep file's `search_alg` and `scheduler`
take, each with the factory `ganlab.sweep` builds it with.

`ganlab.spec` validates sweep files against these registries before anything heavy is loaded, so
this module stays cheap to import: each factory imports Optuna or Ray Tune itself, when it runs.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

from ganlab.registry import register

if TYPE_CHECKING:
    from optuna.samplers import BaseSampler
    from ray.tune.schedulers import TrialScheduler

    from ganlab.spec import SweepSpec

SAMPLERS: dict[str, Callable[[SweepSpec], BaseSampler]] = {}
"""search_alg -> fn(spec) -> the Optuna sampler. Every search goes through Ray's OptunaSearch, so
every sweep has a journal study to inspect."""

SCHEDULERS: dict[str, Callable[[SweepSpec], TrialScheduler]] = {}
"""scheduler name -> fn(spec) -> the Ray Tune trial scheduler."""

PBT_MUTABLE = ("lr_g", "lr_d", "beta1", "beta2", "penalty_weight", "ema")
"""The trial fields Population Based Training may change mid-training (an exploit clones a
checkpoint and perturbs these): the only ones a `pbt` sweep may search. Any other would make an
exploit change the networks' shapes or the loss under the cloned weights."""
SEARCHLESS = ("pbt",)
"""Schedulers that sample the population themselves (Ray's PBT refuses a search algorithm): no
Optuna study, Tune's own sampling of the `search` entries."""


@register(SAMPLERS, "optuna")
def _tpe(spec: SweepSpec) -> BaseSampler:
    import optuna

    return optuna.samplers.TPESampler(seed=spec.search_seed)


@register(SAMPLERS, "random")
def _random(spec: SweepSpec) -> BaseSampler:
    import optuna

    return optuna.samplers.RandomSampler(seed=spec.search_seed)


@register(SAMPLERS, "grid")
def _grid(spec: SweepSpec) -> BaseSampler:
    import optuna

    space = {p.name: list(p.values) for p in spec.search}
    return optuna.samplers.GridSampler(space, seed=spec.search_seed)


@register(SCHEDULERS, "asha")
def _asha(spec: SweepSpec) -> TrialScheduler:
    from ray.tune.schedulers import ASHAScheduler

    return ASHAScheduler(
        time_attr="step",
        max_t=spec.trial_config({}).steps,
        grace_period=spec.scheduler.grace_period,
        reduction_factor=spec.scheduler.reduction_factor,
    )


@register(SCHEDULERS, "none")
def _fifo(spec: SweepSpec) -> TrialScheduler:
    from ray.tune.schedulers import FIFOScheduler

    return FIFOScheduler()


@register(SCHEDULERS, "pbt")
def _pbt(spec: SweepSpec) -> TrialScheduler:
    from ganlab import pbt

    return pbt.scheduler(spec)
