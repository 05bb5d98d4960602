"""Fault tolerance on real Ray: a node lost mid-sweep, and a driver killed then resumed."""

import contextlib
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
from ray.cluster_utils import Cluster

from ganlab import results, spec, sweep

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
    for path in (run_dir / "tune").glob("*/result.json"):
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
        run_dir = sweep.run_dir_of(s)
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
    assert retried, "the interrupted trial should have moved to the surviving node"


def _ray_processes(marker: str) -> list[int]:
    pids = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            command = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode()
            environ = (entry / "environ").read_bytes()
        except OSError:
            continue
        if marker in command or marker.encode() in environ:
            pids.append(int(entry.name))
    return pids


def _kill_all(marker: str) -> None:
    for pid in _ray_processes(marker):
        if pid != os.getpid():
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)


def test_a_killed_driver_resumes_without_rerunning_finished_trials(tmp_path):
    path = write_sweep(tmp_path, "killed", 300)
    runs = tmp_path / "runs"
    run_dir = runs / "killed"
    marker = f"GANLAB_TEST_MARKER={tmp_path.name}"
    env = {**os.environ, "GANLAB_TEST_MARKER": tmp_path.name}
    command = [sys.executable, "-m", "ganlab.cli", "sweep", str(path), "--storage", str(runs),
               "--no-report"]  # fmt: skip
    driver = subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + 240
        while time.monotonic() < deadline:  # one trial done, another part-way
            seen = reports(run_dir)
            done = [t for t, r in seen.items() if r[-1]["last"]]
            running = [t for t, r in seen.items() if not r[-1]["last"] and r[-1]["step"] >= 100]
            if done and running:
                break
            assert driver.poll() is None, driver.stderr.read().decode()
            time.sleep(0.2)
        else:
            pytest.fail("the sweep never reached the point to kill it")
        driver.send_signal(signal.SIGKILL)
        driver.wait(timeout=30)
    finally:
        driver.kill()
        _kill_all(marker)
    finished = {t: (run_dir / "tune").glob(f"*{t}*/result.json") for t in done}
    before = {t: next(paths).read_bytes() for t, paths in finished.items()}

    resumed = subprocess.run([*command, "--resume"], env=env, capture_output=True, text=True,
                             timeout=600)  # fmt: skip
    _kill_all(marker)
    assert resumed.returncode == 0, resumed.stderr[-3000:]

    assert_whole_and_single(run_dir, n_trials=4, steps=300)
    after = {t: next((run_dir / "tune").glob(f"*{t}*/result.json")).read_bytes() for t in done}
    assert after == before  # finished trials were not run again
    resumed_reports = reports(run_dir)
    for trial_id in running:
        steps = [r["step"] for r in resumed_reports[trial_id]]
        assert steps[-1] == 300 and steps[0] == 0
    study = optuna.load_study(study_name="killed", storage=sweep.journal_storage(run_dir))
    states = {t.state for t in study.trials}
    assert states <= {optuna.trial.TrialState.COMPLETE, optuna.trial.TrialState.PRUNED}
