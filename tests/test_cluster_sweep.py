"""`ganlab sweep --address` on a real two-node Ray cluster on this machine, from `ray start`.

Both nodes declare one CPU (`--num-cpus=1`), and trials ask for half of one, so a node runs at
most two at once; with four running at once, both nodes must work. (A logical GPU would not do:
a trial Ray gives a GPU that torch cannot see fails, as it must; tests/test_placement.py.) Each
node has a cache of its own, empty: the digits sweep shows that no node trains a classifier or
computes reference statistics, and every row carries the driver's protocol. A second cluster has
its second node on 127.0.0.2, another machine as far as Ray can tell: there a local storage path
is refused before anything starts. Each cluster lives in a private temp dir with its own token
and ports, and is ended by PID (`ray stop` would end every Ray on the machine).
"""

import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from raycluster import Cluster, alive_nodes, cluster_pids, join, new_root, start_head, stop

from ganlab import plugins, results

SWEEP_TIMEOUT_S = 180
NODE = ("--num-cpus=1", "--min-worker-port=0", "--max-worker-port=0",
        f"--object-store-memory={100 * 1024**2}")  # fmt: skip
DIGITS_WEIGHTS = "302d3f54f0fef791"  # the shipped classifier (tests/test_metrics_classifier.py)
DIGITS_FID_FLOOR = 10.549651494528234  # its floor at n_fake 1000 (tests/test_metrics_assets.py)
SWEEP = """
name: two-nodes
base: {dataset: ring8, width: 32, steps: 60, eval_every: 20, n_eval: 300, batch_size: 32}
search:
  loss: {choice: [non-saturating, hinge, least-squares]}
  lr_d: {choice: [2.0e-4, 1.0e-3]}
seeds: 2
search_alg: grid          # all six, once each
max_concurrent: 4         # four at once: two nodes × (1 CPU / 0.5 per trial)
scheduler: {name: none}
resources: {cpu: 0.5}
objective: {metric: fid, mode: min}
"""
DIGITS_SWEEP = """
name: two-nodes
base: {dataset: digits, arch: dcgan, width: 8, steps: 20, eval_every: 10, batch_size: 16}
search:
  loss: {choice: [non-saturating, hinge]}
seeds: 2
search_alg: grid
max_concurrent: 4
scheduler: {name: none}
resources: {cpu: 0.5}
objective: {metric: fid, mode: min}
"""
N_TRIALS, N_SEEDS, PER_NODE = 6, 2, 2


def _cluster(prefix: str, second_node: tuple[str, ...]):
    """A head and one more node, both with `NODE`'s resources and an empty cache of their own
    (`<root>/cache-head`, `<root>/cache-worker`); ended by PID afterwards."""
    root, home = new_root(prefix)
    try:
        cluster = start_head(root, home, *NODE, GANLAB_CACHE=str(root / "cache-head"))
        worker_env = cluster.env(RAY_gcs_server_port_wait_time_s="2",
                                 GANLAB_CACHE=str(root / "cache-worker"))  # fmt: skip
        joined = join(cluster, worker_env, *NODE, *second_node)
        assert joined.returncode == 0, joined.stderr
        assert len(alive_nodes(cluster)) == 2
        yield cluster
    finally:
        stop(root)
        left = cluster_pids(root)
        shutil.rmtree(root, ignore_errors=True)
        assert not left, f"processes of {root} still running: {sorted(left)}"


@pytest.fixture
def one_machine():
    """Both nodes on this machine's address."""
    yield from _cluster("ganlab-2n-", ())


@pytest.fixture
def two_machines():
    """The second node on 127.0.0.2: to Ray (and to `check_storage`), another machine."""
    yield from _cluster("ganlab-2m-", ("--node-ip-address=127.0.0.2",))


def _sweep(
    cluster: Cluster, tmp_path: Path, sweep: str = SWEEP, report: bool = False
) -> tuple[subprocess.CompletedProcess, Path]:
    """`ganlab sweep --address` as a user runs it: the cluster's token in HOME, token mode on."""
    path = tmp_path / "two-nodes.yaml"
    path.write_text(sweep)
    storage = tmp_path / "runs"
    done = subprocess.run(
        [sys.executable, "-m", "ganlab.cli", "sweep", str(path), "--address", cluster.address,
         "--storage", str(storage), *([] if report else ["--no-report"])],
        env=cluster.env(RAY_gcs_server_port_wait_time_s="2"), cwd=tmp_path,
        capture_output=True, text=True, timeout=SWEEP_TIMEOUT_S,
    )  # fmt: skip
    return done, storage


def _most_at_once(intervals: list[tuple[float, float]]) -> int:
    """The largest number of [start, end] intervals that overlap at one instant."""
    events = sorted([(start, 1) for start, _ in intervals] + [(end, -1) for _, end in intervals])
    running = most = 0
    for _, change in events:  # at equal times an end (-1) sorts before a start (+1)
        running += change
        most = max(most, running)
    return most


def test_a_sweep_spreads_over_both_nodes_within_their_cpus(one_machine, tmp_path):
    done, storage = _sweep(one_machine, tmp_path)
    assert done.returncode == 0, done.stderr[-5000:]

    trials, metrics = results.load(storage / "two-nodes")
    assert len(trials) == N_TRIALS * N_SEEDS
    assert trials.trial_id.nunique() == N_TRIALS
    assert trials.groupby(["trial_id", "seed"]).size().max() == 1
    assert len(trials.groupby(["loss", "lr_d"]).trial_id.nunique()) == N_TRIALS  # the grid
    assert "error" not in set(trials.status)
    assert set(trials.status) <= set(results.STATUSES)
    assert (trials.steps_done[trials.status == "completed"] == 60).all()
    assert len(metrics) > 0

    nodes = {n.node_id.hex(): n for n in alive_nodes(one_machine)}
    assert set(trials.node) == set(nodes)  # both nodes trained
    assert set(trials.node_ip) == {one_machine.node_ip}  # one machine: local storage is fine
    assert set(trials.device_used) == {"cpu"}

    per_trial = trials.groupby("trial_id").first()
    assert (per_trial.started_at < per_trial.ended_at).all()
    for node, on_node in per_trial.groupby("node"):
        at_once = _most_at_once(list(zip(on_node.started_at, on_node.ended_at, strict=True)))
        assert at_once <= PER_NODE, f"{at_once} trials at once on {node} (1 CPU, 0.5 each)"


def test_every_node_measures_with_the_drivers_protocol(one_machine, tmp_path):
    done, storage = _sweep(one_machine, tmp_path, DIGITS_SWEEP, report=True)
    assert done.returncode == 0, done.stderr[-5000:]
    trials, metrics = results.load(storage / "two-nodes")
    nodes = {n.node_id.hex() for n in alive_nodes(one_machine)}
    assert set(trials.node) == nodes and "error" not in set(trials.status)
    protocols = [json.loads(p) for p in {*trials.protocol, *metrics.protocol}]
    assert len(protocols) == 1  # one protocol in every row of both tables, whatever the node
    (protocol,) = protocols
    assert (protocol["extractor"], protocol["weights"]) == ("classifier", DIGITS_WEIGHTS)
    assert protocol["fid_floor"] == pytest.approx(DIGITS_FID_FLOOR, rel=1e-4)
    # The report shows the floor every row was measured against: the shipped classifier's.
    report = (storage / "two-nodes" / "report.html").read_text()
    (shown,) = set(re.findall(r"fid_floor=([0-9.e+-]+)", report))
    assert float(shown) == protocol["fid_floor"]
    # No node trained a classifier or made reference statistics: the caches are empty.
    for cache in ("cache-head", "cache-worker"):
        made = one_machine.root / cache
        assert not made.exists() or not [p for p in made.iterdir() if p.suffix == ".pt"]


def test_a_plugin_sweep_ships_its_code_to_both_nodes(one_machine, tmp_path):
    """The example plugin (examples/tiny_gans/: an architecture, a loss, PNG files) reaches the
    cluster's workers through Ray's runtime environment; rows carry its hash."""
    example = Path(__file__).parent.parent / "examples" / "plugin_sweep.yaml"
    done = subprocess.run(
        [sys.executable, "-m", "ganlab.cli", "sweep", str(example), "--smoke", "--address",
         one_machine.address, "--storage", str(tmp_path / "runs"), "--no-report"],
        env=one_machine.env(RAY_gcs_server_port_wait_time_s="2"), cwd=tmp_path,
        capture_output=True, text=True, timeout=SWEEP_TIMEOUT_S,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-5000:]
    trials, _ = results.load(tmp_path / "runs" / "plugin_sweep-smoke")
    assert len(trials) == 4 and set(trials.status) <= {"completed", "collapsed"}
    shipped = plugins.source_hash(example.parent / "tiny_gans")[: plugins.HASH_SHOWN]
    assert set(trials.plugins) == {f"tiny_gans={shipped}"}
    assert set(trials.node) <= {n.node_id.hex() for n in alive_nodes(one_machine)}


def test_local_storage_on_two_machines_is_refused_before_anything_starts(two_machines, tmp_path):
    done, storage = _sweep(two_machines, tmp_path)
    assert done.returncode == 2, done.stderr[-5000:]
    error = done.stderr.strip().splitlines()[-1]
    assert error.startswith(f"ganlab sweep: error: {tmp_path / 'two-nodes.yaml'}: storage ")
    assert str(storage) in error and "is a local path" in error
    hosts = ", ".join(sorted({two_machines.node_ip, "127.0.0.2"}))
    assert f"the cluster spans 2 machines ({hosts})" in error
    assert "storage:" in error and "--storage" in error and "s3://" in error
    assert "shared file system" in error
    assert not storage.exists()  # no run directory, no tables
    assert sorted(p.name for p in tmp_path.iterdir()) == ["two-nodes.yaml"]
