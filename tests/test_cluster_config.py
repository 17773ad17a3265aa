"""cluster.yaml is a config `ray up` accepts (Ray's own schema check; no cloud SDK needed) that keeps
token auth on, shared storage and MLflow wired to every node, and no port open to the world."""
import re

import yaml
from ray.autoscaler._private.util import prepare_config, validate_config

from raysweep.sweep.local_cluster import FAKE_CONFIG
from tests.support import ROOT


def load():
    return prepare_config(yaml.safe_load((ROOT / "cluster.yaml").read_text()))


def test_cluster_yaml_passes_rays_validation():
    cfg = load()
    validate_config(cfg)  # raises on unknown keys, bad node types, min > max workers
    assert cfg["head_node_type"] == "head" and cfg["available_node_types"]["gpu_worker"]["max_workers"] == 8
    assert any("TORCH_SPEC" in c and "s3" in c for c in cfg["setup_commands"])  # GPU torch, boto3 for artifacts


def test_no_port_is_open_to_the_world():
    cfg = load()
    rules = cfg["provider"]["security_group"]["IpPermissions"]
    assert [(r["FromPort"], r["ToPort"]) for r in rules] == [(22, 22)]  # SSH only; Ray, MLflow, dashboard inside
    cidrs = [ip["CidrIp"] for r in rules for ip in r["IpRanges"]]
    assert cidrs and all(c != "0.0.0.0/0" and c.endswith("/32") for c in cidrs)
    for path in ROOT / "cluster.yaml", FAKE_CONFIG:  # every value, commands included; comments aside
        text = yaml.safe_dump(yaml.safe_load(open(path)))
        assert "0.0.0.0" not in text and "::/0" not in text


def test_every_node_starts_ray_with_the_token_storage_and_mlflow():
    cfg = load()
    assert cfg["file_mounts"]["/home/ubuntu/.ray/auth_token"] == "~/.ray/auth_token"
    head, worker = " ".join(cfg["head_start_ray_commands"]), " ".join(cfg["worker_start_ray_commands"])
    for commands in (head, worker):
        assert "RAY_AUTH_MODE=token" in commands
        assert re.search(r"RAYSWEEP_STORAGE_PATH=s3://\S+", commands)
        assert "MLFLOW_TRACKING_URI=http://" in commands
    assert "--dashboard-host=127.0.0.1" in head  # reached through `ray dashboard` (SSH), never directly
    server = re.search(r"mlflow server (.*?)>", head).group(1)
    assert "--host $HEAD_IP" in server and "--artifacts-destination s3://" in server  # the private address
    # behind MLflow's basic auth, its user made outside the repo (make cluster-credentials) and mounted
    assert "--app-name basic-auth" in server and "MLFLOW_AUTH_CONFIG_PATH=~/.raysweep/mlflow_auth.ini" in head
    assert cfg["file_mounts"]["/home/ubuntu/.raysweep"] == "~/.raysweep" and ". ~/.raysweep/mlflow.env" in head
    assert "auth" in " ".join(cfg["setup_commands"])  # mlflow[auth] installed on the nodes
    assert not re.search(r"(?i)password\s*[:=]", (ROOT / "cluster.yaml").read_text())
