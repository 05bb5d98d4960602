"""Ray's token authentication on a real local cluster: without the cluster's token, no entry.

Ray 2.60 binds its GCS, raylet and agent ports on every interface whatever the flags say
(`ray start --node-ip-address=127.0.0.1` even swaps loopback for the machine's address), so the
shared token is what keeps other machines out. These tests start a private head node with
`RAY_AUTH_MODE=token`, the token in `$HOME/.ray/auth_token` and no dashboard, then knock on
it: raw gRPC and HTTP without, with a wrong and with the right token, `ray.init` from a client
that lacks the token, and a second node joining. The head lives in its own temp dir and ports;
teardown ends exactly its processes (`ray stop` would end every Ray on the machine).
"""

import json
import re
import shutil
import socket
import subprocess
import sys
import urllib.error
import urllib.request

import grpc
import pytest
from ray.core.generated import node_manager_pb2, node_manager_pb2_grpc
from raycluster import (
    OBJECT_STORE_BYTES,
    START_TIMEOUT_S,
    Cluster,
    bearer,
    gcs_nodes,
    join,
    new_root,
    ray_env,
    start_head,
    stop,
)

REFUSED = "InvalidAuthToken: Authentication token is missing or incorrect"
CLIENT_REFUSED = f"ray.exceptions.AuthenticationError: RPC error: {REFUSED}"
WRONG_TOKEN = "0" * 64


@pytest.fixture(scope="module")
def cluster():
    root, home = new_root("ganlab-auth-")
    try:
        yield start_head(root, home, "--num-cpus=1", f"--object-store-memory={OBJECT_STORE_BYTES}")
    finally:
        stop(root)
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


@pytest.mark.parametrize("metadata", [None, bearer(WRONG_TOKEN)], ids=["no-token", "wrong-token"])
def test_the_gcs_refuses_a_client_without_the_token(cluster, metadata):
    for host in sorted({"127.0.0.1", cluster.node_ip}):
        with pytest.raises(grpc.RpcError) as refused:
            gcs_nodes(f"{host}:{cluster.gcs_port}", metadata)
        assert refused.value.code() == grpc.StatusCode.UNAUTHENTICATED
        assert refused.value.details() == REFUSED


def test_the_gcs_answers_the_token(cluster):
    (node,) = gcs_nodes(cluster.address, bearer(cluster.token))
    assert node.state == node.GcsNodeState.ALIVE
    assert node.is_head_node
    assert node.resources_total["CPU"] == 1.0


def test_the_raylet_refuses_a_client_without_the_token(cluster):
    with grpc.insecure_channel(f"{cluster.node_ip}:{cluster.raylet_port}") as channel:
        stub = node_manager_pb2_grpc.NodeManagerServiceStub(channel)
        request = node_manager_pb2.GetNodeStatsRequest()
        with pytest.raises(grpc.RpcError) as refused:
            stub.GetNodeStats(request, timeout=10)
        stats = stub.GetNodeStats(request, metadata=bearer(cluster.token), timeout=10)
    assert refused.value.code() == grpc.StatusCode.UNAUTHENTICATED
    assert refused.value.details() == REFUSED
    # The answer given to the token is this node's own: the object store it was started with.
    assert stats.store_stats.object_store_bytes_avail == OBJECT_STORE_BYTES


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
    env = ray_env(home, RAY_gcs_server_port_wait_time_s="2", **settings)
    seen = _run_client(cluster, env, cluster.address)
    assert seen["connected"] is False
    assert seen["error"] == "ConnectionError"
    assert CLIENT_REFUSED in seen["cause"]


def test_ray_init_with_the_token_connects_and_runs_a_task(cluster, tmp_path):
    env = ray_env(tmp_path / "client-home", RAY_AUTH_MODE="token", RAY_AUTH_TOKEN=cluster.token)
    seen = _run_client(cluster, env, cluster.address)
    assert seen == {"connected": True, "nodes": 1, "answer": 42}


# --- a second node (what a multi-node test on one machine does) ----------------------------


def _join(cluster: Cluster, env: dict[str, str]) -> subprocess.CompletedProcess:
    return join(cluster, env, "--num-cpus=1", "--num-gpus=1")


def test_a_node_joins_only_with_token_mode_and_the_token(cluster):
    # The token file alone is not enough: `ray start --address` needs RAY_AUTH_MODE=token.
    refused = _join(cluster, ray_env(cluster.home, RAY_gcs_server_port_wait_time_s="2"))
    assert refused.returncode == 1
    assert CLIENT_REFUSED in refused.stderr
    assert len(gcs_nodes(cluster.address, bearer(cluster.token))) == 1

    joined = _join(cluster, ray_env(cluster.home, RAY_AUTH_MODE="token"))
    assert joined.returncode == 0, joined.stderr
    nodes = gcs_nodes(cluster.address, bearer(cluster.token))
    alive = [n for n in nodes if n.state == n.GcsNodeState.ALIVE]
    assert sorted(n.resources_total.get("GPU", 0.0) for n in alive) == [0.0, 1.0]
