"""Real Ray clusters for tests, started with the `ray` CLI in a private temp dir.

A cluster lives in one directory under /tmp (a short path: Ray's unix sockets live under it, and
they allow ~100 characters) holding its HOME, whose `.ray/auth_token` is the cluster's token,
and every node's Ray temp dir. Nodes run with `RAY_AUTH_MODE=token` and no dashboard, on ports
picked free. `stop` ends exactly this cluster's processes, found by its directory and GCS port
(`ray stop` would end every Ray on the machine).
"""

import contextlib
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import grpc
from ray.core.generated import gcs_service_pb2, gcs_service_pb2_grpc

START_TIMEOUT_S = 60
OBJECT_STORE_BYTES = 100 * 1024**2  # the minimum is 75 MiB; tests move little data


@dataclass(frozen=True)
class Cluster:
    root: Path  # everything of this cluster: HOME, Ray's temp dirs
    home: Path
    token: str
    node_ip: str  # the address Ray chose for the head (not loopback, where there is one)
    gcs_port: int
    raylet_port: int
    dashboard_port: int
    agent_port: int

    @property
    def address(self) -> str:
        return f"{self.node_ip}:{self.gcs_port}"

    def env(self, **extra: str) -> dict[str, str]:
        """The environment of a process that is to talk to this cluster with its token."""
        return ray_env(self.home, RAY_AUTH_MODE="token", **extra)


def ray_cli(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess:
    """The `ray` command of this Python (ray[default] installs it)."""
    cli = shutil.which("ray", path=str(Path(sys.executable).parent)) or shutil.which("ray")
    assert cli, "no `ray` command: install ray[default]"
    return subprocess.run(
        [cli, *args], env=env, capture_output=True, text=True, timeout=START_TIMEOUT_S
    )


def free_ports(n: int) -> list[int]:
    sockets = [socket.socket() for _ in range(n)]
    for s in sockets:
        s.bind(("127.0.0.1", 0))
    ports = [s.getsockname()[1] for s in sockets]
    for s in sockets:
        s.close()
    return ports


def ray_env(home: Path, **extra: str) -> dict[str, str]:
    """This machine's environment without any Ray setting, with its own HOME."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("RAY_")}
    return {**env, "HOME": str(home), **extra}


def bearer(token: str) -> list[tuple[str, str]]:
    return [("authorization", f"Bearer {token}")]


def gcs_nodes(address: str, metadata=None) -> list:
    with grpc.insecure_channel(address) as channel:
        stub = gcs_service_pb2_grpc.NodeInfoGcsServiceStub(channel)
        reply = stub.GetAllNodeInfo(
            gcs_service_pb2.GetAllNodeInfoRequest(), metadata=metadata, timeout=10
        )
    return list(reply.node_info_list)


def alive_nodes(cluster: Cluster) -> list:
    nodes = gcs_nodes(cluster.address, bearer(cluster.token))
    return [n for n in nodes if n.state == n.GcsNodeState.ALIVE]


# --- starting ---------------------------------------------------------------------------------


def new_root(prefix: str) -> tuple[Path, Path]:
    """A cluster's directory under /tmp and the HOME inside it: `(root, home)`."""
    root = Path(tempfile.mkdtemp(prefix=prefix, dir="/tmp"))
    home = root / "home"
    home.mkdir()
    return root, home


def start_head(root: Path, home: Path, *flags: str, **env: str) -> Cluster:
    """A head node on loopback (Ray may swap it for the machine's address) with a new token;
    `env`: variables of the head's processes (its workers' among them)."""
    generated = ray_cli("get-auth-token", "--generate", env=ray_env(home))
    assert generated.returncode == 0, generated.stderr
    token = generated.stdout
    gcs_port, client_port, dashboard_port, agent_port = free_ports(4)
    started = ray_cli(
        "start", "--head", "--node-ip-address=127.0.0.1", f"--port={gcs_port}",
        f"--ray-client-server-port={client_port}", "--include-dashboard=false",
        f"--dashboard-port={dashboard_port}", f"--dashboard-agent-listen-port={agent_port}",
        f"--temp-dir={root / 'head'}", "--disable-usage-stats", *flags,
        env=ray_env(home, RAY_AUTH_MODE="token", **env),
    )  # fmt: skip
    assert started.returncode == 0, started.stderr
    (node,) = gcs_nodes(f"127.0.0.1:{gcs_port}", bearer(token))
    return Cluster(root, home, token, node.node_manager_address, gcs_port,
                   node.node_manager_port, dashboard_port, agent_port)  # fmt: skip


def join(cluster: Cluster, env: dict[str, str], *flags: str) -> subprocess.CompletedProcess:
    """`ray start --address` of one more node, in a temp dir of its own under the cluster's."""
    (agent_port,) = free_ports(1)
    temp_dir = tempfile.mkdtemp(prefix="n", dir=cluster.root)
    return ray_cli(
        "start", f"--address={cluster.address}", f"--dashboard-agent-listen-port={agent_port}",
        f"--temp-dir={temp_dir}", "--disable-usage-stats", *flags, env=env,
    )  # fmt: skip


# --- the cluster's processes, found by its directory and GCS port ------------------------------


def process_table() -> dict[int, tuple[int, str]]:
    """pid: (parent pid, command line) of every live process, from /proc."""
    table = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ")
            state, parent = (entry / "stat").read_text().rsplit(")", 1)[1].split()[:2]
        except OSError:
            continue
        if state != "Z":  # a zombie has ended already
            table[int(entry.name)] = (int(parent), cmdline.decode("utf-8", "replace"))
    return table


def cluster_pids(root: Path, gcs_port: int | None = None) -> set[int]:
    """The processes of this cluster: those naming its directory (or GCS port), and their
    children (Ray's workers and agents rename themselves `ray::...`)."""
    table = process_table()
    mine, pid = set(), os.getpid()
    while pid in table and pid not in mine:  # never this test or its parents
        mine.add(pid)
        pid = table[pid][0]
    port = re.compile(rf":{gcs_port}(\D|$)" if gcs_port else r"(?!)")
    named = {p for p, (_, cmd) in table.items() if str(root) in cmd or port.search(cmd)}
    pids = {p for p in named if "ray" in table[p][1]} - mine
    while children := {p for p, (parent, _) in table.items() if parent in pids} - pids - mine:
        pids |= children
    return pids


def stop(root: Path, gcs_port: int | None = None) -> None:
    """End this cluster's processes by PID: SIGTERM, then SIGKILL for those that linger."""
    for _ in range(3):  # a raylet may start a worker while its siblings are ending
        pids = cluster_pids(root, gcs_port)
        if not pids:
            return
        for sig in (signal.SIGTERM, signal.SIGKILL):
            for pid in pids:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, sig)
            deadline = time.monotonic() + 3
            while time.monotonic() < deadline and pids & set(process_table()):
                time.sleep(0.1)
