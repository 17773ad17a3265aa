"""Shared storage for real: an S3-compatible server (moto's) on 127.0.0.1, the multi-node cluster's
trials writing their checkpoints there, a PBT sweep killed and resumed from it."""
import json
import os
import signal
import subprocess
import sys
import time

import boto3
import pytest
from mlflow.tracking import MlflowClient

from raysweep.sweep.local_cluster import free_port
from tests.support import assert_epoch_steps, cli_on

PBT = ["search_spaces/digits_pbt.yaml", "--set", "storage_path=s3://sweeps/pbt", "--set", "stopping.max_epochs=10",
       "--set", "search.num_samples=4", "--set", "resources.cpus_per_worker=0.25", "--set", "fixed.batch_size=16"]


@pytest.fixture(scope="module")
def s3():
    """moto's S3 server on a free loopback port, with one bucket; the environment a client needs."""
    port = free_port()
    server = subprocess.Popen([os.path.join(os.path.dirname(sys.executable), "moto_server"), "-H", "127.0.0.1",
                               "-p", str(port)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    env = {"AWS_ENDPOINT_URL": f"http://127.0.0.1:{port}", "AWS_ACCESS_KEY_ID": "testing",
           "AWS_SECRET_ACCESS_KEY": "testing", "AWS_DEFAULT_REGION": "us-east-1"}
    client = boto3.client("s3", endpoint_url=env["AWS_ENDPOINT_URL"], aws_access_key_id="testing",
                          aws_secret_access_key="testing", region_name="us-east-1")
    deadline = time.monotonic() + 30
    while True:
        try:
            client.create_bucket(Bucket="sweeps")
            break
        except Exception:
            assert time.monotonic() < deadline, "moto_server did not start"
            time.sleep(0.3)
    yield env, client
    server.terminate()
    server.wait(timeout=10)


def keys(client, prefix):
    pages = client.get_paginator("list_objects_v2").paginate(Bucket="sweeps", Prefix=prefix)
    return [o["Key"] for page in pages for o in page.get("Contents", [])]


def read(client, key) -> str:
    return client.get_object(Bucket="sweeps", Key=key)["Body"].read().decode()


def test_a_bucket_that_does_not_exist_fails_before_any_trial(cluster, s3, tmp_path):
    env, _ = s3
    out = cli_on(cluster, "sweep", *PBT, "--set", "storage_path=s3://nobucket/x", "--runs-dir", tmp_path, env=env,
                 timeout=120)
    assert out.returncode == 2
    [line] = out.stderr.strip().splitlines()
    assert line.startswith("search_spaces/digits_pbt.yaml: storage_path: cannot write results to s3://nobucket/x (")
    assert "bucket" in line and "choose another storage_path" in line
    [log] = (tmp_path / "logs").iterdir()
    assert "ray.init" not in log.read_text() and not (tmp_path / "ray").exists()  # refused before Ray was touched


def test_pbt_on_s3_storage_killed_and_resumed(cluster, s3, tmp_path):
    env, client = s3
    driver = cli_on(cluster, "sweep", *PBT, "--runs-dir", tmp_path, env=env, wait=False)
    deadline = time.monotonic() + 300
    while True:  # kill the driver once a trial has 4 epochs in the bucket (2 checkpoints, 1 perturbation)
        logs = [read(client, k) for k in keys(client, "pbt/digits_pbt-sweep/") if k.endswith("/result.json")]
        if any(len(log.splitlines()) >= 4 for log in logs):
            break
        assert driver.poll() is None and time.monotonic() < deadline, driver.stdout.read()
        time.sleep(0.5)
    os.kill(driver.pid, signal.SIGKILL)
    driver.wait()
    assert not keys(client, "pbt/digits_pbt-sweep/results.json")

    resumed = cli_on(cluster, "sweep", *PBT, "--runs-dir", tmp_path, "--resume", env=env, timeout=600)
    assert resumed.returncode == 0, resumed.stdout[-3000:] + resumed.stderr[-3000:]
    results = json.loads(read(client, "pbt/digits_pbt-sweep/results.json"))
    assert len(results["trials"]) == 4 and all(t["epochs"] == 10 for t in results["trials"]), results["trials"]
    assert all(t["checkpoint"].startswith("s3://sweeps/pbt/digits_pbt-sweep/") for t in results["trials"])
    assert any(t["resumed_at"] for t in results["trials"])  # restored from its checkpoint in the bucket
    assert any("/checkpoint_" in k for k in keys(client, "pbt/digits_pbt-sweep/"))
    assert not (tmp_path / "ray").exists()  # nothing of the sweep on the driver's disk but MLflow's database

    mlflow = MlflowClient(f"sqlite:///{tmp_path}/mlflow.db")
    experiment = mlflow.get_experiment_by_name("digits_pbt")
    assert experiment.artifact_location == "s3://sweeps/pbt/mlartifacts"
    runs = [r for r in mlflow.search_runs([experiment.experiment_id]) if "raysweep.trial_id" in r.data.tags]
    assert sorted(r.data.tags["raysweep.trial_id"] for r in runs) == sorted(t["trial_id"] for t in results["trials"])
    for r in runs:
        assert_epoch_steps(mlflow, r, "val_accuracy", 10)
    assert any(k.endswith("/results.json") for k in keys(client, "pbt/mlartifacts/"))  # the stage run's artifact


def test_a_pipeline_resumes_from_its_state_in_the_bucket_on_another_driver(cluster, s3, tmp_path):
    env, client = s3
    args = ["run", "search_spaces/digits_mlp.yaml", "--set", "storage_path=s3://sweeps/pipe", "--set",
            "stages.lr_range_test.num_steps=20", "--until", "lr_range_test"]
    first = cli_on(cluster, *args, "--runs-dir", tmp_path / "a", env=env)
    assert first.returncode == 0, first.stdout[-2000:] + first.stderr[-2000:]
    state = json.loads(read(client, "pipe/pipelines/digits_mlp/state.json"))
    assert list(state["done"]) == ["lr_range_test"]
    assert {"pipe/pipelines/digits_mlp/lr_range.json", "pipe/pipelines/digits_mlp/lr_range.png"} <= set(
        keys(client, "pipe/pipelines/"))
    second = cli_on(cluster, *args, "--runs-dir", tmp_path / "b", env=env)  # a fresh machine: nothing local
    assert second.returncode == 0, second.stdout[-2000:] + second.stderr[-2000:]
    assert "[lr_range_test]" not in second.stdout and "finished lr_range_test" in second.stdout
    assert json.loads((tmp_path / "b/pipelines/digits_mlp/state.json").read_text())["id"] == state["id"]
