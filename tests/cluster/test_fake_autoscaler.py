"""The autoscaler path: Ray's fake multi-node provider launches the worker nodes that raysweep's trials
are placed on (the config raysweep ships for it passes Ray's own schema)."""
import json

import yaml
from ray.autoscaler._private.util import validate_config

from raysweep.sweep.local_cluster import FAKE_CONFIG, up
from tests.support import cli_on, off_loopback


def test_fake_cluster_config_passes_rays_schema():
    config = yaml.safe_load(open(FAKE_CONFIG))
    validate_config(config)  # raises on unknown keys, bad node types, min > max workers
    assert config["provider"]["type"] == "fake_multinode"
    assert config["available_node_types"]["ray.worker.cpu"]["resources"]["worker"] == 1


def test_autoscaled_nodes_run_the_trials(tmp_path):
    cluster = up(str(tmp_path / "fake"), workers=0, fake=True)
    try:
        workers = {n["NodeID"] for n in cluster.alive_nodes() if "worker" in n["Resources"]}
        # started by the autoscaler, not by us (min_workers 2; on a loaded machine it has launched a
        # third while a slow node registered)
        assert len(workers) >= 2
        out = cli_on(cluster, "sweep", "search_spaces/digits_mlp.yaml", "--set", "search.num_samples=2", "--set",
                     "stopping.max_epochs=2", "--set", "resources={cpus_per_worker: 0.5, custom: {worker: 0.5}}",
                     "--runs-dir", tmp_path / "runs")
        assert out.returncode == 0, out.stdout[-2000:] + out.stderr[-2000:]
        trials = json.loads((tmp_path / "runs/ray/digits_mlp-sweep/results.json").read_text())["trials"]
        assert [t["status"] for t in trials] == ["completed"] * 2
        # a trial whose 3 ranks need a worker node each: refused by the 2 nodes there are, but the
        # autoscaler may add 2 more, so it runs once the autoscaler has launched a third
        out = cli_on(cluster, "sweep", "search_spaces/digits_mlp.yaml", "--set", "search.num_samples=1", "--set",
                     "stopping.max_epochs=2", "--set", "parameters.batch_size=[96]", "--set",
                     "resources={workers_per_trial: 3, cpus_per_worker: 0.25, custom: {worker: 0.25}, "
                     "placement: strict_spread}", "--runs-dir", tmp_path / "runs3")
        assert out.returncode == 0, out.stdout[-2000:] + out.stderr[-2000:]
        [trial] = json.loads((tmp_path / "runs3/ray/digits_mlp-sweep/results.json").read_text())["trials"]
        assert trial["status"] == "completed" and len(set(trial["metrics"]["ddp_nodes"].split(","))) == 3
        assert len([n for n in cluster.alive_nodes() if "worker" in n["Resources"]]) >= 3
        listening, off = off_loopback(cluster.pids())  # the autoscaler's nodes too
        assert [name for _, name in listening].count("raylet") >= 3 and not off, off
    finally:
        cluster.down()
    assert not cluster.pids()  # its autoscaler's nodes went with it
