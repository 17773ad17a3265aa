import os
import subprocess
import sys

import pytest

from raysweep.sweep.local_cluster import up
from tests.conftest import ROOT


@pytest.fixture(scope="package")
def cluster(tmp_path_factory):
    """One real multi-node Ray cluster for every test here: a head and two worker nodes (1 CPU and a
    `worker` resource each), token auth on, on 127.0.0.1; stopped by its own processes afterwards."""
    c = up(str(tmp_path_factory.mktemp("cluster")), workers=2, cpus_per_node=1)
    yield c
    c.down()


def cli_on(cluster, *args, timeout=300, wait=True, env=None):
    """`raysweep ARGS` as a client of the cluster (its address and token in the environment)."""
    cmd = [sys.executable, "-m", "raysweep", *map(str, args)]
    env = {**os.environ, **cluster.env(), **(env or {})}
    if not wait:
        return subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    return subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=timeout)


def worker_node_ids(cluster) -> set:
    return {n["NodeID"] for n in cluster.alive_nodes() if "worker" in n["Resources"]}
