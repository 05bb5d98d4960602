"""The search-algorithm and scheduler registries: each name builds what it names, and the sweep
builds whatever the registry holds under the sweep file's name."""

import textwrap

import optuna
import pytest
from ray.tune.schedulers import ASHAScheduler, FIFOScheduler
from ray.tune.search.optuna import OptunaSearch
from raytrials import report, trial_config

from ganlab import spec as specs
from ganlab import sweep
from ganlab.search import SAMPLERS, SCHEDULERS

SWEEP = """
name: t
base: {dataset: ring8, steps: 40, eval_every: 20, width: 16}
search:
  lr_d: {choice: [1.0e-4, 1.0e-3]}
seeds: 2
search_seed: 7
"""


def load(tmp_path, extra: str = "") -> specs.SweepSpec:
    path = tmp_path / "t.yaml"
    path.write_text(textwrap.dedent(SWEEP) + extra)
    return specs.load(path, storage=str(tmp_path / "runs"))


def test_the_registries_hold_the_documented_names():
    assert list(SAMPLERS) == ["optuna", "random", "grid"]
    assert list(SCHEDULERS) == ["asha", "none", "pbt"]


@pytest.mark.parametrize(
    "name,sampler",
    [("optuna", optuna.samplers.TPESampler), ("random", optuna.samplers.RandomSampler),
     ("grid", optuna.samplers.GridSampler)],
)  # fmt: skip
def test_each_search_alg_builds_its_seeded_optuna_sampler(tmp_path, name, sampler):
    spec = load(tmp_path, f"search_alg: {name}\n")
    first, again = SAMPLERS[name](spec), SAMPLERS[name](spec)
    assert type(first) is sampler
    space = {"lr_d": optuna.distributions.CategoricalDistribution([1.0e-4, 1.0e-3])}
    if name != "grid":  # a continuous draw, which two unseeded samplers never repeat
        space = {"x": optuna.distributions.FloatDistribution(0.0, 1.0)}
    studies = [optuna.create_study(sampler=s) for s in (first, again)]
    picks = [study.ask(space).params for study in studies for _ in range(2)]
    assert picks[:2] == picks[2:]  # seeded by search_seed: the same suggestions twice


def test_asha_stops_by_steps_within_the_trial_budget(tmp_path):
    spec = load(tmp_path, "scheduler: {name: asha, grace_period: 20, reduction_factor: 2}\n")
    scheduler = SCHEDULERS["asha"](spec)
    assert isinstance(scheduler, ASHAScheduler)
    assert scheduler._time_attr == "step" and scheduler._max_t == 40
    assert scheduler._reduction_factor == 2


def test_no_scheduler_runs_every_trial_to_the_end(tmp_path):
    assert type(SCHEDULERS["none"](load(tmp_path, "scheduler: none\n"))) is FIFOScheduler


def test_the_sweep_builds_what_the_registries_hold(tmp_path, monkeypatch):
    built = optuna.samplers.RandomSampler(seed=3), FIFOScheduler()
    monkeypatch.setitem(SAMPLERS, "mine", lambda spec: built[0])
    monkeypatch.setitem(SCHEDULERS, "mine", lambda spec: built[1])
    spec = load(tmp_path, "search_alg: mine\nscheduler: mine\n")
    assert sweep._scheduler(spec) is built[1]
    searcher = sweep._searcher(spec, tmp_path)
    assert searcher._sampler is built[0]


def test_a_trial_the_journal_already_finished_keeps_its_value_on_resume(tmp_path):
    """A driver killed after Optuna finished a trial but before Tune saved its state resumes
    that trial; its reports must not end the sweep, and the journal's value stands."""
    spec = load(tmp_path)
    searcher = sweep._searcher(spec, tmp_path)
    assert searcher.suggest("t1") is not None
    config = trial_config()
    first, second = ({**report("t1", config, step, i), "objective": value}
                     for i, (step, value) in enumerate([(20, 5.0), (40, 4.0)]))  # fmt: skip
    searcher.on_trial_result("t1", first)
    killed = optuna.load_study(study_name=spec.name, storage=sweep.journal_storage(tmp_path))
    killed.tell(killed.trials[0].number, 3.0)  # the killed driver had finished it
    with pytest.raises(optuna.exceptions.UpdateFinishedTrialError):  # what Ray's own does
        OptunaSearch.on_trial_result(searcher, "t1", second)
    searcher.on_trial_result("t1", second)
    searcher.on_trial_complete("t1", second)
    (trial,) = optuna.load_study(
        study_name=spec.name, storage=sweep.journal_storage(tmp_path)
    ).trials
    assert trial.state == optuna.trial.TrialState.COMPLETE
    assert trial.value == pytest.approx(3.0)
    assert trial.intermediate_values == {20: pytest.approx(5.0)}  # at its GAN step


def test_pbt_perturbs_the_searched_fields_at_evaluations_within_their_bounds(tmp_path):
    from ray import tune
    from ray.tune.schedulers import PopulationBasedTraining, TrialScheduler

    from ganlab import pbt

    path = tmp_path / "t.yaml"
    path.write_text(textwrap.dedent(SWEEP).replace("seeds:", "  beta2: {uniform: [0.9, 0.999]}\n"
                    "scheduler: {name: pbt, quantile_fraction: 0.5}\nseeds:"))  # fmt: skip
    spec = specs.load(path, storage=str(tmp_path / "runs"))
    scheduler = SCHEDULERS["pbt"](spec)
    assert isinstance(scheduler, PopulationBasedTraining)
    assert scheduler._time_attr == "step" and scheduler._perturbation_interval == 20
    assert scheduler._quantile_fraction == 0.5 and scheduler._resample_probability == 0.25
    assert scheduler._hyperparam_mutations["lr_d"] == [1.0e-4, 1.0e-3]  # a choice: shifted
    space = pbt.param_space(spec)
    assert isinstance(space["beta2"], type(tune.uniform(0, 1)))
    assert (space["beta2"].lower, space["beta2"].upper) == (0.9, 0.999)
    clip = scheduler._custom_explore_fn
    assert clip({"lr_d": 1.0e-3, "beta2": 0.999 * 1.2}) == {"lr_d": 1.0e-3, "beta2": 0.999}
    assert clip({"lr_d": 1.0e-3, "beta2": 0.9 * 0.8})["beta2"] == 0.9
    # a trial's last report is left alone: nothing would be left to train after a clone
    assert scheduler.on_trial_result(None, None, {"last": True}) == TrialScheduler.CONTINUE
