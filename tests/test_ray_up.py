"""The cluster launcher for real: `ray up` of cluster-local.yaml, a sweep submitted as a Ray job,
its status, logs and tables read back, and `ray down`, rehearsed on this machine with the
README's commands.

The two "machines" are sshds of the test's own on loopback (tests/sshnodes.py): the head on
127.0.0.1, a worker on 127.0.0.2, key-only login with a key made here, each session with a HOME
of its own. The file is rendered for them, and only there: their addresses and user, the key,
ports picked free in place of Ray's fixed ones, a temp dir per node and the worker's node
address (two nodes share this host, and other Ray clusters may run beside them), no `~/data`
mount, and, in place of the setup commands (uv, a venv, `pip install -e`: minutes, and the
network), a check that the nodes run this Python, which holds ganlab's pins already, and import
ganlab from the copy `ray up` made. The sshds' port comes from an `ssh` first on PATH, and each
node's `ray stop` ends that node's Ray only (tests/sshnodes.py). Everything else of the file
runs as written: its initialization commands, file mounts, rsync filters and `ray start` flags
(token authentication, the dashboard on the head's loopback, no trials on the head, autoscaler
v1, GPUs counted per worker). The sweep's storage is a `file://` directory, as an NFS mount
every node sees at one path would be.

Bounded at REHEARSAL_TIMEOUT_S (every command's timeout is cut to what is left); 85-160 s
measured here on 2 busy cores. Every process it started is ended by its id however the test
ends, and none may be left.
"""

import contextlib
import copy
import getpass
import hashlib
import json
import os
import re
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pandas as pd
import pytest
import sshnodes
import yaml
from raycluster import bearer, cluster_pids, free_ports, gcs_nodes, ray_env, stop

ROOT = Path(__file__).resolve().parents[1]
CLUSTER_LOCAL = ROOT / "cluster-local.yaml"
REHEARSAL_TIMEOUT_S = 300  # the whole test, with its set-up and teardown
COMMAND_TIMEOUT_S = 180  # any one `ray` command
JOB_TIMEOUT_S = 200
WORKER_JOIN_TIMEOUT_S = 90
WORKER_EXIT_TIMEOUT_S = 30
HEAD, WORKER = "127.0.0.1", "127.0.0.2"
ANSI = re.compile(r"\x1b\[[0-9;]*m")  # Ray's CLI colours its output even into a pipe

pytestmark = [
    pytest.mark.rehearsal,
    pytest.mark.skipif(not sshnodes.SSHD.exists(), reason="no sshd: run scripts/install-sshd.sh"),
]


def render(config: dict, *, key: Path, ports: dict[str, int], root: Path) -> dict:
    """cluster-local.yaml pointed at this machine's two sshds (see the module's docstring)."""
    config = copy.deepcopy(config)
    config["cluster_name"] = f"ganlab-up-{root.name.rsplit('-', 1)[-1]}"
    config["provider"].update(head_ip=HEAD, worker_ips=[WORKER])
    config["min_workers"] = config["max_workers"] = 1
    config["auth"] = {"ssh_user": sshnodes.user(), "ssh_private_key": str(key)}
    del config["file_mounts"]["~/data"]
    check = (
        f'cd ~/ganlab && python -c "import ganlab, ray, sys; '
        f"assert ray.__version__ == '2.60.0' and sys.prefix == {sys.prefix!r}\""
    )
    config["setup_commands"] = [check]
    config["head_setup_commands"] = config["worker_setup_commands"] = []

    def ports_of(command: str, node: str) -> str:
        for flag in ("--port=", ":"):
            command = command.replace(f"{flag}6379", f"{flag}{ports['gcs']}")
        for flag, fixed in (("--object-manager-port=", 8076), ("--node-manager-port=", 8077),
                            ("--dashboard-agent-listen-port=", 52365)):  # fmt: skip
            name = f"{node}-{flag.strip('-=')}"
            command = command.replace(f"{flag}{fixed}", f"{flag}{ports[name]}")
        extra = f" --temp-dir={root / f'ray-{node}'} --object-store-memory={100 * 1024**2}"
        if node == "worker":  # else Ray takes this host's address, the head's too
            extra += f" --node-ip-address={WORKER}"
        if node == "head":
            extra += (f" --dashboard-port={ports['dashboard']}"
                      f" --ray-client-server-port={ports['client']}")  # fmt: skip
        return command + extra if "ray start" in command else command

    for key_name, node in (("head_start_ray_commands", "head"),
                           ("worker_start_ray_commands", "worker")):  # fmt: skip
        config[key_name] = [ports_of(c, node) for c in config[key_name]]
    return config


def _port_names() -> list[str]:
    names = ["gcs", "dashboard", "client"]
    for node in ("head", "worker"):
        names += [f"{node}-{f}" for f in ("object-manager-port", "node-manager-port",
                                           "dashboard-agent-listen-port")]  # fmt: skip
    return names


def listening(port: int, host: str = HEAD) -> bool:
    with contextlib.suppress(OSError), socket.create_connection((host, port), timeout=2):
        return True
    return False


class Rehearsal:
    """The rendered file, the client's environment and the `ray` CLI, for one test."""

    def __init__(self, root: Path):
        self.root = root
        self.deadline = time.monotonic() + REHEARSAL_TIMEOUT_S
        self.local_home = root / "home-local"  # the user's machine: HOME of `ray up`
        self.local_home.mkdir()
        self.key = sshnodes.keygen(root / "id_ed25519")
        authorized = root / "authorized_keys"
        authorized.write_text((root / "id_ed25519.pub").read_text())
        self.ssh_port, *numbers = free_ports(1 + len(_port_names()))
        self.ports = dict(zip(_port_names(), numbers, strict=True))
        self.machines = [
            sshnodes.start(root, "head", HEAD, self.ssh_port, authorized),
            sshnodes.start(root, "worker", WORKER, self.ssh_port, authorized),
        ]
        self.config = render(yaml.safe_load(CLUSTER_LOCAL.read_text()), key=self.key,
                             ports=self.ports, root=root)  # fmt: skip
        self.file = root / "cluster-local.yaml"
        self.file.write_text(yaml.safe_dump(self.config, sort_keys=False))
        path = f"{root / 'bin'}:{Path(sys.executable).parent}:{os.environ['PATH']}"
        self.env = ray_env(self.local_home, RAY_AUTH_MODE="token", PATH=path)
        generated = self.ray("get-auth-token", "--generate")
        self.token = (self.local_home / ".ray" / "auth_token").read_text().strip()
        assert re.fullmatch(r"[0-9a-f]{64}", self.token), generated.stdout

    def left_s(self, timeout: float = COMMAND_TIMEOUT_S) -> float:
        """A command's timeout within what is left of REHEARSAL_TIMEOUT_S."""
        return max(1.0, min(timeout, self.deadline - time.monotonic()))

    def ray(self, *args: str, timeout: float = COMMAND_TIMEOUT_S, check: bool = True):
        done = subprocess.run(["ray", *args], cwd=ROOT, env=self.env, capture_output=True,
                              text=True, timeout=self.left_s(timeout))  # fmt: skip
        done.stdout, done.stderr = ANSI.sub("", done.stdout), ANSI.sub("", done.stderr)
        if check:
            assert done.returncode == 0, f"ray {' '.join(args)}:\n{done.stdout}\n{done.stderr}"
        return done

    @property
    def gcs(self) -> str:
        return f"{HEAD}:{self.ports['gcs']}"

    def alive_nodes(self) -> list:
        nodes = gcs_nodes(self.gcs, bearer(self.token))
        return [n for n in nodes if n.state == n.GcsNodeState.ALIVE]

    def autoscaler_log(self) -> str:
        """The end of the head's autoscaler log: what it did to start the worker."""
        logs = self.root / "ray-head" / "session_latest" / "logs"
        return "\n".join(f"{p.name}: {p.read_text(errors='replace')[-3000:]}"
                         for p in sorted(logs.glob("monitor.*")))  # fmt: skip

    def control_dir(self) -> Path:
        """Where Ray's SSH connection masters (ControlPersist) keep their sockets."""
        user = hashlib.sha256(getpass.getuser().encode()).hexdigest()[:10]
        cluster = hashlib.sha256(self.config["cluster_name"].encode()).hexdigest()[:10]
        return Path(f"/tmp/ray_ssh_{user}/{cluster}")

    def leftovers(self) -> set[int]:
        pids = cluster_pids(self.root) | cluster_pids(self.control_dir())
        return pids - {m.process.pid for m in self.machines}

    def end(self) -> None:
        """Whatever is still running, ended by its id: Ray's nodes, SSH masters, the sshds."""
        for machine in self.machines:
            sshnodes.end(machine)
        stop(self.control_dir())
        stop(self.root)
        bootstrap = self.machines[0].home / "ray_bootstrap_config.yaml"  # names Ray's cache
        if bootstrap.exists():
            cache = yaml.safe_load(bootstrap.read_text())["provider"].get("_config_cache_path")
            if cache:
                Path(cache).unlink(missing_ok=True)
        name = self.config["cluster_name"]
        for leftover in Path("/tmp/ray").glob(f"cluster-{name}.*"):
            leftover.unlink(missing_ok=True)
        shutil.rmtree(self.control_dir(), ignore_errors=True)


@pytest.fixture
def rehearsal():
    root = Path(tempfile.mkdtemp(prefix="ganlab-up-", dir="/tmp"))
    cast = None
    try:
        cast = Rehearsal(root)
        yield cast
    finally:
        if cast is not None:
            cast.end()
        stop(root)
        sshnodes.end_all(root)  # a rehearsal that failed while it was being set up
        shutil.rmtree(root, ignore_errors=True)


def test_ray_up_submit_a_sweep_read_its_tables_ray_down(rehearsal):
    started = time.monotonic()
    shared = rehearsal.root / "shared"  # a file system every node mounts at one path (NFS)
    shared.mkdir()

    phases = {}
    up = rehearsal.ray("up", "-y", str(rehearsal.file))
    assert "Ray runtime started." in up.stdout + up.stderr
    # The head's autoscaler starts the worker over SSH after `ray up` returns.
    deadline = time.monotonic() + WORKER_JOIN_TIMEOUT_S
    while len(nodes := rehearsal.alive_nodes()) < 2:
        assert time.monotonic() < deadline, rehearsal.autoscaler_log()
        time.sleep(2)
    phases["ray up, worker joined"] = time.monotonic() - started
    print(phases)
    head = next(n for n in nodes if n.is_head_node)
    worker = next(n for n in nodes if not n.is_head_node)
    assert head.resources_total.get("CPU", 0.0) == 0.0  # no trial lands on the head
    assert worker.resources_total["CPU"] >= 1.0
    assert worker.resources_total.get("GPU", 0.0) == 0.0  # nvidia-smi lists none here
    assert worker.node_manager_address == WORKER
    # The dashboard (and its job API) listens on the head's loopback; a client needs the token.
    dashboard = rehearsal.ports["dashboard"]
    assert listening(dashboard, HEAD)

    address = f"http://{HEAD}:{dashboard}"
    job = "ganlab-rehearsal"
    submitted = rehearsal.ray(
        "job", "submit", "--address", address, "--submission-id", job, "--working-dir", ".",
        "--", "ganlab", "sweep", "sweeps/quickstart.yaml", "--smoke", "--address", "auto",
        "--storage", shared.as_uri(), timeout=JOB_TIMEOUT_S,
    )  # fmt: skip
    assert f"Job '{job}' succeeded" in submitted.stdout, submitted.stdout[-3000:]
    phases["job"] = time.monotonic() - started
    print(phases)
    status = rehearsal.ray("job", "status", "--address", address, job)
    assert f"Job '{job}' succeeded" in status.stdout
    logs = rehearsal.ray("job", "logs", "--address", address, job).stdout
    assert "best configurations (good_modes, max; median over seeds" in logs
    assert f"tables and report copied to {shared.as_uri()}/quickstart-smoke" in logs

    # The tables, read back from the shared storage the trials and the driver wrote.
    run = shared / "quickstart-smoke"
    trials = pd.read_parquet(run / "trials.parquet")
    metrics = pd.read_parquet(run / "metrics.parquet")
    assert set(trials.status) <= {"completed", "collapsed", "diverged", "pruned"}
    assert trials.trial_id.nunique() == 2 and len(trials) == 2 * 2  # smoke: 2 samples × 2 seeds
    assert set(metrics.trial_id) == set(trials.trial_id)
    node_ids = {bytes(worker.node_id).hex()}
    ran_on = set(trials.node_id) if "node_id" in trials else node_ids
    assert ran_on == node_ids  # every trial ran on the worker
    assert (run / "tune").is_dir() and (run / "report.html").stat().st_size > 10_000
    shown = subprocess.run(
        [sys.executable, "-m", "ganlab.cli", "results", f"{shared.as_uri()}/quickstart-smoke",
         "--seeds", "--columns", "trial_id,seed,status"], cwd=rehearsal.root, capture_output=True,
        text=True, timeout=rehearsal.left_s(), env={**rehearsal.env, "PYTHONPATH": str(ROOT)},
    )  # fmt: skip
    assert shown.returncode == 0, shown.stderr
    assert all(t in shown.stdout for t in trials.trial_id)

    down = rehearsal.ray("down", "-y", str(rehearsal.file))
    assert "Requested 2 nodes to shut down." in down.stdout, down.stdout
    assert "No nodes remaining." in down.stdout
    # `ray down` stops the head's Ray only (the local provider's workers keep theirs): the
    # README's `ray stop` on each worker, over SSH, as the user would.
    for worker_ip in rehearsal.config["provider"]["worker_ips"]:
        stopped = subprocess.run(
            ["ssh", "-i", str(rehearsal.key), "-o", "StrictHostKeyChecking=no", "-o",
             "UserKnownHostsFile=/dev/null", f"{sshnodes.user()}@{worker_ip}",
             "bash -ic 'ray stop'"], env=rehearsal.env, capture_output=True, text=True,
            timeout=rehearsal.left_s(),
        )  # fmt: skip
        assert stopped.returncode == 0, stopped.stderr
    deadline = time.monotonic() + WORKER_EXIT_TIMEOUT_S
    while (left := rehearsal.leftovers()) and time.monotonic() < deadline:
        time.sleep(1)
    table = {p: c for p, (_, c) in sshnodes.process_table().items() if p in left}
    assert not left, json.dumps(table, indent=1)
    for port in (rehearsal.ports["gcs"], dashboard):
        assert not listening(port)
    phases["ray down, nothing left"] = time.monotonic() - started
    print(f"rehearsal: {phases}")
    assert time.monotonic() < rehearsal.deadline
