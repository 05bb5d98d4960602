"""Aggregates against values computed by hand or in closed form."""

import math

import numpy as np
import optuna
import pandas as pd
import pytest
from runs import make_run, trial_table, write_journal

from analysis.aggregate import (
    budget_curves,
    config_stats,
    expected_best,
    objective_of,
    param_importance,
    parameter_bins,
    searched_parameters,
    table_importance,
)
from analysis.stability import get_divergence_info
from ganlab import results
from ganlab.rundir import JOURNAL


def _seeds(trial_id, values, statuses=None, objective=np.nan, **config):
    statuses = statuses or ["completed"] * len(values)
    return [
        {
            "trial_id": trial_id,
            "seed": s,
            "final_fid": v,
            "status": st,
            "objective": objective,
            **config,
        }
        for s, (v, st) in enumerate(zip(values, statuses, strict=True))
    ]


@pytest.fixture
def hand_table() -> pd.DataFrame:
    rows = (
        # Configuration A over two trials (seeds 1, 2 and then 4): pooled over its three seeds.
        _seeds("a1", [1.0, 2.0], objective=1.5, loss="hinge", lr_g=1e-4)
        + _seeds("a2", [4.0], objective=4.0, loss="hinge", lr_g=1e-4)
        # B: a diverged seed (its value must not count) and a collapsed one (it counts).
        + _seeds(
            "b",
            [10.0, 20.0, 999.0, 40.0],
            ["completed", "completed", "diverged", "collapsed"],
            objective=20.0,
            loss="minimax",
            lr_g=1e-4,
        )
        # C: an errored seed, left out of the rates' denominator.
        + _seeds(
            "c",
            [5.0, np.nan, np.nan],
            ["completed", "diverged", "error"],
            objective=1e5,
            loss="minimax",
            lr_g=1e-3,
        )
    )
    return trial_table(rows)


def test_median_and_iqr_over_seeds(hand_table):
    stats = config_stats(hand_table).set_index("loss", append=True)
    a = stats.xs("hinge", level="loss").iloc[0]
    assert a["fid_median"] == pytest.approx(2.0)
    assert a["fid_q25"] == pytest.approx(1.5)  # linear interpolation between 1 and 2
    assert a["fid_q75"] == pytest.approx(3.0)
    assert a["fid_iqr"] == pytest.approx(1.5)
    assert a["objective"] == pytest.approx(2.75)  # median of the trials' 1.5 and 4.0
    assert (a["n_trials"], a["n_seeds"]) == (2, 3)
    b = stats[stats["objective"] == 20.0].iloc[0]
    assert b["fid_median"] == pytest.approx(20.0)  # of 10, 20, 40: 999 diverged
    assert b["fid_iqr"] == pytest.approx(30.0 - 15.0)


def test_divergence_and_collapse_rates(hand_table):
    stats = config_stats(hand_table).set_index("objective")
    assert stats.loc[2.75, "div_rate"] == pytest.approx(0.0)
    assert stats.loc[20.0, "div_rate"] == pytest.approx(1 / 4)
    # of the three seeds that trained every step (the diverged one is not judged)
    assert stats.loc[20.0, "collapse_rate"] == pytest.approx(1 / 3)
    assert stats.loc[1e5, "div_rate"] == pytest.approx(1 / 2)  # the errored seed is not counted
    assert stats.loc[1e5, "n_errors"] == 1


def test_configs_ranked_best_first(hand_table):
    stats = config_stats(hand_table)
    assert list(stats["objective"]) == pytest.approx([2.75, 20.0, 1e5])
    assert list(stats["rank"]) == [1, 2, 3]
    flipped = hand_table.assign(mode="max")
    assert list(config_stats(flipped)["objective"]) == pytest.approx([1e5, 20.0, 2.75])


def test_configurations_are_ranked_at_equal_budgets():
    # d: ASHA stopped it at step 1,500 with the best objective of all; e stopped at 3,000;
    # f trained all 5,000 steps; g's seeds all diverged at step 500.
    def trial(trial_id, objective, statuses, steps_done, lr_g):
        return [{"trial_id": trial_id, "seed": s, "status": st, "steps_done": n,
                 "objective": objective, "steps": 5000, "lr_g": lr_g}
                for s, (st, n) in enumerate(zip(statuses, steps_done, strict=True))]  # fmt: skip

    table = trial_table(
        trial("d", 1.0, ["pruned", "pruned"], [1500, 1500], 1e-4)
        + trial("e", 3.0, ["pruned", "diverged"], [3000, 2000], 2e-4)
        + trial("f", 9.0, ["completed", "collapsed"], [5000, 5000], 3e-4)
        + trial("g", 1e5, ["diverged", "diverged"], [500, 450], 4e-4)
    )
    ranked = results.ranking(table)
    order = table.drop_duplicates("config_id").set_index("config_id")["trial_id"]
    assert list(order[ranked.index]) == ["f", "e", "d", "g"]
    assert list(ranked["at_step"]) == [5000, 3000, 1500, 500]
    assert list(ranked["stopped"]) == [False, True, True, True]
    # over the judged seeds (`results.rates`): e's pruned seed is not one; d has none
    assert list(ranked["div_rate"]) == pytest.approx([0.0, 1.0, math.nan, 1.0], nan_ok=True)
    stats = config_stats(table)
    assert list(stats.index) == list(ranked.index)
    assert list(stats["statuses"]) == ["1 collapsed, 1 completed", "1 diverged, 1 pruned",
                                       "2 pruned", "2 diverged"]  # fmt: skip
    assert np.isnan(stats["collapse_rate"].iloc[1])  # no seed of e trained every step
    summary = results.summarise(table)
    assert list(summary["config_id"]) == list(ranked.index)
    assert list(summary["at_step"]) == [5000, 3000, 1500, 500]


def test_divergence_rate_over_loss_and_learning_rate(hand_table):
    info = get_divergence_info(hand_table, lr="lr_g")
    assert info.rate.loc["hinge", "0.0001"] == pytest.approx(0.0)
    assert info.rate.loc["minimax", "0.0001"] == pytest.approx(1 / 4)
    assert info.rate.loc["minimax", "0.001"] == pytest.approx(1 / 2)
    assert info.seeds.loc["minimax", "0.001"] == 2
    assert np.isnan(info.rate.loc["hinge", "0.001"])  # no seeds in that cell


def _closed_form_min(values: np.ndarray, n: int) -> float:
    """E[min of n draws with replacement] = Σ v_i [((N-i+1)/N)^n - ((N-i)/N)^n], v sorted."""
    v = np.sort(values)
    big = len(v)
    return sum(
        v[i - 1] * (((big - i + 1) / big) ** n - ((big - i) / big) ** n) for i in range(1, big + 1)
    )


def test_expected_best_by_hand():
    curve = expected_best(np.array([3.0, 1.0]), "min", ns=[1, 2, 3, 5, 6])
    # n=1: (1+3)/2; n=2: P(min=1) = 3/4; n=3: 7/8.
    assert curve.mean[:3] == pytest.approx([2.0, 1.5, 1.25])
    # The 95 % band holds 3 while P(min=3) = (1/2)^n is at least 2.5 %: n=5 yes, n=6 no.
    assert (curve.lo[3], curve.hi[3]) == (1.0, 3.0)
    assert (curve.lo[4], curve.hi[4]) == (1.0, 1.0)
    best_max = expected_best(np.array([3.0, 1.0]), "max", ns=[2])
    assert best_max.mean == pytest.approx([3 * 3 / 4 + 1 / 4])


def test_expected_best_matches_closed_form_and_resampling():
    values = np.random.default_rng(1).lognormal(size=37)
    ns = np.array([1, 2, 5, 10, 37, 100])
    curve = expected_best(values, "min", ns=ns)
    assert curve.mean == pytest.approx([_closed_form_min(values, n) for n in ns], rel=1e-12)
    # Against plain bootstrap resampling: the exact mean is what it converges to.
    draws = np.random.default_rng(2).choice(values, size=(40_000, 10))
    assert curve.mean[3] == pytest.approx(draws.min(axis=1).mean(), rel=0.01)
    assert curve.lo[3] == pytest.approx(np.quantile(draws.min(axis=1), 0.025, method="lower"))


def test_budget_curves_per_loss_on_a_known_table():
    rows = [
        {"trial_id": f"t{i}", "seed": 0, "objective": float(v), "loss": loss}
        for i, (v, loss) in enumerate([(1, "hinge"), (3, "hinge"), (2, "minimax"), (6, "minimax")])
    ]
    curves = budget_curves(trial_table(rows))
    assert list(curves) == ["all trials", "loss=hinge", "loss=minimax"]
    assert curves["all trials"].mean[0] == pytest.approx(3.0)  # n=1: the plain mean
    assert curves["loss=hinge"].mean[1] == pytest.approx(1.5)
    assert curves["loss=minimax"].mean[1] == pytest.approx(2 * 3 / 4 + 6 / 4)
    assert curves["all trials"].n_trials == 4


def test_table_importance_on_a_factorial_grid():
    # objective = a(lr_g) + b(loss) on a full 2×2 grid; ranks 1..4 give main-effect sums of
    # squares 4 for lr_g and 1 for loss (of 5 in all), so importances 0.8 and 0.2.
    rows = [
        {"trial_id": f"t{i}", "seed": 0, "lr_g": lr, "loss": loss, "objective": a + b}
        for i, ((lr, a), (loss, b)) in enumerate(
            [(x, y) for x in ((1e-4, 0.0), (1e-3, 10.0)) for y in (("hinge", 0), ("minimax", 1))]
        )
    ]
    importance = table_importance(trial_table(rows))
    assert importance.params == ["lr_g", "loss"]
    assert importance.values == pytest.approx([0.8, 0.2])
    assert "4 trials" in importance.source


def test_importance_from_the_optuna_journal(tmp_path):
    run = make_run(tmp_path / "run", n_configs=30, seeds=3, evals=3, with_journal=True)
    trials, _ = results.load(run)
    importance = param_importance(trials, run)
    assert importance.source.startswith("Optuna fANOVA on the journal study")
    assert sum(importance.values) == pytest.approx(1.0)
    assert set(importance.params) == set(searched_parameters(trials))
    assert importance.values == sorted(importance.values, reverse=True)


def test_importance_of_one_dominant_parameter_via_optuna(tmp_path):
    # A real study whose objective depends on lr_g only: fANOVA must say so.
    rng = np.random.default_rng(0)
    rows = [
        {
            "trial_id": f"t{i}",
            "seed": 0,
            "lr_g": lr,
            "beta1": float(b),
            "objective": float(np.log10(lr) ** 2),
        }
        for i, (lr, b) in enumerate(
            zip(10 ** rng.uniform(-5, -2, 40), rng.choice([0.0, 0.5], 40), strict=True)
        )
    ]
    trials = trial_table(rows)
    write_journal(tmp_path / JOURNAL, trials)
    importance = param_importance(trials, tmp_path)
    assert importance.source.startswith("Optuna")
    assert importance.params[0] == "lr_g"
    assert importance.values[0] > 0.8


def test_importance_falls_back_to_the_table(tmp_path):
    trials = trial_table(
        [
            {"trial_id": "t0", "seed": 0, "loss": "hinge", "objective": 1.0},
            {"trial_id": "t1", "seed": 0, "loss": "minimax", "objective": 2.0},
        ]
    )
    assert "no Optuna journal" in param_importance(trials, tmp_path).source
    # A journal with a single completed trial is not enough for Optuna.
    storage = optuna.storages.JournalStorage(
        optuna.storages.journal.JournalFileBackend(str(tmp_path / JOURNAL))
    )
    study = optuna.create_study(study_name="hand", storage=storage)
    study.add_trial(
        optuna.trial.create_trial(
            params={"loss": "hinge"},
            distributions={
                "loss": optuna.distributions.CategoricalDistribution(["hinge", "minimax"])
            },
            value=1.0,
        )
    )
    importance = param_importance(trials, tmp_path)
    assert "fewer than 2 completed trials" in importance.source
    assert importance.params == ["loss"]
    assert importance.values == pytest.approx([1.0])


def test_parameter_bins():
    codes, labels = parameter_bins(pd.Series(["b", "a", "b"]))
    assert labels == ["a", "b"]
    assert list(codes) == [1, 0, 1]
    lrs = pd.Series(10 ** np.linspace(-5, -2, 100))
    codes, labels = parameter_bins(lrs, max_bins=3)
    assert len(labels) == 3
    # Quantile edges of log10 values at -5, -4, -3, -2; bins are [a, b), the last one closed:
    # log10 values -5 + 3k/99 for k = 0..32, 33..65, 66..99.
    assert list(np.bincount(codes)) == [33, 33, 34]
    assert labels[0] == "1e-05–0.0001"


def test_objective_and_searched_parameters(hand_table):
    assert tuple(objective_of(hand_table)) == ("fid", "min", False)
    assert searched_parameters(hand_table) == ["loss", "lr_g"]


def test_a_trial_that_failed_before_measuring_is_not_a_protocol_of_its_own(tmp_path):
    from analysis.aggregate import config_stats, objective_of
    from analysis.summary import get_summary_info

    trials, _ = results.load(make_run(tmp_path / "run", n_configs=4, seeds=2, evals=3))
    failed = trials.iloc[:2].assign(trial_id="failed", config_id="failed0000", status="error",
                                    protocol="")  # fmt: skip
    trials = pd.concat([trials, failed], ignore_index=True)
    info = get_summary_info(trials, config_stats(trials), objective_of(trials), ["loss"])
    assert [p["extractor"] for p in info.protocols] == ["raw"]
    assert not any("mixes" in warning for warning in info.warnings)
    # and the rates: the failed seeds count only in the error share
    shares = results.rates(trials["status"])
    assert shares.error == pytest.approx(2 / len(trials))
    assert shares.n_judged == int(trials["status"].isin(results.JUDGED_STATUSES).sum())
