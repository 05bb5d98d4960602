"""Effects of searched factors with bootstrap intervals: values, words, figure."""

import numpy as np
import pytest
from runs import make_run, trial_table

from analysis.effects import (
    at_common_step,
    bootstrap_summaries,
    describe,
    effect_sentences,
    get_effects_info,
    includes_no_effect,
    plot_effects,
)
from ganlab import results


def _table(modes_by_config, diverged=()):
    """One trial per configuration, 3 seeds each; `modes_by_config[(pack, loss, i)] = modes`."""
    rows = []
    for t, ((pack, loss, i), modes) in enumerate(modes_by_config.items()):
        for seed in range(3):
            dead = (t, seed) in diverged
            rows.append(
                {
                    "trial_id": f"t{t}",
                    "seed": seed,
                    "pack": pack,
                    "loss": loss,
                    "lr_d": 1e-4 * (i + 1),
                    "batch_size": 60,
                    "metric": "modes",
                    "mode": "max",
                    "status": "diverged" if dead else "completed",
                    "final_modes": np.nan if dead else float(modes),
                }
            )
    return trial_table(rows)


def _effect(info, factor, outcome):
    (effect,) = [e for e in info.effects if e.factor == factor and e.outcome == outcome]
    return effect


def test_a_clear_effect_and_a_null_one():
    configs = {(pack, loss, i): 10 * pack for pack in (1, 2) for loss in ("hinge", "minimax")
               for i in range(2)}  # fmt: skip
    info = get_effects_info(_table(configs), ["pack", "loss"], "modes", "max")
    packing = _effect(info, "pack", "modes")
    assert (packing.level, packing.baseline) == ("2", "1")
    assert (packing.estimate, packing.lo, packing.hi) == pytest.approx((10.0, 10.0, 10.0))
    assert (packing.n_configs, packing.n_seeds) == (4, 12)
    assert not includes_no_effect(packing)
    assert "more modes, the interval excludes zero" in describe(packing, "max")
    objective = _effect(info, "pack", "objective")
    assert objective.estimate == pytest.approx(10.0)
    assert "better" in describe(objective, "max")
    loss = _effect(info, "loss", "modes")
    assert (loss.estimate, loss.lo, loss.hi) == pytest.approx((0.0, -5.0, 5.0), abs=5.0)
    assert includes_no_effect(loss)
    assert "the interval includes zero" in describe(loss, "max")
    # no seed diverged: the divergence rate does not vary, so it has no effects
    assert [e for e in info.effects if e.outcome == "diverged"] == []
    sentences = effect_sentences(info)
    assert len(sentences) == 2  # pack on modes and on the objective: the others include zero
    assert all("pack = 2 against 1" in s and "excludes zero" in s for s in sentences)


def test_one_lucky_configuration_is_not_an_effect():
    # pack 2: one configuration of four finds 25 modes, the rest 10 like pack 1
    configs = {(1, "hinge", i): 10 for i in range(4)}
    configs |= {(2, "hinge", i): 25 if i == 0 else 10 for i in range(4)}
    packing = _effect(get_effects_info(_table(configs), ["pack"], "modes", "max"), "pack", "modes")
    assert packing.estimate == pytest.approx((25 + 3 * 10) / 4 - 10)
    assert packing.lo == pytest.approx(0.0)  # a draw without the lucky configuration
    assert includes_no_effect(packing)


def test_diverged_seeds_count_as_worst_objective_and_raise_divergence():
    configs = {(pack, "hinge", i): 10 for pack in (1, 2) for i in range(3)}
    diverged = {(t, s) for t in (3, 4, 5) for s in (0, 1)}  # pack 2: two of three seeds
    info = get_effects_info(_table(configs, diverged), ["pack"], "modes", "max")
    divergence = _effect(info, "pack", "diverged")
    assert divergence.estimate == pytest.approx(2 / 3)
    assert "diverges more often" in describe(divergence, "max")
    objective = _effect(info, "pack", "objective")
    assert objective.estimate == pytest.approx(-1.0 - 10.0)  # median seed is the sentinel -1
    # every seed that ran on found 10 modes: modes do not vary, so they have no effect here
    assert [e for e in info.effects if e.outcome == "modes"] == []


def test_bootstrap_keeps_each_configurations_seed_count():
    matrix = np.array([[1.0, np.nan, np.nan], [5.0, 5.0, 5.0]])
    boot = bootstrap_summaries(matrix, np.array([1, 3]), "modes", np.random.default_rng(0), 2000)
    # each draw: 0, 1 or 2 copies of config 2 → means 1, 4 (= (1 + 15) / 4) or 5
    assert set(np.round(boot, 9)) == {1.0, 4.0, 5.0}
    assert np.mean(boot == 4.0) == pytest.approx(0.5, abs=0.05)


def test_figure_has_one_panel_per_outcome():
    configs = {(pack, "hinge", i): 10 * pack for pack in (1, 2) for i in range(2)}
    fig = plot_effects(get_effects_info(_table(configs), ["pack"], "modes", "max"))
    assert len(fig.data) == 2  # objective and modes; no seed diverged
    assert list(fig.data[1].x) == [10.0]


def _ranked(table, metric="modes", mode="max"):
    from analysis.aggregate import config_stats

    return config_stats(table)


def test_verdict_names_ties_and_a_supported_winner():
    from analysis.effects import get_verdict

    clear = _table({(2, "hinge", 0): 25, (1, "hinge", 0): 10, (1, "hinge", 1): 9})
    verdict = get_verdict(clear, _ranked(clear), "modes", "max")
    assert (verdict.ties, verdict.compared) == ([], 2)
    assert verdict.sentence.startswith("The best configuration is better than each of the next 2")
    assert verdict.sentence.endswith("Compared at step 2,000, among configurations trained to "
                                     "their end there.")  # fmt: skip
    rows = _table({(2, "hinge", 0): 10, (1, "hinge", 0): 10})
    rows.loc[rows["trial_id"] == "t0", "final_modes"] = [25.0, 10.0, 10.0]  # one lucky seed
    verdict = get_verdict(rows, _ranked(rows), "modes", "max")
    assert verdict.ties == [2]
    assert verdict.sentence.startswith("No winner: the seeds cannot separate #1 from #2")


def test_protocol_floor_and_warnings_in_words():
    from analysis.summary import fid_floors, protocol_warnings

    good = {"extractor": "inception", "standard_weights": True, "n_real": 10000,
            "n_fake": 10000, "dim": 2048, "rank_deficient": False, "fid_floor": 2.5}  # fmt: skip
    assert protocol_warnings([good]) == []
    assert fid_floors([good]).startswith("2.5: the FID of training samples")
    small = {**good, "n_fake": 500, "rank_deficient": True, "standard_weights": False}
    first, second = protocol_warnings([small])
    assert "fewer samples (500) than feature dimensions (2048)" in first
    assert "not the standard FID file" in second
    assert fid_floors([{"extractor": "raw"}]) == ""


def test_a_conditional_factor_is_compared_where_it_applies():
    configs = {(1, "hinge", i): 10 for i in range(2)}
    configs |= {(2, "wasserstein", i): 10 + 5 * i for i in range(2)}
    table = _table(configs)
    table["clip"] = np.where(table["loss"] == "wasserstein", np.where(table["lr_d"] > 1.5e-4,
                             0.05, 0.01), np.nan)  # fmt: skip
    clip = _effect(get_effects_info(table, ["clip"], "modes", "max"), "clip", "modes")
    assert (clip.level, clip.baseline, clip.n_configs, clip.n_seeds) == ("0.05", "0.01", 1, 3)
    assert clip.estimate == pytest.approx(5.0)


def test_no_interval_excluding_zero_is_said_in_one_line():
    configs = {(pack, "hinge", i): 10 + i for pack in (1, 2) for i in range(2)}
    (line,) = effect_sentences(get_effects_info(_table(configs), ["pack"], "modes", "max"))
    assert line.startswith("No effect's 95 % interval excludes zero")


def test_effects_compare_every_seed_at_the_step_all_trials_reached(tmp_path):
    # ASHA stops trials at the rung (step 300 of 600): every seed is read there
    run = make_run(tmp_path / "run", n_configs=12, seeds=2, evals=6, rung=3)
    trials, metrics = results.load(run)
    stopped = trials.groupby("trial_id").status.agg(lambda s: set(s) <= {"pruned", "diverged"})
    assert stopped.sum() > 0 and (~stopped).sum() > 0
    at, budget = at_common_step(trials, metrics)
    assert (budget.step, budget.stopped) == (300, int((trials.groupby("trial_id").steps_done.max()
                                                        < 600).sum()))  # fmt: skip
    assert "Compared at step 300" in budget.why
    ended = trials[trials.status.isin(["completed", "collapsed"])].index
    for i in ended:  # a seed that trained on is read at step 300, not at its end
        row = trials.loc[i]
        value = metrics.query("trial_id == @row.trial_id and seed == @row.seed and step == 300")
        assert at.loc[i, "final_fid"] == value.fid.iloc[0] != row.final_fid
    assert set(at.status) <= {"ran", "diverged", "error"}
    info = get_effects_info(at, ["loss"], "fid", "min", budget=budget)
    assert all(s.startswith("At step 300: ") for s in effect_sentences(info))
