"""A sweep's evaluation protocol: which assets it needs, made once, kept, read back, refused.

The sweeps on real Ray (tests/test_sweep.py, tests/test_cluster_sweep.py) show the trials using
what the driver made; here the driver's side, without Ray, and the refusals of mixed rows.
"""

import json
import shutil

import pytest
from localray import private_ray, run_file
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


def test_a_base_rung_count_adds_its_protocol_and_trials_are_handed_both(tmp_path):
    s = _spec(tmp_path, SWEEP.replace("n_eval: 100}", "n_eval: 100, n_eval_rung: 50}"))
    assert protocols.keys(s) == [("ring8", 100), ("ring8", 50)]
    run_dir = tmp_path / "runs" / "protocols"
    shipped = protocols.prepare(s, run_dir, lambda line: None)
    files = sorted(p.name for p in (run_dir / rundir.PROTOCOL_DIR).iterdir())
    assert files == ["ring8-n100.pt", "ring8-n50.pt"]
    handed = protocols.assets_for(s.trial_config({"loss": "hinge"}), shipped)
    assert [a.n_fake for a in handed] == [100, 50]  # the last evaluation's first
    assert [a.sha for a in handed] == [EvalAssets.load(run_dir / rundir.PROTOCOL_DIR / f).sha
                                       for f in ("ring8-n100.pt", "ring8-n50.pt")]  # fmt: skip
    same = _spec(tmp_path, SWEEP.replace("n_eval: 100}", "n_eval: 100, n_eval_rung: 100}"))
    assert protocols.keys(same) == [("ring8", 100)]  # the same count: one protocol


@pytest.mark.parametrize(
    ("change", "where"),
    [
        ("search:\n  n_eval_rung: {choice: [20, 50]}\n", "search.n_eval_rung"),
        ("n_eval_rung: 200}", "base.n_eval_rung"),  # more than n_eval
        ("n_eval_rung: 5}", "base.n_eval_rung"),  # too few for the k-NN metrics
    ],
)
def test_a_searched_or_impossible_rung_count_exits_2_naming_the_field(
    tmp_path, capsys, change, where
):
    path = tmp_path / "rung.yaml"
    if change.startswith("search"):
        path.write_text(SWEEP.replace("search:\n", change))
    else:
        path.write_text(SWEEP.replace("n_eval: 100}", f"n_eval: 100, {change}"))
    assert cli.main(["sweep", str(path), "--storage", str(tmp_path / "runs")]) == 2
    error = capsys.readouterr().err
    assert f"{path}: {where}:" in error
    if where.startswith("search"):
        assert "not a hyperparameter" in error
    assert not (tmp_path / "runs").exists()


def test_smoke_sizes_keep_a_rung_count_below_their_n_eval(tmp_path):
    path = tmp_path / "rung.yaml"
    path.write_text(SWEEP.replace("n_eval: 100}", "n_eval: 1000, n_eval_rung: 500}"))
    smoked = spec.load(path, smoke=True, storage=str(tmp_path / "runs"))
    assert (smoked.base["n_eval"], smoked.base["n_eval_rung"]) == (200, 100)
    assert protocols.keys(smoked) == [("ring8", 200), ("ring8", 100)]
    own = SWEEP.replace("n_eval: 100}", "n_eval: 1000, n_eval_rung: 500}")
    path.write_text(own + "smoke: {base: {n_eval_rung: 200}}\n")  # its own smoke size wins
    assert spec.load(path, smoke=True, storage=str(tmp_path / "runs")).base["n_eval_rung"] == 200


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
    (handed,) = protocols.assets_for(config, again)  # no rung count: the one protocol
    assert handed.sha == first.sha


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


def test_rung_rows_count_as_their_last_evaluations_measurement_and_no_other():
    final = {"extractor": "raw", "weights": "", "reference_sha": "f1", "n_fake": 300}
    rung = {**final, "reference_sha": "r1", "n_fake": 100, "final_reference_sha": "f1"}
    rows = [
        {"trial_id": "a", "seed": 0, "objective": 1.0, "protocol": json.dumps(final)},
        {"trial_id": "b", "seed": 0, "objective": 2.0, "protocol": json.dumps(rung)},
    ]
    rows = [{**row, "lr_g": 1e-4 * (i + 1)} for i, row in enumerate(rows)]
    assert results.measurements(trial_table(rows)) == {("raw", "", "f1"): 2}
    for other in ({**final, "reference_sha": "f2"}, {**rung, "final_reference_sha": "f2"}):
        mixed = trial_table([*rows, {"trial_id": "c", "seed": 0, "protocol": json.dumps(other)}])
        with pytest.raises(results.Incomparable, match="measured with 2 different") as raised:
            results.check_comparable(mixed, "run")
        assert "2 rows by raw (no weights) against reference f1" in str(raised.value)


# --- a sweep whose evaluations before the last are smaller --------------------------------------

RUNG = """
name: rung
base: {dataset: ring8, width: 16, steps: 40, eval_every: 20, n_eval: 200, n_eval_rung: 50,
       batch_size: 32}
search:
  lr_g: {choice: [1.0e-9, 2.0e-2]}   # 2e-2: G leaves the modes at once, worse at the rung
seeds: 2
search_alg: grid
search_seed: 1                       # the grid's order: 1e-9 first, so ASHA stops the other
max_concurrent: 1
scheduler: {name: asha, grace_period: 20, reduction_factor: 2}
objective: {metric: fid, mode: min}
"""


@pytest.fixture(scope="module")
def rung_run(tmp_path_factory):
    """The RUNG sweep, run on a private local Ray started for it."""
    with private_ray():
        return run_file(tmp_path_factory.mktemp("rung"), "rung", RUNG)


def test_a_sweep_with_a_rung_count_ranks_pruned_and_finished_trials_as_one(rung_run, capsys):
    from analysis.summary import final_protocols, run_protocols

    files = sorted(p.name for p in (rung_run / rundir.PROTOCOL_DIR).iterdir())
    assert files == ["ring8-n200.pt", "ring8-n50.pt"]
    final_sha, rung_sha = (EvalAssets.load(rung_run / rundir.PROTOCOL_DIR / name).sha[:16]
                           for name in files)  # fmt: skip
    trials, metrics = results.load(rung_run)
    results.check_comparable(trials, "rung")
    results.check_comparable(metrics, "rung")
    per_trial = trials.groupby("trial_id").first()
    ended, pruned = sorted(per_trial.status, key=lambda status: status == "pruned")
    assert ended in results.ENDED_STATUSES and pruned == "pruned"  # G at its start: collapsed
    assert set(trials.n_eval_rung) == {50}
    for row in per_trial.itertuples():
        protocol = json.loads(row.protocol)
        if row.status != "pruned":  # its last evaluation, at `steps`
            assert (protocol["n_fake"], protocol["reference_sha"]) == (200, final_sha)
            assert "final_reference_sha" not in protocol
        else:  # stopped at the rung: measured there with the rung count
            assert (protocol["n_fake"], protocol["reference_sha"]) == (50, rung_sha)
            assert protocol["final_reference_sha"] == final_sha
    counts = metrics.assign(n_fake=[json.loads(p)["n_fake"] for p in metrics.protocol])
    by_step = counts.groupby("step").n_fake.unique().map(list).to_dict()
    assert by_step == {0: [50], 20: [50], 40: [200]}  # before the last, then the last
    # best_: over the evaluations with the last one's count only (the rung's are other numbers)
    alike = counts.merge(trials[["trial_id", "seed", "protocol"]], on=["trial_id", "seed"],
                         suffixes=("", "_last")).query("protocol == protocol_last")  # fmt: skip
    best = alike.groupby(["trial_id", "seed"]).fid.min()
    assert trials.set_index(["trial_id", "seed"]).best_fid.to_dict() == best.to_dict()
    assert len(run_protocols(trials)) == 2 and len(final_protocols(run_protocols(trials))) == 1
    ranked = results.ranking(trials)
    assert list(ranked.stopped) == [False, True]  # the finished one first, then the rung's
    assert cli.main(["results", str(rung_run)]) == 0
    lines = capsys.readouterr().out.splitlines()[1:]  # under the header, best first
    order = per_trial.sort_values("status", key=lambda s: s == "pruned").index.tolist()
    assert [line.split()[0] for line in lines] == order and "pruned" in lines[1]


def test_the_report_says_the_rung_count_and_no_mix_of_protocols(rung_run):
    assert cli.main(["report", str(rung_run)]) == 0
    page = (rung_run / rundir.REPORT).read_text()
    assert "fakes for every evaluation before the last" in page
    assert "mixes" not in page
