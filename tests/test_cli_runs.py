"""`ganlab results`' columns, `ganlab status`, `ls`, `export`, `trial --help` and `--version`, on
run directories written by the real collector from trial directories in Ray's format."""

import dataclasses
import subprocess
import sys
import textwrap
import time

import pytest
import yaml
from raytrials import report, trial_config, write_trial

from ganlab import __version__, fieldhelp, preflight, results, rundir, runs, spec
from ganlab.cli import main
from ganlab.collect import Collector, TrialSource, local
from ganlab.config import TrialConfig

SWEEP = """
name: unit
base: {dataset: ring8, steps: 60, eval_every: 20, width: 16}
search:
  lr_d: {loguniform: [1.0e-5, 1.0e-2]}
  loss: {choice: [hinge, minimax]}
seeds: [0, 1]
num_samples: 5
max_concurrent: 2
objective: {metric: fid, mode: min}
"""
# trial id -> (lr_d, loss, last step, Ray's status, fid of seed 0 and 1 at every step)
TRIALS = {
    "a0001": (1e-4, "hinge", 60, "TERMINATED", (0.30, 0.50)),
    "a0002": (2e-4, "hinge", 60, "TERMINATED", (0.20, 0.40)),  # the best
    "a0003": (3e-4, "minimax", 20, "TERMINATED", (0.90, 0.95)),  # stopped at the rung
    "a0004": (4e-4, "minimax", 20, "RUNNING", (0.60, 0.70)),
}


def write_run(run_dir):
    experiment = run_dir / rundir.EXPERIMENT
    sweep_file = run_dir.parent / "unit.yaml"
    sweep_file.write_text(SWEEP)
    preflight.write_record(spec.load(sweep_file, storage=str(run_dir.parent)), run_dir)
    collect = Collector(run_dir, "unit", configure=lambda params: trial_config(**params))
    for trial_id, (lr_d, loss, last, status, fids) in TRIALS.items():
        config = trial_config(lr_d=lr_d, loss=loss)
        changes = {str(seed): {"fid": fid} for seed, fid in enumerate(fids)}
        lines = [report(trial_id, config, step, i, **changes)
                 for i, step in enumerate(range(0, last + 1, 20))]  # fmt: skip
        trial_dir = write_trial(experiment, trial_id, config, lines)
        collect.update(TrialSource(trial_id, (local(trial_dir),), ray_status=status))
    collect()
    return run_dir


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    return write_run(tmp_path_factory.mktemp("storage") / "unit")


def table(out: str) -> list[list[str]]:
    return [line.split() for line in out.strip().splitlines()]


def test_results_shows_the_searched_fields_even_where_they_do_not_vary(run, capsys):
    assert main(["results", str(run), "--where", "trial_id == 'a0002'"]) == 0
    header, *rows = table(capsys.readouterr().out)
    assert header[:3] == ["trial_id", "lr_d", "loss"] and len(rows) == 1
    assert rows[0][:3] == ["a0002", "0.0002", "hinge"]


def test_results_per_seed_are_best_first_in_a_readable_set_of_columns(run, capsys):
    assert main(["results", str(run), "--seeds", "--top", "99"]) == 0
    header, *rows = table(capsys.readouterr().out)
    assert header == ["trial_id", "seed", "lr_d", "loss", "status", "steps_done",
                      "diverged_step", "objective", "final_fid"]  # fmt: skip
    trials, _ = results.load(run)
    order = list(dict.fromkeys(results.summarise(trials)["trial_id"]))
    assert list(dict.fromkeys(r[0] for r in rows)) == order and order[0] == "a0002"
    assert [(r[0], r[1]) for r in rows[:2]] == [("a0002", "0"), ("a0002", "1")]  # 0.2, 0.4
    assert float(rows[0][-1]) == pytest.approx(0.20)

    assert main(["results", str(run), "--seeds", "--columns", "trial_id,seed,final_fid"]) == 0
    assert table(capsys.readouterr().out)[0] == ["trial_id", "seed", "final_fid"]
    assert main(["results", str(run), "--seeds", "--columns", "all", "--top", "1"]) == 0
    assert table(capsys.readouterr().out)[0] == list(trials.columns)
    assert main(["results", str(run), "--columns", "trial_id,fidd"]) == 2
    err = capsys.readouterr().err
    assert "--columns 'trial_id,fidd': no column fidd; the table's columns: trial_id" in err


def test_status_reads_a_sweep_another_process_runs(run, capsys):
    # What `runlock.hold` does in a sweep's driver, without the driver's imports (seconds).
    holder = subprocess.Popen(
        [sys.executable, "-c", textwrap.dedent(f"""
            import fcntl, os, sys
            fd = os.open({str(run / rundir.LOCK_FILE)!r}, os.O_RDWR | os.O_CREAT, 0o644)
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            os.write(fd, f"pid {{os.getpid()}} on here, since now".encode())
            print("held", flush=True)
            sys.stdin.read()
            """)],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        assert holder.stdout.readline().strip() == "held"
        found = runs.status(run, now=time.time())
        assert main(["status", str(run)]) == 0
        out = capsys.readouterr().out
    finally:
        holder.communicate("")
    assert found.state == "running" and f"pid {holder.pid}" in found.holder
    assert found.outcomes == {"completed": 2, "pruned": 1, "error": 0, "running": 1}
    assert found.left_s is not None and found.left_s > 0
    assert out.splitlines()[0].startswith("unit: running (")
    assert (
        "trials: 3 of 5 ended (2 completed, 1 pruned, 0 failed), 1 running, 1 not started" in out
    )
    assert "best so far (fid, min): trial a0002, objective 0.4 at step 60" in out

    stopped = runs.status(run)  # no sweep holds it: the trial it was running was cut off
    assert stopped.state == "stopped" and stopped.left_s is None
    assert stopped.outcomes == {"completed": 2, "pruned": 2, "error": 0, "running": 0}
    assert list(stopped.best_seeds["final_fid"]) == pytest.approx([0.20, 0.40])


def test_status_and_export_refuse_what_is_not_a_run(tmp_path, run, capsys):
    assert main(["status", str(tmp_path)]) == 2
    assert "not a run directory" in capsys.readouterr().err
    assert main(["export", str(run), "--trial", "nope"]) == 2
    assert "no trial 'nope'; its trials: a0001, a0002" in capsys.readouterr().err


def test_ls_lists_a_storages_runs_with_size_state_and_best(run, capsys):
    assert main(["ls", str(run.parent)]) == 0
    header, row = table(capsys.readouterr().out)
    assert header == ["run", "state", "trials", "size", "objective", "best"]
    assert row[:3] == ["unit", "stopped", "4"] and row[-2:] == ["fid", "0.4"]
    (entry,) = runs.list_runs(run.parent)
    assert entry.size == sum(p.stat().st_size for p in run.rglob("*") if p.is_file())


def test_export_round_trips_through_ganlab_trial_and_a_sweeps_base(run, tmp_path, capsys):
    out = tmp_path / "best.yaml"
    assert main(["export", str(run), "--best", "--out", str(out)]) == 0
    assert "reruns trial a0002" in capsys.readouterr().out
    exported = yaml.safe_load(out.read_text())
    original = TrialConfig.from_dict(trial_config(lr_d=2e-4, loss="hinge"))
    # `ganlab trial --config`: the same configuration, given the seeds and objective it names
    again = TrialConfig.from_dict({**exported, "seeds": [0, 1], "metric": "fid", "mode": "min"})
    assert again == original
    assert "--seeds 0,1 --metric fid --mode min" in out.read_text()
    code = main(["trial", "--config", str(out), "--seeds", "0,1", "--metric", "fid", "--steps",
                 "2", "--eval-every", "2", "--n-eval", "50"])  # fmt: skip
    assert code == 0 and "objective fid (min)" in capsys.readouterr().out
    # a sweep file's `base:`
    sweep = tmp_path / "around.yaml"
    sweep.write_text(yaml.safe_dump({"name": "around", "base": exported, "seeds": [0, 1],
                                     "search": {"lr_g": {"loguniform": [1e-4, 1e-3]}},
                                     "objective": {"metric": "fid"}}))  # fmt: skip
    loaded = spec.load(sweep)
    assert loaded.trial_config({"lr_g": original.lr_g}) == original


def test_export_top_writes_one_file_each_showing_progress(run, tmp_path, capsys):
    assert main(["export", str(run), "--top", "3", "--out", str(tmp_path / "top")]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert [line.split()[0] for line in lines] == ["[1/3]", "[2/3]", "[3/3]"]
    files = sorted((tmp_path / "top").iterdir())
    assert files[0].name == "rank-01-a0002.yaml"
    assert yaml.safe_load(files[1].read_text())["lr_d"] == pytest.approx(1e-4)


def test_trial_takes_one_seed_and_the_data_sets_own_objective(capsys):
    assert main(["trial", "--seeds", "0", "--steps", "2", "--eval-every", "2", "--width", "8",
                 "--n-eval", "50"]) == 0  # fmt: skip
    out = capsys.readouterr().out
    assert "seeds [0], 2 steps, objective good_modes (max)" in out  # ring8's own, not fid
    assert "objective (good_modes, median over seeds)" in out


def test_trial_help_gives_each_fields_default_allowed_values_and_unit(capsys):
    with pytest.raises(SystemExit) as done:
        main(["trial", "--help"])
    assert done.value.code == 0
    text = " ".join(capsys.readouterr().out.split())
    for name in ("loss", "steps", "lr_d", "spectral_norm"):
        assert " ".join(fieldhelp.flag_help(name).split()) in text
    assert "default non-saturating; allowed: minimax, non-saturating" in text
    assert "training length; default 2000; allowed: >= 1; unit: G updates" in text


def test_the_readme_lists_the_fields_as_trial_help_does():
    names = [f.name for f in dataclasses.fields(TrialConfig)]
    assert sorted(fieldhelp.FIELDS) == sorted(names)  # every field, no other
    block = fieldhelp.readme_block(fieldhelp.README.read_text(encoding="utf-8"))
    assert block == fieldhelp.readme_list(), "run `python -m ganlab.fieldhelp` to rewrite it"


def test_version(capsys):
    with pytest.raises(SystemExit) as done:
        main(["--version"])
    assert done.value.code == 0 and capsys.readouterr().out == f"ganlab {__version__}\n"
