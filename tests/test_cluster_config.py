"""cluster.yaml, checked offline by Ray's own cluster-launcher validation.

`ray up` runs `prepare_config` (merges Ray's AWS defaults.yaml: no cloud call), asks AWS for
the instance types' resources, runs `validate_config` (ray-schema.json, then a few cross-field
checks), and only then `bootstrap_config` (IAM, subnets, key pairs: the cloud). These tests run
the two offline steps, with the network closed and no AWS credentials, on the file and on
broken copies of it.
"""

import copy
import json
import re
import socket
import tomllib
from pathlib import Path

import click
import jsonschema
import pytest
import ray.autoscaler
import yaml
from ray.autoscaler._private.util import prepare_config, validate_config

ROOT = Path(__file__).resolve().parents[1]
CLUSTER_YAML = ROOT / "cluster.yaml"
SCHEMA = Path(ray.autoscaler.__file__).parent / "ray-schema.json"


@pytest.fixture(autouse=True)
def offline(monkeypatch, tmp_path):
    """No network and no AWS credentials: the checks must not need the cloud."""
    for name in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "AWS_PROFILE"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "no-aws-config"))
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "no-aws-credentials"))

    def no_network(*args, **kwargs):
        raise AssertionError("cluster.yaml's validation tried to reach the network")

    monkeypatch.setattr(socket.socket, "connect", no_network)
    monkeypatch.setattr(socket, "create_connection", no_network)


def load() -> dict:
    return yaml.safe_load(CLUSTER_YAML.read_text())


def ray_validate(config: dict) -> dict:
    """What `ray up` checks before it contacts AWS; returns the prepared config."""
    prepared = prepare_config(copy.deepcopy(config))
    validate_config(prepared)
    return prepared


def test_cluster_yaml_passes_rays_validation():
    prepared = ray_validate(load())
    jsonschema.validate(prepared, json.loads(SCHEMA.read_text()))  # the same schema, directly
    assert prepared["provider"]["type"] == "aws"
    assert prepared["head_node_type"] == "head"
    head = prepared["available_node_types"]["head"]
    gpu = prepared["available_node_types"]["gpu_worker"]
    assert head["resources"] == {"CPU": 0}  # trials never land on the head
    assert head["max_workers"] == 0  # filled in by prepare_config
    assert gpu["resources"] == {"CPU": 8, "GPU": 1}
    assert (gpu["min_workers"], gpu["max_workers"], prepared["max_workers"]) == (0, 8, 8)
    assert gpu["node_config"]["InstanceType"] == "g5.2xlarge"
    assert gpu["node_config"]["InstanceMarketOptions"] == {"MarketType": "spot"}


def test_the_gpu_workers_are_the_whole_budget():
    # Ray checks min_workers only against the global max_workers (see below): with one worker
    # type whose max equals the global max, a min above that max is caught.
    config = load()
    worker_types = [t for t in config["available_node_types"] if t != config["head_node_type"]]
    assert worker_types == ["gpu_worker"]
    assert config["available_node_types"]["gpu_worker"]["max_workers"] == config["max_workers"]


def test_the_workers_can_fit_the_example_sweeps():
    gpu = load()["available_node_types"]["gpu_worker"]["resources"]
    for sweep, per_card in (("mnist_lucic", 4), ("cifar10_lucic", 1)):
        trial = yaml.safe_load((ROOT / "sweeps" / f"{sweep}.yaml").read_text())["resources"]
        fits = min(gpu["CPU"] // trial["cpu"], gpu["GPU"] / trial["gpu"])
        assert fits == per_card, sweep


# --- each broken copy is refused by Ray itself ----------------------------------------------


def misspell_top_level_key(c):
    c["max_worker"] = c.pop("max_workers")


def misspell_node_type_key(c):
    gpu = c["available_node_types"]["gpu_worker"]
    gpu["min_worker"] = gpu.pop("min_workers")


def min_workers_above_max_workers(c):
    c["available_node_types"]["gpu_worker"]["min_workers"] = 9


def gpu_count_as_a_string(c):
    c["available_node_types"]["gpu_worker"]["resources"]["GPU"] = "1"


def unknown_head_node_type(c):
    c["head_node_type"] = "ray.head.default"


@pytest.mark.parametrize(
    ("mutate", "error", "message"),
    [
        pytest.param(misspell_top_level_key, jsonschema.ValidationError,
                     "Additional properties are not allowed ('max_worker' was unexpected)",
                     id="misspelt-top-level-key"),
        pytest.param(misspell_node_type_key, jsonschema.ValidationError,
                     "Additional properties are not allowed ('min_worker' was unexpected)",
                     id="misspelt-node-type-key"),
        pytest.param(min_workers_above_max_workers, ValueError,
                     "The specified global `max_workers` is smaller than the sum of "
                     "`min_workers` of all the available node types.",
                     id="min-workers-above-max-workers"),
        pytest.param(gpu_count_as_a_string, jsonschema.ValidationError,
                     "'1' is not of type 'integer'", id="gpu-count-as-a-string"),
        pytest.param(unknown_head_node_type, ValueError,
                     "`head_node_type` must be one of `available_node_types`.",
                     id="unknown-head-node-type"),
    ],
)  # fmt: skip
def test_ray_refuses_a_broken_copy(mutate, error, message):
    config = load()
    mutate(config)
    with pytest.raises(error) as refused:
        ray_validate(config)
    assert type(refused.value) is error
    said = refused.value.message if error is jsonschema.ValidationError else str(refused.value)
    assert said == message


def test_what_ray_does_not_check():
    """Gaps in Ray's validation, pinned so that a change in Ray shows up here: a node type's
    min_workers above its own max_workers (when the global max allows it; the autoscaler then
    keeps min(min, max)), and misspelt keys inside `provider` and `node_config`, which the
    schema leaves open (they fail later, against AWS)."""
    config = load()
    config["max_workers"] = 16
    config["available_node_types"]["gpu_worker"]["min_workers"] = 9
    config["provider"]["regoin"] = config["provider"].pop("region")
    config["available_node_types"]["gpu_worker"]["node_config"]["InstanceTyp"] = "g5.2xlarge"
    ray_validate(config)


# --- what the file sets up on the nodes -------------------------------------------------------


def test_every_node_starts_ray_with_token_authentication():
    config = load()
    for key in ("head_start_ray_commands", "worker_start_ray_commands"):
        (start,) = [c for c in config[key] if "ray start" in c]
        assert start.startswith("export RAY_AUTH_MODE=token;"), key
    assert "--dashboard-host=127.0.0.1" in config["head_start_ray_commands"][-1]
    assert config["file_mounts"]["/home/ubuntu/.ray/auth_token"] == "~/.ray/auth_token"
    assert config["initialization_commands"] == [
        "grep -q RAY_AUTH_MODE ~/.bashrc || echo 'export RAY_AUTH_MODE=token' >> ~/.bashrc"
    ]
    assert "disabled" not in CLUSTER_YAML.read_text()


def test_the_nodes_install_the_project_with_its_pins():
    config = load()
    assert config["file_mounts"]["/home/ubuntu/ganlab"] == "."
    (head_install,) = config["head_setup_commands"]
    assert head_install.startswith('cd ~/ganlab && pip install -e ".[cluster]"')
    assert config["worker_setup_commands"] == ["cd ~/ganlab && pip install -e ."]
    assert "--python 3.11" in " ".join(config["setup_commands"])
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    pins = {"torch==2.14.1", "torchvision==0.29.1", "ray[tune,default]==2.60.0", "optuna==5.0.0"}
    assert pins <= set(project["dependencies"])
    assert project["optional-dependencies"]["cluster"] == ["boto3"]


def test_no_credentials_in_the_file():
    text = CLUSTER_YAML.read_text()
    assert not re.search(r"\b(AKIA|ASIA)[0-9A-Z]{16}\b", text)  # AWS access key ids
    assert not re.search(r"(?i)aws_secret_access_key|aws_session_token|ssh_private_key", text)
    assert not re.search(r"(?<!sha256:)\b[0-9a-f]{64}\b", text)  # a Ray token (not a checksum)


# --- what the file keeps out ------------------------------------------------------------------


def test_ssh_is_let_in_only_from_the_users_cidr():
    """Ray's own security group lets SSH in from anywhere; with a group of the user's on every
    node type, Ray makes none (its own code returns before it asks AWS for anything)."""
    from ray.autoscaler._private.aws import config as aws

    assert aws._create_default_ssh_inbound_rules()[0]["IpRanges"] == [{"CidrIp": "0.0.0.0/0"}]
    prepared = ray_validate(load())
    groups = {name: t["node_config"]["SecurityGroupIds"]
              for name, t in prepared["available_node_types"].items()}  # fmt: skip
    assert groups == {"head": ["sg-CHANGE-ME"], "gpu_worker": ["sg-CHANGE-ME"]}
    assert "security_group" not in prepared["provider"]
    assert aws._configure_security_group(copy.deepcopy(prepared)) == prepared  # no AWS call
    readme = (ROOT / "README.md").read_text()
    assert re.search(r"authorize-security-group-ingress .*--port 22 --cidr \d+\.\d+\.\d+\.\d+/32",
                     readme)  # fmt: skip
    assert "0.0.0.0/0" not in readme + CLUSTER_YAML.read_text()


def test_workers_role_reaches_only_the_sweeps_bucket():
    worker = load()["available_node_types"]["gpu_worker"]["node_config"]
    assert worker["IamInstanceProfile"] == {"Name": "ganlab-worker"}  # not the head's role
    policy = json.loads((ROOT / "docs" / "aws" / "worker-policy.json").read_text())
    granted = [(action, s["Resource"]) for s in policy["Statement"] for action in
               ([s["Action"]] if isinstance(s["Action"], str) else s["Action"])]  # fmt: skip
    assert {s["Effect"] for s in policy["Statement"]} == {"Allow"}
    assert all(action.startswith("s3:") and "*" not in action for action, _ in granted)
    resources = {resource for _, resource in granted}
    assert resources == {"arn:aws:s3:::my-bucket", "arn:aws:s3:::my-bucket/ganlab-runs/*"}
    objects = {a for a, r in granted if r.endswith("/*")}
    assert objects == {"s3:GetObject", "s3:PutObject", "s3:DeleteObject",
                       "s3:AbortMultipartUpload", "s3:ListMultipartUploadParts"}  # fmt: skip
    passing = json.loads((ROOT / "docs" / "aws" / "head-pass-role.json").read_text())
    (statement,) = passing["Statement"]
    assert (statement["Action"], statement["Resource"]) == (
        "iam:PassRole", "arn:aws:iam::*:role/ganlab-worker")  # fmt: skip
    readme = (ROOT / "README.md").read_text()
    for command in ("--policy-document file://docs/aws/worker-policy.json",
                    "--instance-profile-name ganlab-worker --role-name ganlab-worker",
                    "--policy-document file://docs/aws/head-pass-role.json"):  # fmt: skip
        assert command in readme


def test_uv_is_installed_from_a_pinned_checksum():
    (install,) = [c for c in load()["setup_commands"] if "uv==" in c]
    pin = re.search(r'"uv==([0-9.]+) --hash=sha256:([0-9a-f]{64})"', install)
    assert pin and pin[1] == "0.13.8"
    assert "--require-hashes" in install and "--only-binary=:all:" in install
    assert "| sh" not in install and "curl" not in install
    assert (
        "install -D -m 755 /tmp/uv-unpacked/uv-0.13.8.data/scripts/uv ~/.local/bin/uv" in install
    )


# --- cluster-local.yaml: the same cluster on machines of your own ------------------------------

CLUSTER_LOCAL = ROOT / "cluster-local.yaml"


def load_local() -> dict:
    return yaml.safe_load(CLUSTER_LOCAL.read_text())


def test_cluster_local_yaml_passes_rays_validation():
    prepared = ray_validate(load_local())
    jsonschema.validate(prepared, json.loads(SCHEMA.read_text()))
    assert prepared["provider"] == {"type": "local", "head_ip": "192.0.2.10",
                                    "worker_ips": ["192.0.2.11", "192.0.2.12"]}  # fmt: skip
    # The local provider has one node type for every machine; every worker address is used.
    (node_type,) = prepared["available_node_types"].values()
    counts = (node_type["min_workers"], node_type["max_workers"], prepared["max_workers"])
    assert counts == (2, 2, 2)
    assert prepared["auth"] == {"ssh_user": "ubuntu", "ssh_private_key": "~/.ssh/id_ed25519"}


def test_cluster_local_yaml_without_its_addresses_is_refused():
    config = load_local()
    del config["provider"]["worker_ips"]
    with pytest.raises(click.ClickException) as refused:  # Ray's cli_logger.abort
        ray_validate(config)
    assert refused.value.message == ("Please supply a `head_ip` and list of `worker_ips`. "
                                     "Alternatively, supply a `coordinator_address`.")  # fmt: skip


def test_both_files_install_the_nodes_the_same_way():
    aws, local = load(), load_local()
    for key in ("setup_commands", "head_setup_commands", "worker_setup_commands",
                "initialization_commands", "rsync_exclude", "rsync_filter"):  # fmt: skip
        assert local[key] == aws[key], key
    assert local["file_mounts"] == {"~/ganlab": ".", "~/.ray/auth_token": "~/.ray/auth_token",
                                    "~/data": "./data"}  # fmt: skip


def test_every_on_prem_node_starts_ray_with_token_auth_the_dashboard_on_loopback():
    config = load_local()
    (head,) = [c for c in config["head_start_ray_commands"] if "ray start" in c]
    (worker,) = [c for c in config["worker_start_ray_commands"] if "ray start" in c]
    for command in (head, worker):
        assert command.startswith("export RAY_AUTH_MODE=token")
    assert "--dashboard-host=127.0.0.1" in head
    assert "--num-cpus=0" in head  # trials never land on the head
    assert "RAY_enable_autoscaler_v2=0" in head  # v2 counts the head as a worker (README)
    assert "--num-gpus=$(nvidia-smi --list-gpus 2>/dev/null | wc -l)" in worker
    assert "disabled" not in CLUSTER_LOCAL.read_text()


def test_no_credentials_in_the_on_prem_file():
    text = CLUSTER_LOCAL.read_text()
    assert "BEGIN OPENSSH PRIVATE KEY" not in text and "PRIVATE KEY-----" not in text
    assert not re.search(r"\b(AKIA|ASIA)[0-9A-Z]{16}\b", text)
    assert not re.search(r"(?i)aws_secret_access_key|aws_session_token|password", text)
    assert not re.search(r"(?<!sha256:)\b[0-9a-f]{64}\b", text)
