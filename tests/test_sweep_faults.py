"""Fault tolerance on real Ray: a node lost mid-sweep, and a driver killed then resumed."""

import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import optuna
import pytest
import ray
import torch
from faults import kill_marked
from ray.cluster_utils import Cluster

from ganlab import preflight, results, rundir, spec, sweep

SWEEP = """
name: {name}
base: {{dataset: ring8, width: 64, steps: {steps}, eval_every: 50, n_eval: 300, batch_size: 32}}
search:
  loss: {{choice: [non-saturating, hinge, least-squares, minimax]}}
seeds: 2
search_alg: grid
max_concurrent: 2
scheduler: none
max_failures: 3
objective: {{metric: fid, mode: min}}
"""


def write_sweep(tmp_path: Path, name: str, steps: int) -> Path:
    path = tmp_path / f"{name}.yaml"
    path.write_text(SWEEP.format(name=name, steps=steps))
    return path


def reports(run_dir: Path) -> dict[str, list[dict]]:
    """Each trial's reports so far, by trial id, read from Ray's experiment directory."""
    out = {}
    for path in (run_dir / rundir.EXPERIMENT).glob(f"*/{rundir.RESULT_FILE}"):
        lines = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
        if lines:
            out[lines[0]["trial_id"]] = lines
    return out


def assert_whole_and_single(run_dir: Path, n_trials: int, steps: int) -> None:
    """Every trial finished; no (trial, seed) row and no (trial, seed, step) row doubled."""
    trials, metrics = results.load(run_dir)
    assert trials.trial_id.nunique() == n_trials and len(trials) == n_trials * 2
    assert trials.groupby(["trial_id", "seed"]).size().max() == 1
    assert set(trials.status) <= {"completed", "collapsed", "diverged"}
    assert not metrics.duplicated(["trial_id", "seed", "step"]).any()
    for row in trials[trials.status != "diverged"].itertuples():
        assert row.steps_done == steps
        seen = metrics.query("trial_id == @row.trial_id and seed == @row.seed").step
        assert sorted(seen) == list(range(0, steps + 1, 50))


def test_losing_a_worker_node_mid_sweep_loses_and_doubles_nothing(tmp_path):
    cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 0})
    workers = [cluster.add_node(num_cpus=1) for _ in range(2)]
    cluster.wait_for_nodes()
    ray.init(address=cluster.address, log_to_driver=False)
    try:
        s = spec.load(write_sweep(tmp_path, "lose_node", 400), storage=str(tmp_path / "runs"))
        run_dir = preflight.run_dir_of(s)
        failure = []
        runner = threading.Thread(
            target=lambda: failure.append(sweep.run(s, echo=lambda line: None))
        )
        runner.start()
        victim = workers[1]
        deadline = time.monotonic() + 240
        while time.monotonic() < deadline:  # wait until the victim is mid-trial
            on_victim = [
                r for r in reports(run_dir).values() if r[-1]["node_id"] == victim.node_id
            ]
            if any(100 <= r[-1]["step"] < 400 for r in on_victim):
                break
            time.sleep(0.2)
        else:
            pytest.fail("no trial ran on the second worker")
        cluster.remove_node(victim)
        runner.join(timeout=600)
        assert not runner.is_alive() and failure, "the sweep did not finish"
    finally:
        ray.shutdown()
        cluster.shutdown()

    assert_whole_and_single(run_dir, n_trials=4, steps=400)
    retried = [r for r in reports(run_dir).values() if len({x["node_id"] for x in r}) > 1]
    assert len(retried) == 1, "the interrupted trial should have moved to the surviving node"
    (moved,) = retried
    elsewhere = [r for r in moved if r["node_id"] != victim.node_id]
    again = [r for r in elsewhere if r["resumed_from_step"] is not None]
    start = again[0]["resumed_from_step"]
    assert start >= 100 and [r["step"] for r in again] == list(range(start + 50, 401, 50))
    trial_dir = run_dir / rundir.EXPERIMENT / rundir.trial_dir_name(moved[0]["trial_id"])
    assert (trial_dir / rundir.ERROR_FILE).exists()
    trials, metrics = results.load(run_dir)
    assert "error" not in set(trials[trials.trial_id == moved[0]["trial_id"]].status)
    rows = metrics[metrics.trial_id == moved[0]["trial_id"]].set_index(["seed", "step"])
    for report in again:  # the table holds what the resumed run reported
        for seed in report["seeds"]:
            assert rows.loc[(int(seed), report["step"]), "wall_s"] == report["wall_s"]


def checkpoint_steps(trial_dir: Path) -> dict[Path, int]:
    """Each whole checkpoint directory of a trial and the step its state was saved at. A kill
    can leave a directory that Ray had begun to fill or to prune, without its state: not one
    the resume can start from, so not listed."""
    return {
        checkpoint: torch.load(checkpoint / rundir.STATE_FILE, weights_only=True)["step"]
        for checkpoint in sorted(trial_dir.glob("checkpoint_*"))
        if (checkpoint / rundir.STATE_FILE).is_file()
    }


# Long enough that the kill lands with one trial done and another part-way: results reach the
# storage in bursts, and seeds trained batched (ring8/mlp on a CPU) finish sooner: at 600 steps
# a clean CI run once finished before the test saw that point.
KILLED_STEPS = 1200


class KilledSweep:
    """`ganlab sweep PATH` in a driver process of its own, marked so that its Ray processes can
    be found (`kill_marked`)."""

    def __init__(self, tmp_path: Path, path: Path):
        self.runs = tmp_path / "runs"
        self.marker = f"GANLAB_TEST_MARKER={tmp_path.name}"
        self.env = {**os.environ, "GANLAB_TEST_MARKER": tmp_path.name}
        self.command = [sys.executable, "-m", "ganlab.cli", "sweep", str(path), "--storage",
                        str(self.runs), "--no-report"]  # fmt: skip

    def kill_when(self, run_dir: Path, ready) -> subprocess.Popen:
        """Start the driver, SIGKILL it once `ready(reports(run_dir))`, and kill what it left
        running; the killed driver."""
        driver = subprocess.Popen(self.command, env=self.env, stdout=subprocess.DEVNULL,
                                  stderr=subprocess.PIPE)  # fmt: skip
        try:
            deadline = time.monotonic() + 240
            while time.monotonic() < deadline:
                if ready(reports(run_dir)):
                    break
                assert driver.poll() is None, driver.stderr.read().decode()
                time.sleep(0.2)
            else:
                pytest.fail("the sweep never reached the point to kill it")
            driver.send_signal(signal.SIGKILL)
            driver.wait(timeout=30)
        finally:
            driver.kill()
            kill_marked(self.marker)
        return driver

    def resume(self) -> subprocess.CompletedProcess:
        """`--resume` of the killed sweep, then what it left running killed."""
        resumed = subprocess.run([*self.command, "--resume"], env=self.env, capture_output=True,
                                 text=True, timeout=600)  # fmt: skip
        kill_marked(self.marker)
        return resumed


def test_a_killed_driver_resumes_from_checkpoints_and_locks_out_a_second_sweep(tmp_path):
    path = write_sweep(tmp_path, "killed", KILLED_STEPS)
    killed = KilledSweep(tmp_path, path)
    run_dir = killed.runs / "killed"
    second, done, running = None, [], []

    def one_done_another_part_way(seen: dict[str, list[dict]]) -> bool:
        nonlocal second, done, running
        if second is None and seen:  # the same sweep again, while the first one runs
            second = subprocess.run(killed.command, env=killed.env, capture_output=True,
                                    text=True, timeout=120)  # fmt: skip
        done = [t for t, r in seen.items() if r[-1]["last"]]
        running = [t for t, r in seen.items() if not r[-1]["last"] and r[-1]["step"] >= 100]
        return bool(done and running)

    driver = killed.kill_when(run_dir, one_done_another_part_way)
    assert second.returncode == 2, second.stderr[-3000:]
    error = second.stderr.strip().splitlines()[-1]
    assert error.startswith(f"ganlab sweep: error: {path}: another sweep named 'killed' is ")
    assert f"running in {run_dir} (pid {driver.pid} on " in error

    experiment = run_dir / rundir.EXPERIMENT
    finished = {t: experiment.glob(f"*{t}*/{rundir.RESULT_FILE}") for t in done}
    before = {t: next(paths).read_bytes() for t, paths in finished.items()}
    # The latest checkpoints of one interrupted trial are corrupt: it must resume from the
    # oldest one kept, whichever of them Ray last recorded as its latest.
    corrupt = running[0]
    kept = checkpoint_steps(experiment / rundir.trial_dir_name(corrupt))
    assert len(kept) >= 2, kept
    oldest = min(kept, key=kept.get)
    for checkpoint in kept:
        if checkpoint != oldest:
            (checkpoint / rundir.STATE_FILE).write_bytes(b"PK\x03\x04 cut short")
    intact = {t: set(checkpoint_steps(experiment / rundir.trial_dir_name(t)).values())
              for t in running[1:]}  # fmt: skip

    resumed = killed.resume()
    assert resumed.returncode == 0, resumed.stderr[-3000:]

    assert_whole_and_single(run_dir, n_trials=4, steps=KILLED_STEPS)
    resumed_reports = reports(run_dir)
    for trial_id in done:  # finished trials are not run again ...
        after = next(experiment.glob(f"*{trial_id}*/{rundir.RESULT_FILE}")).read_bytes()
        if after == before[trial_id]:
            continue
        # ... unless the kill landed after the trial's end but before Ray saved its own state:
        # then Ray runs it again from the checkpoint it knew, and it repeats its numbers.
        first = {r["step"]: r["objective"] for r in map(json.loads, before[trial_id].splitlines())}
        again = [r for r in resumed_reports[trial_id] if r["resumed_from_step"] is not None]
        assert again and all(first[r["step"]] == r["objective"] for r in again)
    for trial_id in running:
        again = [r for r in resumed_reports[trial_id] if r["resumed_from_step"] is not None]
        start = again[0]["resumed_from_step"]
        if trial_id == corrupt:
            assert start == kept[oldest] > 0
        else:
            assert start in intact[trial_id] and start > 0
        steps = [r["step"] for r in again]  # it went on from there, not from step 0
        assert steps == list(range(start + 50, KILLED_STEPS + 1, 50))

    trials, _ = results.load(run_dir)
    objective = trials.groupby("loss").objective.first()
    study = optuna.load_study(study_name="killed", storage=sweep.journal_storage(run_dir))
    # One COMPLETE trial per configuration. A suggestion the killed driver had asked for but not
    # yet recorded in Ray's experiment state is asked again on resume; the orphan is closed as
    # PRUNED at the end, never left RUNNING (whether it exists depends on when the kill lands).
    complete = study.get_trials(states=(optuna.trial.TrialState.COMPLETE,))
    others = {t.state for t in study.trials} - {optuna.trial.TrialState.COMPLETE}
    assert len(complete) == 4 and others <= {optuna.trial.TrialState.PRUNED}
    told = {t.params["loss"]: t.value for t in complete}
    assert told == pytest.approx(objective.to_dict())  # resumed results reached the journal


PBT_KILLED = """
name: pbt_killed
base: {dataset: ring8, width: 32, steps: 400, eval_every: 50, n_eval: 300, batch_size: 32}
search:
  lr_d: {loguniform: [1.0e-4, 1.0e-3]}
  lr_g: {loguniform: [1.0e-4, 1.0e-3]}
seeds: 2
num_samples: 4                # two run, two wait paused at a checkpoint
scheduler: {name: pbt, perturbation_interval: 100, quantile_fraction: 0.5}
objective: {metric: fid, mode: min}
"""


def test_a_killed_pbt_sweep_resumes_its_population_where_it_was(tmp_path):
    """PBT keeps its population in Tune's state and its clones in checkpoints: a killed driver's
    `--resume` must go on from them, not start the population over."""
    path = tmp_path / "pbt_killed.yaml"
    path.write_text(PBT_KILLED)
    killed = KilledSweep(tmp_path, path)
    run_dir = killed.runs / "pbt_killed"

    def started_and_past_an_exploit(seen: dict[str, list[dict]]) -> bool:
        return len(seen) == 4 and sum(r[-1]["step"] >= 200 for r in seen.values()) >= 2

    killed.kill_when(run_dir, started_and_past_an_exploit)
    before = reports(run_dir)
    resumed = killed.resume()
    assert resumed.returncode == 0, resumed.stderr[-3000:]

    assert_whole_and_single(run_dir, n_trials=4, steps=400)
    after = reports(run_dir)
    assert set(after) == set(before)  # the same population, no trial added
    for trial_id, lines in after.items():
        assert lines[: len(before[trial_id])] == before[trial_id]  # nothing rewritten
        new = lines[len(before[trial_id]) :]
        if new and before[trial_id][-1]["step"] >= 100:  # it had checkpointed: not from 0
            assert (new[0]["resumed_from_step"] or 0) >= 50, new[0]
    trials, _ = results.load(run_dir)
    kept = {e["from_trial"] for events in trials.exploits for e in json.loads(events or "[]")}
    assert kept <= set(after)  # every exploit's source is one of the population
