"""raysweep on a real multi-node Ray cluster on this machine: DDP across nodes, a lost node."""
import json
import time

import pytest
from mlflow.tracking import MlflowClient

from raysweep.train import Run, train
from tests.support import cli_on, worker_node_ids


def grid_spec(name, task, parameters, fixed, epochs, resources) -> str:
    return (f"name: {name}\ntask: {task}\nmetric: {{name: val_loss, mode: min}}\nsearch: {{method: grid}}\n"
            f"parameters:\n  {parameters}\nfixed: {fixed}\nstopping: {{max_epochs: {epochs}}}\nresources: {resources}\n")


DDP_SPEC = grid_spec("xnode", "digits_mlp", "lr: {values: [0.05]}",
                     "{optimizer: sgd, momentum: 0.9, batch_size: 98, dropout: 0.0}", 2,
                     "{workers_per_trial: 2, cpus_per_worker: 0.5, cpus_per_trial: 0.25, custom: {worker: 0.5}, "
                     "placement: strict_spread}")

def test_ddp_workers_on_two_nodes_match_one_process(cluster, write_spec, tmp_path):
    out = cli_on(cluster, "sweep", write_spec(DDP_SPEC), "--runs-dir", tmp_path / "runs")
    assert out.returncode == 0, out.stdout + out.stderr
    [trial] = json.loads((tmp_path / "runs/ray/xnode-sweep/results.json").read_text())["trials"]
    nodes = trial["metrics"]["ddp_nodes"].split(",")
    assert len(set(nodes)) == 2 and set(nodes) <= worker_node_ids(cluster)  # one rank on each worker node
    single = []
    train({"optimizer": "sgd", "lr": 0.05, "momentum": 0.9, "batch_size": 98, "dropout": 0.0},
          Run(task="digits_mlp", epochs=2), lambda m, d: single.append(m))
    assert trial["metrics"]["train_loss"] == pytest.approx(single[-1]["train_loss"], rel=1e-5)
    assert trial["metrics"]["val_loss"] == pytest.approx(single[-1]["val_loss"], rel=1e-5)
    assert trial["metrics"]["ddp_weight_spread"] == 0.0


LOSS_SPEC = grid_spec("nodeloss", "char_lm", "seed: {values: [0, 1, 2, 3]}",
                      "{model_dim: 32, num_heads: 2, num_layers: 1, seq_len: 32, steps_per_epoch: 60, batch_size: 16, "
                      "lr: 0.003, checkpoint_every: 1}", 8, "{cpus_per_worker: 0.5, custom: {worker: 0.5}}")

# a user's Ray Train function (no raysweep import) that checkpoints every epoch and reports where it began
FUNCTION = """
import json, os, tempfile, time
import ray.train

def train_fn(config):
    start, checkpoint = 0, ray.train.get_checkpoint()
    if checkpoint:
        with checkpoint.as_directory() as d:
            start = json.load(open(os.path.join(d, "state.json")))["epoch"]
    for epoch in range(start, 100):
        time.sleep(config["sleep"])
        with tempfile.TemporaryDirectory() as d:
            json.dump({"epoch": epoch + 1}, open(os.path.join(d, "state.json"), "w"))
            ray.train.report({"val_loss": 1.0 / (epoch + 1), "began_at": start},
                             checkpoint=ray.train.Checkpoint.from_directory(d))
"""
LOSS_SPECS = {"task": LOSS_SPEC,
              "function": grid_spec("nodeloss", "user_train:train_fn", "seed: {values: [0, 1, 2, 3]}", "{sleep: 0.5}", 8,
                                    "{cpus_per_worker: 0.5, custom: {worker: 0.5}}")}


def _trial_logs(folder):
    logs = {}
    for path in folder.glob("*/result.json"):
        lines = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
        if lines:
            logs[lines[-1]["trial_id"]] = lines
    return logs


@pytest.mark.parametrize("kind", ["task", "function"])
def test_a_lost_node_costs_epochs_not_trials(cluster, write_spec, tmp_path, kind):
    runs = tmp_path / "runs"
    (tmp_path / "user_train.py").write_text(FUNCTION)
    sweep = cli_on(cluster, "sweep", write_spec(LOSS_SPECS[kind]), "--runs-dir", runs, wait=False)
    victim = node = None
    deadline = time.monotonic() + 180
    while victim is None and time.monotonic() < deadline:  # a trial past its second checkpoint, mid-run
        for trial_id, lines in _trial_logs(runs / "ray/nodeloss-sweep").items():
            if 2 <= len(lines) < 5 and (node := cluster.node_of(lines[-1]["pid"])):
                victim = trial_id
                break
        time.sleep(0.2)
    assert victim, "no trial reached its second epoch"
    cluster.kill_node(node)
    cluster.add_node()  # the replacement an autoscaler would start
    output, _ = sweep.communicate(timeout=300)
    assert sweep.returncode == 0, output
    print(output)

    records = {t["trial_id"]: t for t in json.loads((runs / "ray/nodeloss-sweep/results.json").read_text())["trials"]}
    assert len(records) == 4 and {t["status"] for t in records.values()} == {"completed"}
    assert all(t["epochs"] == 8 for t in records.values())
    lost = records[victim]
    assert lost["attempts"] == 2 and lost["resumed_at"] and lost["resumed_at"][0] >= 1  # from its checkpoint
    if kind == "function":  # the function itself went on from its checkpoint
        assert lost["metrics"]["began_at"] == lost["resumed_at"][0]
    assert f"trial {victim} lost its worker" in output and "retrying: attempt 2 of 3, from epoch" in output
    assert "Raylet is terminated" not in output and "state-dump" not in output  # Ray's own logs stay in its file
    client = MlflowClient(f"sqlite:///{runs}/mlflow.db")
    experiment = client.get_experiment_by_name("nodeloss")
    trial_runs = [r for r in client.search_runs([experiment.experiment_id]) if "raysweep.trial_id" in r.data.tags]
    assert sorted(r.data.tags["raysweep.trial_id"] for r in trial_runs) == sorted(records)  # each trial once
    for r in trial_runs:
        steps = [m.step for m in client.get_metric_history(r.info.run_id, "val_loss")]
        assert sorted(steps) == list(range(1, 9)), (r.data.tags["raysweep.trial_id"], steps)  # each step once
    [lost_run] = [r for r in trial_runs if r.data.tags["raysweep.trial_id"] == victim]
    assert lost_run.data.tags["raysweep.attempt"] == "2"
    assert int(lost_run.data.tags["raysweep.resumed_epoch"]) == lost["resumed_at"][0]
