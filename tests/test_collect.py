"""The collector on trial directories in Ray's on-disk format: incremental, per-trial failures,
statuses after errors and retries, samples as arrays, group-readable tables."""

import json
import math
import os
import stat
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from raytrials import full_disk, ray_error, report, trial_config, write_samples, write_trial

from ganlab import results, rundir
from ganlab.collect import CollectError, Collector, TrialSource, error_line, local

MISSING_DATA = (
    "FileNotFoundError: mnist: no data under '/nonexistent' (Dataset not found. You can use "
    "download=True to download it). Put the dataset in torchvision's layout there."
)


def reports_until(trial_id: str, config: dict, last_step: int, **seed_changes) -> list[dict]:
    steps = range(0, last_step + 1, config["eval_every"])
    return [report(trial_id, config, step, i, **seed_changes) for i, step in enumerate(steps)]


def samples_of(seeds, seed_value: float = 0.0) -> dict[int, torch.Tensor]:
    gen = torch.Generator().manual_seed(int(seed_value))
    return {s: torch.randn(64, 2, generator=gen) + seed_value for s in seeds}


def collector(run_dir: Path) -> Collector:
    return Collector(run_dir, "unit", configure=lambda params: trial_config(**params))


def source(experiment: Path, trial_id: str, status: str | None) -> TrialSource:
    trial_dir = experiment / rundir.trial_dir_name(trial_id)
    return TrialSource(trial_id, (local(trial_dir),), ray_status=status)


@pytest.fixture
def experiment(tmp_path) -> Path:
    """Twelve finished trials of two seeds, 60 steps each."""
    experiment = tmp_path / "run" / rundir.EXPERIMENT
    for i in range(12):
        config = trial_config(lr_d=1e-4 * (i + 1))
        trial_id = f"t{i:04d}"
        write_trial(experiment, trial_id, config, reports_until(trial_id, config, 60),
                    samples_of(config["seeds"], i))  # fmt: skip
    return experiment


def samples_files(experiment: Path, trial_id: str) -> list[Path]:
    """The samples files of a trial's kept checkpoints."""
    trial_dir = experiment / rundir.trial_dir_name(trial_id)
    return sorted(trial_dir.glob(f"checkpoint_*/{rundir.SAMPLES_FILE}"))


def write_reports(trial_dir: Path, reports: list[dict]) -> None:
    (trial_dir / rundir.RESULT_FILE).write_text("".join(json.dumps(r) + "\n" for r in reports))


def test_only_the_trials_that_changed_are_read_and_written(experiment):
    run_dir = experiment.parent
    collect = collector(run_dir)
    for i in range(12):
        collect.update(source(experiment, f"t{i:04d}", "TERMINATED"))
    written = collect().written
    assert len(written) == 12 * 3 + 1  # trials, metrics and samples parts; real ring8 samples
    before = {p: p.stat().st_mtime_ns for p in run_dir.glob("*.parquet/*.parquet")}

    config = trial_config(lr_d=1e-4 * 4)  # t0003 reports its last step again, seed 1 diverged
    diverged = {"1": {"diverged": True, "diverged_step": 55}}
    again_at_60 = report("t0003", config, 60, 3, **diverged)
    trial_dir = experiment / rundir.trial_dir_name("t0003")
    write_reports(trial_dir, reports_until("t0003", config, 60) + [again_at_60])
    collect.update(source(experiment, "t0003", "TERMINATED"))
    collect.update(source(experiment, "t0005", "TERMINATED"))  # told again, but unchanged
    written = collect().written

    changed = {p for p in before if p.stat().st_mtime_ns != before[p]}
    assert changed == set(written)
    assert {(p.parent.name, p.name) for p in changed} == {
        (rundir.TRIALS, "t0003.parquet"), (rundir.METRICS_TABLE, "t0003.parquet")}  # fmt: skip
    trials, metrics = results.load(run_dir)
    row = trials.set_index(["trial_id", "seed"]).loc[("t0003", 1)]
    assert (row.status, row.diverged_step, row.steps_done) == ("diverged", 55, 55)
    assert len(trials) == 24 and trials.groupby(["trial_id", "seed"]).size().max() == 1
    assert not metrics.duplicated(["trial_id", "seed", "step"]).any()

    again = Collector(run_dir.parent / "again", "unit", lambda params: trial_config(**params))
    again.scan(local(experiment))  # a full collection from the files agrees with the increments
    again()
    full, _ = results.load(run_dir.parent / "again")
    order = ["trial_id", "seed"]
    pd.testing.assert_frame_equal(trials.sort_values(order).reset_index(drop=True),
                                  full.sort_values(order).reset_index(drop=True))  # fmt: skip


def test_a_half_copied_samples_file_keeps_that_trial_pending_and_the_rest_goes_on(experiment):
    run_dir = experiment.parent
    broken = samples_files(experiment, "t0007")[0]
    whole = broken.read_bytes()
    for checkpoint in samples_files(experiment, "t0007"):
        checkpoint.write_bytes(whole[: len(whole) // 2])  # a copy cut short
    collect = collector(run_dir)
    collect.scan(local(experiment))
    with pytest.raises(CollectError, match=r"1 trial\(s\) not collected.*t0007: RuntimeError"):
        collect()
    trials, _ = results.load(run_dir)
    assert sorted(trials.trial_id.unique()) == [f"t{i:04d}" for i in range(12) if i != 7]
    assert set(collect.pending) == {"t0007"}

    for checkpoint in samples_files(experiment, "t0007"):
        checkpoint.write_bytes(whole)  # the copy finished
    collect()
    trials, _ = results.load(run_dir)
    assert trials.trial_id.nunique() == 12 and not collect.pending


def test_a_full_disk_fails_the_collection_and_the_next_one_writes_everything(
    experiment, monkeypatch
):
    run_dir = experiment.parent
    collect = collector(run_dir)
    collect.scan(local(experiment))
    full_disk(monkeypatch, 5)
    with pytest.raises(CollectError, match=r"5 trial\(s\) not collected.*No space left"):
        collect()
    assert not list(run_dir.glob("*.parquet/.*.tmp"))  # no temporary file left behind
    assert len(collect.pending) == 5
    collect()
    trials, metrics = results.load(run_dir)
    assert trials.trial_id.nunique() == 12 and len(metrics) == 12 * 2 * 4


@pytest.mark.parametrize(
    ("status", "expected", "error"),
    [
        ("TERMINATED", "pruned", ""),  # failed once, retried, then stopped early by ASHA
        ("ERROR", "error", MISSING_DATA),  # failed for good
        (None, "error", MISSING_DATA),  # Ray's status unknown: the files alone say so
    ],
)
def test_a_retried_trial_is_labelled_by_how_it_ended(tmp_path, status, expected, error):
    experiment = tmp_path / "run" / rundir.EXPERIMENT
    config = trial_config()
    write_trial(experiment, "r1", config, reports_until("r1", config, 40),
                samples_of(config["seeds"]), error=ray_error(MISSING_DATA))  # fmt: skip
    collect = collector(experiment.parent)
    collect.update(source(experiment, "r1", status))
    collect()
    trials, _ = results.load(experiment.parent)
    assert list(trials.status) == [expected] * 2
    assert list(trials.error) == [error] * 2
    assert list(trials.steps_done) == [40, 40]


@pytest.mark.parametrize(
    ("status", "expected"),
    [("RUNNING", "running"), ("PENDING", "running"), ("PAUSED", "running"),
     ("TERMINATED", "pruned"), (None, "pruned")],  # None: files alone cannot tell
)  # fmt: skip
def test_a_trial_short_of_its_steps_is_running_until_ray_ends_it(tmp_path, status, expected):
    experiment = tmp_path / "run" / rundir.EXPERIMENT
    config = trial_config()  # 60 steps; reported up to step 40
    diverged = {"1": {"diverged": True, "diverged_step": 30}}
    write_trial(experiment, "r3", config, reports_until("r3", config, 40, **diverged),
                samples_of(config["seeds"]))  # fmt: skip
    collect = collector(experiment.parent)
    collect.update(source(experiment, "r3", status))
    collect()
    trials, _ = results.load(experiment.parent)
    assert list(trials.status) == [expected, "diverged"]  # a diverged seed stays diverged
    assert set(trials.status) <= set(results.STATUSES)


def test_a_completed_trial_with_an_earlier_failure_is_completed(tmp_path):
    experiment = tmp_path / "run" / rundir.EXPERIMENT
    config = trial_config()
    write_trial(experiment, "r2", config, reports_until("r2", config, 60),
                error=ray_error("RayActorError: the worker died", failures=2))  # fmt: skip
    collect = collector(experiment.parent)
    collect.scan(local(experiment))  # no Ray status: its last report says it finished
    collect()
    trials, _ = results.load(experiment.parent)
    assert list(trials.status) == ["completed", "completed"] and list(trials.error) == ["", ""]


def test_a_trial_that_failed_before_its_first_report_has_its_rows(tmp_path):
    experiment = tmp_path / "run" / rundir.EXPERIMENT
    trial_dir = experiment / rundir.trial_dir_name("e1")
    trial_dir.mkdir(parents=True)
    (trial_dir / rundir.PARAMS_FILE).write_text('{"lr_d": 0.003}')
    (trial_dir / rundir.RESULT_FILE).write_text("")
    (trial_dir / rundir.ERROR_FILE).write_text(ray_error(MISSING_DATA, failures=3))
    collect = collector(experiment.parent)
    collect.update(source(experiment, "e1", "ERROR"))
    collect()
    trials, metrics = results.load(experiment.parent)
    assert list(trials.seed) == [0, 1] and set(trials.trial_id) == {"e1"}
    assert set(trials.status) == {"error"} and set(trials.error) == {MISSING_DATA}
    assert set(trials.lr_d) == {0.003} and set(trials.steps) == {60}  # the whole configuration
    assert trials.objective.isna().all() and set(trials.steps_done) == {0}
    assert metrics.empty
    assert trials.config_id.nunique() == 1 and len(trials.config_id.iloc[0]) == 12


def test_a_trial_not_started_yet_has_no_rows(tmp_path):
    experiment = tmp_path / "run" / rundir.EXPERIMENT
    trial_dir = experiment / rundir.trial_dir_name("p1")
    trial_dir.mkdir(parents=True)
    (trial_dir / rundir.PARAMS_FILE).write_text('{"lr_d": 0.003}')
    collect = collector(experiment.parent)
    collect.update(source(experiment, "p1", "PENDING"))
    assert collect() == ([], [])


def test_error_line_is_the_exception_of_the_last_failure():
    text = ray_error("ValueError: first", failures=1) + ray_error("KeyError: 'second'")
    assert error_line(text.replace("Failure # 1", "Failure # 2", 1)) == "KeyError: 'second'"
    assert error_line(ray_error(MISSING_DATA)) == MISSING_DATA
    actor_died = ("Failure # 1 (occurred at 2027-01-15_08-00-01)\nThe actor died unexpectedly "
                  "before finishing this task.\n\tclass_name: ImplicitFunc\n")  # fmt: skip
    assert error_line(actor_died) == "The actor died unexpectedly before finishing this task."
    assert error_line("") is None and error_line(None) is None


def test_samples_are_stored_as_float32_arrays_exactly(tmp_path):
    experiment = tmp_path / "run" / rundir.EXPERIMENT
    config = trial_config(sample_keep=64)
    samples = {0: torch.randn(64, 2) * 1e-7 + 1.0, 1: torch.full((64, 2), math.pi)}
    write_trial(experiment, "s1", config, reports_until("s1", config, 60), samples)
    collect = collector(experiment.parent)
    collect.update(source(experiment, "s1", "TERMINATED"))
    collect()
    table = results.load_samples(experiment.parent)
    fake = table[table.source == "fake"].set_index("seed")
    for seed, x in samples.items():
        values = fake.loc[seed, "values"]
        assert values.dtype == np.float32
        np.testing.assert_array_equal(values.reshape(list(fake.loc[seed, "shape"])), x.numpy())
    assert fake.loc[0, "step"] == 60
    real = table[table.source == "real"]
    assert list(real.dataset) == ["ring8"] and list(real.iloc[0]["shape"]) == [512, 2]


def test_image_samples_are_stored_as_the_pixels_they_are_drawn_with(tmp_path):
    import pyarrow.parquet as pq

    from analysis.samples import image_grid

    experiment = tmp_path / "run" / rundir.EXPERIMENT
    config = trial_config(dataset="digits", arch="dcgan", sample_keep=16)
    images = torch.linspace(-1.3, 1.3, 2 * 16 * 64).reshape(2, 16, 1, 8, 8)
    images[1, 0, 0, 0, 0] = math.nan  # drawn black
    samples = {0: images[0], 1: images[1]}
    write_trial(experiment, "img", config, reports_until("img", config, 60), samples)
    collect = collector(experiment.parent)
    collect.update(source(experiment, "img", "TERMINATED"))
    collect()
    stored = pq.read_table(experiment.parent / rundir.SAMPLES / rundir.part_file("img"))
    assert stored.schema.field("pixels").type.value_type == "uint8"
    assert stored.column("values").null_count == 2  # no float copy of an image
    fake = results.load_samples(experiment.parent).query("source == 'fake'").set_index("seed")
    assert "pixels" not in fake.columns
    for seed, x in samples.items():
        values = fake.loc[seed, "values"]
        assert values.dtype == np.float32 and list(fake.loc[seed, "shape"]) == [16, 1, 8, 8]
        back = values.reshape(16, 1, 8, 8)
        np.testing.assert_array_equal(image_grid(back), image_grid(x.numpy()))
        np.testing.assert_allclose(back, np.nan_to_num(x.numpy(), nan=-1).clip(-1, 1),
                                   atol=1 / 255)  # fmt: skip


def test_newer_samples_replace_older_ones(tmp_path):
    experiment = tmp_path / "run" / rundir.EXPERIMENT
    config = trial_config()
    trial_dir = write_trial(experiment, "s2", config, reports_until("s2", config, 20),
                            samples_of(config["seeds"], 1.0))  # fmt: skip
    collect = collector(experiment.parent)
    collect.update(source(experiment, "s2", "RUNNING"))
    collect()
    write_samples(trial_dir / "checkpoint_000002", samples_of(config["seeds"], 7.0))
    write_reports(trial_dir, reports_until("s2", config, 40))
    collect.update(source(experiment, "s2", "RUNNING"))
    collect()
    fake = results.load_samples(experiment.parent).query("source == 'fake'")
    assert len(fake) == 2 and set(fake.step) == {40}
    assert np.mean(np.stack(fake["values"].to_list())) == pytest.approx(7.0, abs=0.2)


def test_tables_are_readable_by_the_group(tmp_path, experiment):
    old = os.umask(0o022)
    try:
        collect = collector(experiment.parent)
        collect.scan(local(experiment))
        collect()
        results.write_table(results.load(experiment.parent)[0], tmp_path / "single.parquet")
    finally:
        os.umask(old)
    files = [*experiment.parent.glob("*.parquet/*.parquet"), tmp_path / "single.parquet"]
    assert len(files) == 12 * 3 + 2
    assert {stat.S_IMODE(f.stat().st_mode) for f in files} == {0o644}


def test_a_collection_tells_its_progress(experiment):
    collect = collector(experiment.parent)
    collect.scan(local(experiment))
    seen = []
    collect(progress=lambda done, total: seen.append((done, total)))
    assert seen == [(done, 12) for done in range(13)]
    assert len(results.load(experiment.parent)[0]) == 12 * 2


def test_a_trials_clones_are_gathered_from_every_line_it_wrote():
    from ganlab import collect

    clone = {"trial": "b", "from_trial": "a", "step": 40, "changed": {"lr_d": [1.0, 1.2]}}
    later = {**clone, "from_trial": "c", "step": 20}  # restarted earlier: it rewrote step 60
    inherited = {**clone, "trial": "c"}  # its source's own clone, in the source's ancestry
    lines = [{"step": 60, "exploits": [clone]}, {"step": 40, "exploits": [inherited, later]}]
    text = "\n".join(json.dumps(line) for line in lines) + "\n{half a line"
    found = collect._exploits(text, "b")
    assert found == (clone, later)
    columns = collect._clone_columns(found)
    assert (columns["cloned_from"], columns["cloned_at_step"]) == ("c", 20)
    assert json.loads(columns["exploits"]) == [
        {k: v for k, v in e.items() if k != "trial"} for e in (clone, later)
    ]
    assert collect._clone_columns(()) == {"cloned_from": "", "cloned_at_step": None,
                                          "exploits": ""}  # fmt: skip
