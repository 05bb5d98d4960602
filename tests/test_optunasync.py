"""What Optuna is told of a trial (`ganlab.optunasync`), on results as Tune hands them to a
searcher (flattened), against a real in-memory Optuna study. The sweep's own test
(tests/test_sweep.py) checks a real journal after a real ASHA sweep."""

import optuna
import pytest
from ray.tune.utils import flatten_dict
from raytrials import report, trial_config

from ganlab import optunasync
from ganlab.results import config_hash

State = optuna.trial.TrialState


def results_until(last_step: int, steps: int = 60, **seed_changes) -> list[dict]:
    config = trial_config(steps=steps)
    lines = range(0, last_step + 1, config["eval_every"])
    return [flatten_dict(report("t1", config, s, i, **seed_changes)) for i, s in enumerate(lines)]


def tell_all(lines: list[dict], error: bool = False) -> optuna.trial.FrozenTrial:
    study = optuna.create_study()
    trial, told = study.ask(), None
    for line in [*lines, lines[-1]]:  # Tune repeats the last result when a trial ends
        told = optunasync.report(trial, "t1", line, told)
    optunasync.finish(study, trial, lines[-1], error)
    (frozen,) = study.trials
    return frozen


def test_a_flattened_result_is_read_back_as_reported():
    line = report("t1", trial_config(), 20, 1)
    assert optunasync.nested(flatten_dict(line))["seeds"] == line["seeds"]
    assert optunasync.nested({"done": True}) is None and optunasync.nested(None) is None


def test_a_trial_stopped_before_its_last_report_is_pruned_with_its_last_value():
    lines = results_until(20)
    frozen = tell_all(lines)
    assert frozen.state == State.PRUNED
    assert frozen.intermediate_values == pytest.approx({0: lines[0]["objective"],
                                                        20: lines[1]["objective"]})  # fmt: skip
    assert frozen.value == pytest.approx(lines[1]["objective"])
    assert frozen.user_attrs == {"trial_id": "t1", "config_id": config_hash(trial_config()),
                                 "status": "pruned",
                                 "seed_status": {"0": "pruned", "1": "pruned"}}  # fmt: skip


def test_a_trial_that_trained_to_its_end_is_complete():
    frozen = tell_all(results_until(60))
    assert frozen.state == State.COMPLETE and list(frozen.intermediate_values) == [0, 20, 40, 60]
    assert frozen.user_attrs["status"] == "completed"


def test_a_trial_whose_seeds_all_diverged_early_ended_and_is_complete():
    gone = {"diverged": True, "diverged_step": 7, "fid": 1e5}
    lines = results_until(20, **{"0": gone, "1": gone})
    for line in lines[1:]:
        line["last"] = True  # what the trial reports once no seed is alive
    frozen = tell_all(lines[:2])
    assert frozen.state == State.COMPLETE
    assert frozen.user_attrs["seed_status"] == {"0": "diverged", "1": "diverged"}


def test_a_trial_that_failed_is_fail():
    frozen = tell_all(results_until(20), error=True)
    assert frozen.state == State.FAIL and frozen.user_attrs["status"] == "error"
