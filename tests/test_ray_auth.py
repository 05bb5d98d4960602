"""Ray's token authentication on a real local cluster: without the cluster's token, no entry.

Ray 2.60 binds its GCS, raylet and agent ports on every interface whatever the flags say
(`ray start --node-ip-address=127.0.0.1` even swaps loopback for the machine's address), so the
shared token is what keeps other machines out. These tests start a private head node with
`RAY_AUTH_MODE=token`, the token in `$HOME/.ray/auth_token` and no dashboard, then knock on
it: raw gRPC and HTTP without, with a wrong and with the right token, `ray.init` from a client
that lacks the token, and a second node joining. The head lives in its own temp dir and ports;
teardown ends exactly its processes (`ray stop` would end every Ray on the machine).
"""

import contextlib
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path

import grpc
import pytest
from ray.core.generated import (
    gcs_service_pb2,
    gcs_service_pb2_grpc,
    node_manager_pb2,
    node_manager_pb2_grpc,
)

REFUSED = "InvalidAuthToken: Authentication token is missing or incorrect"
CLIENT_REFUSED = f"ray.exceptions.AuthenticationError: RPC error: {REFUSED}"
WRONG_TOKEN = "0" * 64
START_TIMEOUT_S = 60


@dataclass(frozen=True)
class Cluster:
    root: Path  # everything of this cluster: HOME, Ray's temp dir
    home: Path
    token: str
    node_ip: str  # the address Ray chose for the node (not loopback, where there is one)
    gcs_port: int
    raylet_port: int
    dashboard_port: int
    agent_port: int

    @property
    def address(self) -> str:
        return f"{self.node_ip}:{self.gcs_port}"


def _ray(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess:
    """The `ray` command of this Python (ray[default] installs it)."""
    cli = shutil.which("ray", path=str(Path(sys.executable).parent)) or shutil.which("ray")
    assert cli, "no `ray` command: install ray[default]"
    return subprocess.run(
        [cli, *args], env=env, capture_output=True, text=True, timeout=START_TIMEOUT_S
    )


def _free_ports(n: int) -> list[int]:
    sockets = [socket.socket() for _ in range(n)]
    for s in sockets:
        s.bind(("127.0.0.1", 0))
    ports = [s.getsockname()[1] for s in sockets]
    for s in sockets:
        s.close()
    return ports


def _env(home: Path, **extra: str) -> dict[str, str]:
    """This machine's environment without any Ray setting, with its own HOME."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("RAY_")}
    return {**env, "HOME": str(home), **extra}


def _bearer(token: str) -> list[tuple[str, str]]:
    return [("authorization", f"Bearer {token}")]


def _gcs_nodes(address: str, metadata=None) -> list:
    with grpc.insecure_channel(address) as channel:
        stub = gcs_service_pb2_grpc.NodeInfoGcsServiceStub(channel)
        reply = stub.GetAllNodeInfo(
            gcs_service_pb2.GetAllNodeInfoRequest(), metadata=metadata, timeout=10
        )
    return list(reply.node_info_list)


# --- the cluster's processes, found by its temp dir and GCS port ----------------------------


def _process_table() -> dict[int, tuple[int, str]]:
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


def _cluster_pids(root: Path, gcs_port: int) -> set[int]:
    """The processes of this cluster: those naming its temp dir or GCS port, and their children
    (Ray's workers and agents rename themselves `ray::...`)."""
    table = _process_table()
    mine, pid = set(), os.getpid()
    while pid in table and pid not in mine:  # never this test or its parents
        mine.add(pid)
        pid = table[pid][0]
    port = re.compile(rf":{gcs_port}(\D|$)")
    named = {p for p, (_, cmd) in table.items() if str(root) in cmd or port.search(cmd)}
    pids = {p for p in named if "ray" in table[p][1]} - mine
    while children := {p for p, (parent, _) in table.items() if parent in pids} - pids - mine:
        pids |= children
    return pids


def _stop(root: Path, gcs_port: int) -> None:
    for _ in range(3):  # a raylet may start a worker while its siblings are ending
        pids = _cluster_pids(root, gcs_port)
        if not pids:
            return
        for sig in (signal.SIGTERM, signal.SIGKILL):
            for pid in pids:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, sig)
            deadline = time.monotonic() + 3
            while time.monotonic() < deadline and pids & set(_process_table()):
                time.sleep(0.1)


@pytest.fixture(scope="module")
def cluster():
    # A short path: Ray's unix sockets live under it, and they allow ~100 characters.
    root = Path(tempfile.mkdtemp(prefix="ganlab-auth-", dir="/tmp"))
    home = root / "home"
    home.mkdir()
    gcs_port, client_port, dashboard_port, agent_port = _free_ports(4)
    try:
        generated = _ray("get-auth-token", "--generate", env=_env(home))
        assert generated.returncode == 0, generated.stderr
        token = generated.stdout
        started = _ray(
            "start", "--head", "--node-ip-address=127.0.0.1", f"--port={gcs_port}",
            f"--ray-client-server-port={client_port}", "--include-dashboard=false",
            f"--dashboard-port={dashboard_port}", f"--dashboard-agent-listen-port={agent_port}",
            f"--temp-dir={root / 'ray'}", "--num-cpus=1", "--disable-usage-stats",
            env=_env(home, RAY_AUTH_MODE="token"),
        )  # fmt: skip
        assert started.returncode == 0, started.stderr
        (node,) = _gcs_nodes(f"127.0.0.1:{gcs_port}", _bearer(token))
        yield Cluster(root, home, token, node.node_manager_address, gcs_port,
                      node.node_manager_port, dashboard_port, agent_port)  # fmt: skip
    finally:
        _stop(root, gcs_port)
        shutil.rmtree(root, ignore_errors=True)


def _run_client(cluster: Cluster, env: dict[str, str], address: str) -> dict:
    """`ray.init(address)` in a fresh process; returns what it saw, as JSON."""
    script = """
import json, sys, ray
try:
    ray.init(address=sys.argv[1], log_to_driver=False)
    nodes = [n for n in ray.nodes() if n["Alive"]]
    answer = ray.get(ray.remote(lambda: 6 * 7).remote())
    print(json.dumps({"connected": True, "nodes": len(nodes), "answer": answer}))
except Exception as error:
    print(json.dumps({"connected": False, "error": type(error).__name__,
                      "cause": str(error.__cause__)}))
"""
    done = subprocess.run(
        [sys.executable, "-c", script, address], env=env, capture_output=True, text=True,
        timeout=START_TIMEOUT_S, cwd=cluster.root,
    )  # fmt: skip
    assert done.stdout.strip(), done.stderr
    return json.loads(done.stdout.strip().splitlines()[-1])


# --- the token -------------------------------------------------------------------------------


def test_the_token_is_a_random_secret_in_home_ray_auth_token(cluster):
    assert re.fullmatch(r"[0-9a-f]{64}", cluster.token)
    assert (cluster.home / ".ray" / "auth_token").read_text() == cluster.token


# --- the GCS and the raylet, over gRPC ------------------------------------------------------


@pytest.mark.parametrize("metadata", [None, _bearer(WRONG_TOKEN)], ids=["no-token", "wrong-token"])
def test_the_gcs_refuses_a_client_without_the_token(cluster, metadata):
    for host in sorted({"127.0.0.1", cluster.node_ip}):
        with pytest.raises(grpc.RpcError) as refused:
            _gcs_nodes(f"{host}:{cluster.gcs_port}", metadata)
        assert refused.value.code() == grpc.StatusCode.UNAUTHENTICATED
        assert refused.value.details() == REFUSED


def test_the_gcs_answers_the_token(cluster):
    (node,) = _gcs_nodes(cluster.address, _bearer(cluster.token))
    assert node.state == node.GcsNodeState.ALIVE
    assert node.is_head_node
    assert node.resources_total["CPU"] == 1.0


def test_the_raylet_refuses_a_client_without_the_token(cluster):
    with grpc.insecure_channel(f"{cluster.node_ip}:{cluster.raylet_port}") as channel:
        stub = node_manager_pb2_grpc.NodeManagerServiceStub(channel)
        request = node_manager_pb2.GetNodeStatsRequest()
        with pytest.raises(grpc.RpcError) as refused:
            stub.GetNodeStats(request, timeout=10)
        stats = stub.GetNodeStats(request, metadata=_bearer(cluster.token), timeout=10)
    assert refused.value.code() == grpc.StatusCode.UNAUTHENTICATED
    assert refused.value.details() == REFUSED
    assert stats.num_workers >= 0


# --- HTTP: no dashboard; the node's agent wants the token -----------------------------------


def test_there_is_no_dashboard_on_any_interface(cluster):
    for host in sorted({"127.0.0.1", cluster.node_ip}):
        with pytest.raises(ConnectionRefusedError):
            socket.create_connection((host, cluster.dashboard_port), timeout=5).close()


def _agent_get(cluster: Cluster, headers: dict[str, str]) -> tuple[int, str]:
    url = f"http://{cluster.node_ip}:{cluster.agent_port}/api/job_agent/jobs/none/logs"
    try:
        with urllib.request.urlopen(urllib.request.Request(url, headers=headers), timeout=10) as r:
            return r.status, r.read().decode()
    except urllib.error.HTTPError as error:
        return error.code, error.read().decode()


def test_the_agents_http_port_refuses_a_client_without_the_token(cluster):
    assert _agent_get(cluster, {}) == (401, "Unauthorized: Missing authentication token")
    wrong = {"Authorization": f"Bearer {WRONG_TOKEN}"}
    assert _agent_get(cluster, wrong) == (403, "Forbidden: Invalid authentication token")
    status, _ = _agent_get(cluster, {"Authorization": f"Bearer {cluster.token}"})
    assert status not in (401, 403)


# --- ray.init, as a sweep's driver would connect ----------------------------------------------


@pytest.mark.parametrize(
    "settings",
    [{}, {"RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN": WRONG_TOKEN}, "token-file-only"],
    ids=["no-token", "wrong-token", "token-file-but-mode-unset"],
)
def test_ray_init_without_the_token_is_refused(cluster, tmp_path, settings):
    home = tmp_path / "client-home"
    if settings == "token-file-only":
        # An explicit address never turns token mode on by itself (only `auto` or none does):
        # the token sits in ~/.ray/auth_token, but the client does not send it.
        (home / ".ray").mkdir(parents=True)
        (home / ".ray" / "auth_token").write_text(cluster.token)
        settings = {}
    env = _env(home, RAY_gcs_server_port_wait_time_s="2", **settings)
    seen = _run_client(cluster, env, cluster.address)
    assert seen["connected"] is False
    assert seen["error"] == "ConnectionError"
    assert CLIENT_REFUSED in seen["cause"]


def test_ray_init_with_the_token_connects_and_runs_a_task(cluster, tmp_path):
    env = _env(tmp_path / "client-home", RAY_AUTH_MODE="token", RAY_AUTH_TOKEN=cluster.token)
    seen = _run_client(cluster, env, cluster.address)
    assert seen == {"connected": True, "nodes": 1, "answer": 42}


# --- a second node (what a multi-node test on one machine does) ----------------------------


def _join(cluster: Cluster, env: dict[str, str]) -> subprocess.CompletedProcess:
    (agent_port,) = _free_ports(1)
    return _ray(
        "start", f"--address={cluster.address}", "--num-cpus=1", "--num-gpus=1",
        f"--dashboard-agent-listen-port={agent_port}", "--disable-usage-stats", env=env,
    )  # fmt: skip


def test_a_node_joins_only_with_token_mode_and_the_token(cluster):
    # The token file alone is not enough: `ray start --address` needs RAY_AUTH_MODE=token.
    refused = _join(cluster, _env(cluster.home, RAY_gcs_server_port_wait_time_s="2"))
    assert refused.returncode == 1
    assert CLIENT_REFUSED in refused.stderr
    assert len(_gcs_nodes(cluster.address, _bearer(cluster.token))) == 1

    joined = _join(cluster, _env(cluster.home, RAY_AUTH_MODE="token"))
    assert joined.returncode == 0, joined.stderr
    nodes = _gcs_nodes(cluster.address, _bearer(cluster.token))
    alive = [n for n in nodes if n.state == n.GcsNodeState.ALIVE]
    assert sorted(n.resources_total.get("GPU", 0.0) for n in alive) == [0.0, 1.0]
