"""`ganlab confirm` on a real local Ray: a sweep's best configurations retrained on fresh seeds,
into the run's tables as `phase` = confirm, measured with the search's own protocol."""

import json

import pytest
from localray import private_ray, run_file

from ganlab import cli, confirm, results, rundir
from ganlab.config import TrialConfig
from ganlab.metrics.assets import EvalAssets
from ganlab.trial import Trial

SWEEP = """
name: tiny
base: {dataset: ring8, width: 16, steps: 40, eval_every: 20, n_eval: 200, batch_size: 32}
search:
  lr_d: {choice: [2.0e-4, 1.0e-3, 3.0e-3]}
seeds: 2
search_alg: grid
scheduler: none
objective: {metric: fid, mode: min}
"""


@pytest.fixture(scope="module")
def searched(tmp_path_factory):
    """A finished three-configuration sweep, run on a private local Ray kept for the module."""
    with private_ray():
        yield run_file(tmp_path_factory.mktemp("confirm"), "tiny", SWEEP)


def test_the_best_configurations_retrain_on_fresh_seeds_into_the_run(searched, capsys):
    run_dir = searched
    before, _ = results.load(run_dir)
    assert set(before.phase) == {results.SEARCH}
    best_two = list(results.summarise(before).config_id.head(2))

    chosen = confirm.plan(run_dir, top=2, n_seeds=2)
    assert chosen.config_ids == best_two
    assert chosen.seeds == (2, 3)  # after the search's 0 and 1: never used by it

    assert cli.main(["confirm", str(run_dir), "--top", "2", "--seeds", "2", "--no-report"]) == 0
    assert "ranked on the confirmation's fresh seeds" in capsys.readouterr().out
    trials, metrics = results.load(run_dir)
    confirmed = trials[trials.phase == results.CONFIRM]
    assert sorted(confirmed.config_id.unique()) == sorted(best_two)
    assert set(confirmed.seed) == {2, 3}
    assert (confirmed.steps_done == 40).all()  # the full budget: nothing stopped early
    assert set(metrics[metrics.phase == results.CONFIRM].trial_id) == set(confirmed.trial_id)
    assert set(confirmed.protocol) == set(before.protocol)  # the search's extractor, reference

    shown, phase = results.shown_rows(trials)
    assert phase == results.CONFIRM and shown.index.equals(confirmed.index)
    assert list(results.summarise(trials).config_id) == list(
        results.summarise(confirmed).config_id
    )  # the ranking stands on the confirmation
    assert cli.main(["results", str(run_dir)]) == 0
    assert "ranked on the confirmation's fresh seeds" in capsys.readouterr().out
    from analysis.loading import load_run
    from analysis.report import write_report

    run = load_run(run_dir)  # the report: the search's sections, the confirmation's ranking
    assert set(run.trials.phase) == {results.SEARCH} and run.confirmed is not None
    assert list(run.confirmed[1].index) == list(results.summarise(confirmed).config_id)
    assert "Ranked on the confirmation" in write_report(run_dir).read_text()

    # Each confirmed number is what that configuration gives on those seeds, with the search's
    # evaluation assets: the confirmation trains the configuration it names, nothing else.
    record = json.loads((run_dir / rundir.CONFIRM / rundir.CONFIRM_PLAN).read_text())
    fields = record["configs"][0]
    assets = EvalAssets.load(run_dir / rundir.protocol_file("ring8", 200))
    direct = Trial(TrialConfig.from_dict({**fields, "seeds": [2, 3]}), assets=assets).run()[-1]
    rows = confirmed[confirmed.config_id == record["config_ids"][0]].set_index("seed")
    for seed in (2, 3):
        assert rows.loc[seed, "final_fid"] == pytest.approx(direct.seeds[seed].metrics["fid"])


def test_a_confirmation_needs_a_result_and_sane_counts(searched, tmp_path):
    with pytest.raises(confirm.ConfirmError, match="at least 1"):
        confirm.plan(searched, top=0, n_seeds=2)
    with pytest.raises(confirm.ConfirmError, match="no confirmation to resume"):
        confirm.run(searched.parent / "nothing-here", 1, 1, resume=True)
