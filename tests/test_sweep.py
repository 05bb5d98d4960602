"""Sweeps on a real local Ray with Optuna: healthy, diverging and failing trials, live tables
that survive their own collection failing."""

import math
import os
import threading
import time
from pathlib import Path

import optuna
import pandas as pd
import pytest
import torch
from fake_datasets import write_cifar10, write_mnist
from localray import private_ray
from raytrials import full_disk

from ganlab import collect, preflight, results, rundir, spec, sweep

SWEEPS = sorted((Path(__file__).parent.parent / "sweeps").glob("*.yaml"))
MIXED = """
name: mixed
base: {dataset: ring8, width: 64, steps: 60, eval_every: 20, n_eval: 300, batch_size: 32}
search:
  lr_d: {choice: [5.0e-4, 10.0]}     # 10 blows up: those seeds must end `diverged`
  loss: {choice: [non-saturating, hinge]}
seeds: 2
search_alg: grid                     # Optuna's GridSampler: all four, deterministically
max_concurrent: 2
scheduler: {name: asha, grace_period: 20}
objective: {metric: fid, mode: min}
"""


@pytest.fixture(scope="module")
def local_ray(tmp_path_factory):
    """One private local Ray for the module; sweeps run in this process and share it."""
    weights = tmp_path_factory.mktemp("inception") / "random-inception.pth"
    from ganlab.metrics.inception import fid_inception_v3

    torch.manual_seed(0)
    torch.save(fid_inception_v3().state_dict(), weights)
    os.environ["GANLAB_INCEPTION_WEIGHTS"] = str(weights)  # set before Ray starts its workers
    with private_ray():
        yield


def test_healthy_and_diverging_trials_finish_and_tables_stay_whole(
    local_ray, tmp_path, monkeypatch
):
    monkeypatch.setattr(collect, "SEGMENT_TRIALS", 2)  # parts merged while the reader reads
    path = tmp_path / "mixed.yaml"
    path.write_text(MIXED)
    s = spec.load(path, storage=str(tmp_path / "runs"))
    run_dir = preflight.run_dir_of(s)
    reads, failures = [], []
    done = threading.Event()

    def read_while_running():
        while not done.is_set():
            try:
                trials, metrics = results.load(run_dir)
            except FileNotFoundError:
                continue
            except Exception as error:  # a half-written table would land here
                failures.append(repr(error))
                continue
            reads.append((len(trials), len(metrics), list(trials.columns)))
            time.sleep(0.05)

    reader = threading.Thread(target=read_while_running)
    reader.start()
    try:
        sweep.run(s, echo=lambda line: None)
    finally:
        done.set()
        reader.join()

    trials, metrics = results.load(run_dir)
    assert failures == []
    columns = [*results.TRIAL_COLUMNS, "phase"]  # `load` adds each row's phase
    assert len(reads) > 0 and all(cols == columns for _, _, cols in reads)
    assert all(n % 2 == 0 for n, _, _ in reads)  # whole trials: both seeds or none
    assert len(trials) == 4 * 2 and trials.groupby(["trial_id", "seed"]).size().max() == 1
    segments = (run_dir / rundir.TRIALS).glob(rundir.part_file(f"{rundir.SEGMENT}*"))
    assert len(list(segments)) == 2

    exploded, healthy = trials[trials.lr_d == 10.0], trials[trials.lr_d < 1]
    assert len(exploded) == 4 and len(healthy) == 4
    assert (exploded.status == "diverged").all()
    assert exploded.diverged_step.notna().all() and (exploded.diverged_step <= 60).all()
    assert not (healthy.status == "diverged").any()
    assert trials.objective.map(math.isfinite).all()
    assert set(trials.status) <= set(results.STATUSES)
    # one ranking: `ganlab results` (summarise) and the report (config_stats) agree
    from analysis.aggregate import config_stats

    assert list(results.summarise(trials).config_id) == list(config_stats(trials).index)

    study = optuna.load_study(study_name="mixed", storage=sweep.journal_storage(run_dir))
    states = {t.state for t in study.trials}
    assert len(study.trials) == 4
    assert states <= {optuna.trial.TrialState.COMPLETE, optuna.trial.TrialState.PRUNED}
    values = [t.value for t in study.trials if t.value is not None]
    assert all(math.isfinite(v) for v in values)
    # the journal agrees with the tables: each trial's objective is what Optuna was told
    by_trial = trials.groupby("trial_id").objective.first().sort_values().tolist()
    assert sorted(values) == pytest.approx(by_trial)
    journal_agrees_with_tables(run_dir, "mixed")  # diverged trials too

    # the long table: one row per seed and evaluation, ending where a seed diverged
    assert not metrics.duplicated(["trial_id", "seed", "step"]).any()
    for row in trials.itertuples():
        steps = metrics.query("trial_id == @row.trial_id and seed == @row.seed").step.tolist()
        assert steps == list(range(0, row.steps_done + 1, 20))[: len(steps)]
        if row.status != "diverged":
            assert steps[-1] == row.steps_done
    assert metrics.loc[metrics.step > 0, "loss_d"].dropna().map(math.isfinite).all()


def test_a_storage_uri_keeps_results_there_and_tables_locally(local_ray, tmp_path, monkeypatch):
    """`file://` goes through the same pyarrow code path as `s3://` and `gs://`."""
    monkeypatch.chdir(tmp_path)
    path = tmp_path / "uri.yaml"
    path.write_text(
        MIXED.replace("name: mixed", "name: uri").replace("[5.0e-4, 10.0]", "[5.0e-4]")
    )
    shared = tmp_path / "shared"
    s = spec.load(path, storage=f"file://{shared}")
    run_dir = sweep.run(s, echo=lambda line: None)
    assert run_dir == tmp_path / "runs" / "uri"
    trials, _ = results.load(run_dir)
    assert len(trials) == 2 * 2
    ray_wrote = (shared / "uri" / rundir.EXPERIMENT).glob("*/checkpoint_*")
    assert len(list(ray_wrote)) > 0  # Ray wrote there
    copied = results.read_table(shared / "uri" / rundir.TRIALS)
    pd.testing.assert_frame_equal(copied, trials.drop(columns="phase"))  # `load` adds `phase`
    assert results.load_samples(run_dir).source.eq("fake").sum() == 4
    with pytest.raises(preflight.SweepError, match="holds a sweep already"):
        preflight.check_run_dir(s, resume=False)


FAILING = """
name: failing
base: {width: 16, steps: 40, eval_every: 20, n_eval: 200, batch_size: 32, data_dir: /nonexistent}
search:
  dataset: {choice: [ring8, mnist]}   # mnist is not in data_dir: that trial fails at once
seeds: 2
search_alg: grid
scheduler: none
max_failures: 0
objective: {metric: fid, mode: min}
"""


def test_a_failed_trial_and_failed_collections_leave_every_trial_its_rows(
    local_ray, tmp_path, monkeypatch
):
    path = tmp_path / "failing.yaml"
    path.write_text(FAILING)
    s = spec.load(path, storage=str(tmp_path / "runs"))
    full_disk(monkeypatch, 3)
    monkeypatch.setattr(sweep, "RETRY_FIRST_S", 0.5)
    lines = []
    run_dir = sweep.run(s, echo=lines.append)

    failed = [line for line in lines if line.startswith("collecting results failed")]
    assert failed and "No space left on device" in failed[0] and "the sweep goes on" in failed[0]
    assert any(line.startswith("collecting results works again") for line in lines)
    assert any("failed for good (FileNotFoundError: mnist: no data under" in x for x in lines)
    trials, metrics = results.load(run_dir)
    assert sorted(trials.dataset) == ["mnist", "mnist", "ring8", "ring8"]
    errored, healthy = trials[trials.dataset == "mnist"], trials[trials.dataset == "ring8"]
    assert set(errored.status) == {"error"} and list(errored.seed) == [0, 1]
    assert errored.error.str.startswith(
        "FileNotFoundError: mnist: no data under '/nonexistent'"
    ).all()
    assert (errored.steps_done == 0).all() and errored.objective.isna().all()
    assert set(healthy.status) <= {"completed", "collapsed"} and set(healthy.error) == {""}
    assert (healthy.steps_done == 40).all()
    assert set(metrics.trial_id) == set(healthy.trial_id)


@pytest.mark.parametrize("path", SWEEPS, ids=[p.stem for p in SWEEPS])
def test_every_sweep_file_runs_at_smoke_size(local_ray, tmp_path, path):
    data_dir = tmp_path / "data"
    write_mnist(data_dir)
    write_cifar10(data_dir, per_batch=8)
    s = spec.load(path, smoke=True, storage=str(tmp_path / "runs"), data_dir=str(data_dir))
    run_dir = sweep.run(s, echo=lambda line: None)
    trials, metrics = results.load(run_dir)
    assert len(trials) == s.num_samples * len(s.seeds)
    assert set(trials.status) <= {"completed", "collapsed", "pruned", "diverged"}
    assert trials.protocol.map(lambda p: '"extractor"' in p).all()
    assert isinstance(metrics, pd.DataFrame) and len(metrics) >= len(trials)
    samples = results.load_samples(run_dir)
    assert set(samples.source) == {"fake", "real"}
    if s.scheduler.name == "pbt":  # its smoke sizes must exploit, or PBT went untried
        assert (trials.cloned_from != "").any()


PRUNING = """
name: pruning
base: {dataset: ring8, width: 16, steps: 60, eval_every: 20, n_eval: 300, batch_size: 32}
search:
  lr_g: {choice: [2.0e-3, 1.0e-9]}   # 1e-9: G stays where it started, worse at the rung
seeds: 2
search_alg: grid
search_seed: 1                       # the grid's order: 2e-3 first, so ASHA stops the other
max_concurrent: 1
scheduler: {name: asha, grace_period: 20, reduction_factor: 2}
objective: {metric: fid, mode: min}
"""


def journal_agrees_with_tables(run_dir: Path, name: str) -> list[optuna.trial.FrozenTrial]:
    """optuna-dashboard's data (the journal read back) against the tables: each trial's
    intermediate values are its `objective` step for step, its state its seeds' statuses, its
    user attributes the tables' names."""
    trials, metrics = results.load(run_dir)
    study = optuna.load_study(study_name=name, storage=sweep.journal_storage(run_dir))
    State = optuna.trial.TrialState
    assert len(study.trials) == trials.trial_id.nunique()
    for frozen in study.trials:
        attrs = frozen.user_attrs
        rows = trials[trials.trial_id == attrs["trial_id"]]
        assert attrs["config_id"] == rows.config_id.iloc[0]
        curve = metrics[metrics.trial_id == attrs["trial_id"]].groupby("step").objective.first()
        told = dict(sorted(frozen.intermediate_values.items()))
        if (rows.status == "diverged").all():  # the last report, after every seed's last row
            curve[max(told)] = rows.objective.iloc[0]
        assert list(told) == curve.index.tolist()
        assert list(told.values()) == pytest.approx(curve.tolist())
        assert attrs["seed_status"] == {str(r.seed): r.status for r in rows.itertuples()}
        last = frozen.intermediate_values[max(frozen.intermediate_values)]
        assert frozen.value == pytest.approx(last) == pytest.approx(rows.objective.iloc[0])
        if set(rows.status) == {"pruned"}:
            assert frozen.state == State.PRUNED and attrs["status"] == "pruned"
        else:
            assert "pruned" not in set(rows.status)
            assert frozen.state == State.COMPLETE and attrs["status"] == "completed"
    return study.trials


def test_optuna_is_told_each_evaluation_and_asha_stops_as_pruned(local_ray, tmp_path):
    path = tmp_path / "pruning.yaml"
    path.write_text(PRUNING)
    s = spec.load(path, storage=str(tmp_path / "runs"))
    run_dir = sweep.run(s, echo=lambda line: None)
    told = journal_agrees_with_tables(run_dir, "pruning")
    states = [t.state for t in told]
    assert states == [optuna.trial.TrialState.COMPLETE, optuna.trial.TrialState.PRUNED]
    assert max(told[0].intermediate_values) == 60 and max(told[1].intermediate_values) == 20
    from ganlab import runs  # `ganlab status` counts from the journal

    found = runs.status(run_dir)
    assert found.state == "finished" and found.seen["trials"] == rundir.JOURNAL
    assert found.outcomes == {"completed": 1, "pruned": 1, "error": 0, "running": 0}


PBT = """
name: pbt
base: {dataset: ring8, width: 16, steps: 60, eval_every: 20, n_eval: 200, batch_size: 32}
search:                              # rates too small to reach a mode in 60 steps: the scores
  lr_d: {loguniform: [1.0e-6, 1.0e-5]}   # tie at 0, and the earliest trials rank bottom
  lr_g: {loguniform: [1.0e-6, 1.0e-5]}
seeds: 2
num_samples: 4                       # the population: two run, two wait paused
scheduler: {name: pbt, quantile_fraction: 0.5, resample_probability: 0.0}
objective: {metric: good_modes, mode: max}
"""


def test_pbt_exploits_clone_checkpoints_and_are_in_the_tables(local_ray, tmp_path):
    import json

    from ganlab import pbt

    path = tmp_path / "pbt.yaml"
    path.write_text(PBT)
    s = spec.load(path, storage=str(tmp_path / "runs"))
    run_dir = sweep.run(s, echo=lambda line: None)
    trials, metrics = results.load(run_dir)
    assert set(trials.status) <= {"completed", "collapsed"}
    per_trial = trials.groupby("trial_id").first()
    cloned = per_trial[per_trial.cloned_from != ""]
    assert len(cloned) >= 1
    steps = metrics.groupby("trial_id").step.apply(set)
    for trial_id in per_trial.index.difference(cloned.index):  # paused, resumed: every report
        assert steps[trial_id] == {0, 20, 40, 60}
    bounds = {p.name: p.values for p in s.search}
    for trial_id, row in cloned.iterrows():
        events = json.loads(row.exploits)
        assert (row.cloned_from, row.cloned_at_step) == (
            events[-1]["from_trial"], events[-1]["step"]
        )  # fmt: skip
        lines = [json.loads(line) for line in
                 (run_dir / rundir.EXPERIMENT / rundir.trial_dir_name(trial_id) /
                  rundir.RESULT_FILE).read_text().splitlines()]  # fmt: skip
        for event in events:
            assert event["from_trial"] in per_trial.index and event["from_trial"] != trial_id
            assert event["step"] in steps[event["from_trial"]]  # the source's checkpoint step
            mine = event | {"trial": trial_id}  # reports carry it from then on (none: no key)
            after = [line for line in lines if mine in line.get("exploits", [])]
            assert after[0]["step"] == event["step"] + 20  # it went on from there, not from 0
            assert after[0]["resumed_from_step"] == event["step"]
            for name, (old, new) in event["changed"].items():
                low, high = bounds[name]
                scaled = [min(max(old * f, low), high) for f in pbt.PERTURBATION_FACTORS]
                assert new == pytest.approx(scaled[0]) or new == pytest.approx(scaled[1])
        for name, (_, new) in events[-1]["changed"].items():  # the values it ended with
            assert row[name] == pytest.approx(new)
    from analysis.report import load_run, report_sections

    sections = {section.id: section for section in report_sections(load_run(run_dir))}
    assert "fig-lineage" in sections["lineage"].body
