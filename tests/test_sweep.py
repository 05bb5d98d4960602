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
from raytrials import full_disk

from ganlab import collect, preflight, raystart, results, rundir, spec, sweep

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
    started = raystart.start(None)
    yield
    if started:
        import ray

        ray.shutdown()


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
    assert len(reads) > 0 and all(cols == list(results.TRIAL_COLUMNS) for _, _, cols in reads)
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

    study = optuna.load_study(study_name="mixed", storage=sweep.journal_storage(run_dir))
    states = {t.state for t in study.trials}
    assert len(study.trials) == 4
    assert states <= {optuna.trial.TrialState.COMPLETE, optuna.trial.TrialState.PRUNED}
    values = [t.value for t in study.trials if t.value is not None]
    assert all(math.isfinite(v) for v in values)
    # the journal agrees with the tables: each trial's objective is what Optuna was told
    by_trial = trials.groupby("trial_id").objective.first().sort_values().tolist()
    assert sorted(values) == pytest.approx(by_trial)

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
    pd.testing.assert_frame_equal(copied, trials)
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
