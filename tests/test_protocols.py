"""A sweep's evaluation protocol: which assets it needs, made once, kept, read back, refused.

The sweeps on real Ray (tests/test_sweep.py, tests/test_cluster_sweep.py) show the trials using
what the driver made; here the driver's side, without Ray, and the refusals of mixed rows.
"""

import json
import shutil

import pytest
from runs import make_run, trial_table

from ganlab import cli, protocols, results, rundir, spec
from ganlab.config import TrialConfig
from ganlab.metrics.assets import EvalAssets

SWEEP = """
name: protocols
base: {dataset: ring8, steps: 20, eval_every: 10, n_eval: 100}
search:
  loss: {choice: [hinge, non-saturating]}
seeds: 2
objective: {metric: fid, mode: min}
"""


def _spec(tmp_path, text=SWEEP, storage=None):
    path = tmp_path / "protocols.yaml"
    path.write_text(text)
    return spec.load(path, storage=storage or str(tmp_path / "runs"))


def test_the_keys_are_every_data_set_and_sample_count_a_trial_can_take(tmp_path):
    assert protocols.keys(_spec(tmp_path)) == [("ring8", 100)]
    searched = SWEEP.replace("n_eval: 100}", "}").replace(
        "search:\n", "search:\n  dataset: {choice: [ring8, digits]}\n"
        "  n_eval: {choice: [200, null]}\n"
    )  # fmt: skip
    keys = protocols.keys(_spec(tmp_path, searched))
    assert keys == [("ring8", 200), ("ring8", 2500), ("digits", 200), ("digits", 1000)]
    config = TrialConfig.from_dict({"dataset": "digits"})
    assert protocols.key_of(config) == "eval-protocol/digits-n1000.pt"


def test_a_searched_range_of_sample_counts_exits_2_before_anything_is_written(tmp_path, capsys):
    path = tmp_path / "ranged.yaml"
    path.write_text(SWEEP.replace("search:\n", "search:\n  n_eval: {int: [100, 300]}\n"))
    assert cli.main(["sweep", str(path), "--storage", str(tmp_path / "runs")]) == 2
    error = capsys.readouterr().err
    assert f"{path}: search.n_eval:" in error and "`choice`" in error
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ranged.yaml"]


def test_rung_sized_evaluations_are_refused_in_sweep_files(tmp_path, capsys):
    path = tmp_path / "rung.yaml"
    path.write_text(SWEEP.replace("n_eval: 100}", "n_eval: 100, n_eval_rung: 50}"))
    assert cli.main(["sweep", str(path), "--storage", str(tmp_path / "runs")]) == 2
    assert f"{path}: base.n_eval_rung:" in capsys.readouterr().err
    assert not (tmp_path / "runs").exists()


def test_the_driver_makes_the_assets_once_and_reads_them_back(tmp_path):
    s = _spec(tmp_path)
    run_dir = tmp_path / "runs" / "protocols"
    lines = []
    made = protocols.prepare(s, run_dir, lines.append)
    path = run_dir / rundir.protocol_file("ring8", 100)
    assert list(made) == [rundir.protocol_file("ring8", 100)] and path.is_file()
    assert "making its reference statistics on the CPU" in lines[0]
    stamp = path.stat().st_mtime_ns
    lines.clear()
    again = protocols.prepare(s, run_dir, lines.append)  # --resume: the same file, not remade
    assert "read from" in lines[0] and path.stat().st_mtime_ns == stamp
    key = rundir.protocol_file("ring8", 100)
    first, second = (EvalAssets.from_state(shipped[key]) for shipped in (made, again))
    assert first.sha == second.sha == EvalAssets.load(path).sha
    config = s.trial_config({"loss": "hinge"})
    assert protocols.assets_for(config, again).sha == first.sha


def test_a_remote_storage_keeps_the_assets_for_a_resume_elsewhere(tmp_path):
    shared = tmp_path / "shared"
    s = _spec(tmp_path, storage=f"file://{shared}")
    made = protocols.prepare(s, tmp_path / "here" / "protocols", lambda line: None)
    name = rundir.protocol_file("ring8", 100)
    assert (shared / "protocols" / name).is_file()
    lines = []
    elsewhere = protocols.prepare(s, tmp_path / "there" / "protocols", lines.append)
    assert "read from" in lines[0]  # pulled from the storage, not made again
    assert elsewhere[name]["sha"] == made[name]["sha"]


def test_data_the_driver_cannot_read_fail_their_trials_with_the_reason(tmp_path):
    text = SWEEP.replace("dataset: ring8,", "dataset: ring8, data_dir: /nonexistent,").replace(
        "search:\n", "search:\n  dataset: {choice: [ring8, mnist]}\n"
    )
    s = _spec(tmp_path, text)
    lines = []
    shipped = protocols.prepare(s, tmp_path / "runs" / "protocols", lines.append)
    assert any("cannot be made here: mnist: no data under '/nonexistent'" in x for x in lines)
    with pytest.raises(FileNotFoundError, match="mnist: no data under '/nonexistent'"):
        protocols.assets_for(s.trial_config({"dataset": "mnist", "loss": "hinge"}), shipped)
    assert protocols.assets_for(s.trial_config({"dataset": "ring8", "loss": "hinge"}), shipped)


# --- rows measured differently are not ranked together -----------------------------------------


def _protocol(weights: str, reference: str) -> str:
    return json.dumps({"extractor": "classifier", "weights": weights, "reference_sha": reference})


def test_rows_of_different_extractors_or_references_are_not_ranked():
    rows = [
        {"trial_id": "a", "seed": 0, "objective": 1.0, "protocol": _protocol("w1", "r1")},
        {"trial_id": "b", "seed": 0, "objective": 2.0, "protocol": _protocol("w1", "r1")},
        {"trial_id": "c", "seed": 0, "objective": 3.0, "protocol": ""},  # failed: no protocol
    ]
    rows = [{**row, "lr_g": 1e-4 * (i + 1)} for i, row in enumerate(rows)]  # 3 configurations
    assert list(results.summarise(trial_table(rows)).trial_id) == ["a", "b", "c"]
    for other in (_protocol("w2", "r1"), _protocol("w1", "r2")):
        mixed = trial_table([*rows, {"trial_id": "d", "seed": 0, "protocol": other}])
        with pytest.raises(results.Incomparable, match="measured with 2 different") as raised:
            results.summarise(mixed)
        assert "2 rows by classifier w1 against reference r1" in str(raised.value)


def test_the_cli_and_the_report_refuse_a_mixed_run_with_exit_2(tmp_path, capsys):
    run_dir = make_run(tmp_path / "mixed", n_configs=4, seeds=2, with_samples=False)
    trials = results.read_table(run_dir / rundir.TRIALS)
    trials.loc[trials.trial_id == trials.trial_id.iloc[0], "protocol"] = _protocol("w", "r")
    shutil.rmtree(run_dir / rundir.TRIALS)  # the collector's parts, as one table file instead
    results.write_table(trials, run_dir / rundir.TRIALS)
    for command in (["results", str(run_dir)], ["report", str(run_dir)]):
        assert cli.main(command) == 2
        error = capsys.readouterr().err
        assert "not comparable" in error and "w against reference r" in error
    assert not (run_dir / rundir.REPORT).exists()
