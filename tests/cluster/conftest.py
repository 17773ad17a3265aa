
import pytest

from raysweep.sweep.local_cluster import up


@pytest.fixture(scope="package")
def cluster(tmp_path_factory):
    """One real multi-node Ray cluster for every test here: a head and two worker nodes (1 CPU and a
    `worker` resource each), token auth on, on 127.0.0.1; stopped by its own processes afterwards."""
    c = up(str(tmp_path_factory.mktemp("cluster")), workers=2, cpus_per_node=1)
    yield c
    c.down()

