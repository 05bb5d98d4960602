"""Population Based Training (Jaderberg et al. 2017) on Ray Tune's `PopulationBasedTraining`.

Ray's PBT takes no search algorithm, so the population is drawn by Tune itself from the sweep
file's `search` entries as Tune sample domains (`param_space`), `num_samples` of them. Every
`perturbation_interval` steps a trial in the bottom `quantile_fraction` clones the checkpoint of
one in the top (exploit) and perturbs its searched values (explore: ×0.8 or ×1.2, or a new
draw with `resample_probability`; a choice moves to a neighbour). Perturbed values are kept
within the file's bounds, so every exploit is a valid trial. The score is the robust objective
over seeds, at the GAN step. Only `ganlab.search.PBT_MUTABLE` fields may be searched.
"""

from typing import Any

from ray import tune
from ray.tune.schedulers import PopulationBasedTraining, TrialScheduler
from ray.tune.search.sample import Domain

from ganlab.spec import Param, SweepSpec

PERTURBATION_FACTORS = (1.2, 0.8)  # Ray's defaults, named here: the tests check against them


def domain(param: Param) -> Domain:
    """The Tune sample domain of a searched field (an `int` range includes its high bound)."""
    if param.kind == "choice":
        return tune.choice(list(param.values))
    low, high = param.values
    if param.kind == "int":
        return tune.randint(low, high + 1)
    if param.kind == "loguniform":
        return tune.loguniform(low, high)
    return tune.uniform(low, high)


def param_space(spec: SweepSpec) -> dict[str, Domain]:
    """What Tune draws the population from."""
    return {param.name: domain(param) for param in spec.search}


def mutations(spec: SweepSpec) -> dict[str, Any]:
    """PBT's `hyperparam_mutations`: a choice as its list (explore shifts along it), a range as
    its domain (explore scales or redraws it)."""
    return {p.name: list(p.values) if p.kind == "choice" else domain(p) for p in spec.search}


class KeepInBounds:
    """PBT's `custom_explore_fn`: a scaled value put back within its range's bounds (a beta
    scaled by 1.2 past 1 would not be a valid trial). A class, so the scheduler pickles."""

    def __init__(self, params: tuple[Param, ...]):
        self.bounds = {p.name: (p.kind, *p.values) for p in params if p.kind != "choice"}

    def __call__(self, config: dict[str, Any]) -> dict[str, Any]:
        for name, (kind, low, high) in self.bounds.items():
            value = min(max(config[name], low), high)
            config[name] = round(value) if kind == "int" else float(value)
        return config


class GanPBT(PopulationBasedTraining):
    """PBT that leaves a trial's last report alone: a trial cloned there, or a clone of a
    checkpoint taken there, would have nothing left to train."""

    def on_trial_result(self, tune_controller, trial, result: dict[str, Any]) -> str:
        if result.get("last"):
            return TrialScheduler.CONTINUE
        return super().on_trial_result(tune_controller, trial, result)


def scheduler(spec: SweepSpec) -> PopulationBasedTraining:
    """The sweep's PBT scheduler, acting on evaluations (`time_attr` is the GAN step)."""
    chosen = spec.scheduler
    return GanPBT(
        time_attr="step",
        perturbation_interval=chosen.perturbation_interval,
        hyperparam_mutations=mutations(spec),
        quantile_fraction=chosen.quantile_fraction,
        resample_probability=chosen.resample_probability,
        perturbation_factors=PERTURBATION_FACTORS,
        custom_explore_fn=KeepInBounds(spec.search),
    )
