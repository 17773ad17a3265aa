"""Helpers the tests share (fixtures live in conftest.py): paths, running the CLI, building specs."""
import os
import subprocess
import sys
from pathlib import Path

from hypothesis import strategies as st

from raysweep.spec import Spec

ROOT = Path(__file__).resolve().parent.parent


def run_cli(*args, cwd=ROOT, timeout=120, env=None):
    """Run `raysweep ARGS` as a user would: a separate process, output captured (`env` added to ours)."""
    return subprocess.run([sys.executable, "-m", "raysweep", *map(str, args)], cwd=cwd, capture_output=True,
                          text=True, timeout=timeout, env={**os.environ, **(env or {})})


def cli_on(cluster, *args, timeout=300, wait=True, env=None):
    """`raysweep ARGS` as a client of a cluster (its address and token in the environment)."""
    cmd = [sys.executable, "-m", "raysweep", *map(str, args)]
    env = {**os.environ, **cluster.env(), **(env or {})}
    if not wait:
        return subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    return subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=timeout)


def worker_node_ids(cluster) -> set:
    return {n["NodeID"] for n in cluster.alive_nodes() if "worker" in n["Resources"]}


HEAD = {"name": "t", "task": "digits_mlp", "metric": {"name": "val_loss", "mode": "min"}}


def off_loopback(pids) -> tuple[set, list]:
    """(pid, name) of each process among `pids` that listens on a TCP port, and every (name, ip, port)
    of theirs that is not on loopback."""
    import ipaddress

    import psutil

    names, off = set(), []
    for pid in pids:
        try:
            proc = psutil.Process(pid)
            for c in proc.net_connections(kind="inet"):
                if c.status == psutil.CONN_LISTEN:
                    names.add((pid, proc.name()))
                    address = ipaddress.ip_address(c.laddr.ip.split("%")[0])
                    mapped = getattr(address, "ipv4_mapped", None)
                    if not (address.is_loopback or (mapped and mapped.is_loopback)):
                        off.append((proc.name(), c.laddr.ip, c.laddr.port))
        except (psutil.NoSuchProcess, psutil.AccessDenied, psutil.ZombieProcess):
            continue
    return names, off


def make_spec(parameters, **extra) -> Spec:
    return Spec.model_validate({**HEAD, "parameters": parameters, **extra})


@st.composite
def numeric_params(draw):
    dist = draw(st.sampled_from(["uniform", "loguniform", "quniform", "qloguniform", "int", "logint"]))
    if dist in ("int", "logint"):
        lo = draw(st.integers(1 if dist == "logint" else -50, 500))
        return {"distribution": dist, "min": lo, "max": lo + draw(st.integers(1, 5000))}
    if dist in ("quniform", "qloguniform"):
        q = 10.0 ** draw(st.integers(-4, 1))
        lo = draw(st.integers(1 if dist == "qloguniform" else -100, 100))
        hi = lo + draw(st.integers(1, 1000))
        return {"distribution": dist, "min": lo * q, "max": hi * q, "q": q}
    if dist == "loguniform":
        lo = 10.0 ** draw(st.floats(-8, 2))
        return {"distribution": dist, "min": lo, "max": lo * 10.0 ** draw(st.floats(0.01, 6))}
    lo = draw(st.floats(-1e3, 1e3))
    return {"distribution": dist, "min": lo, "max": lo + draw(st.floats(1e-3, 1e3))}


def trial_runs(session, stage):
    """The MLflow client, a stage's run and its trial runs, as a session wrote them."""
    from mlflow.tracking import MlflowClient

    client = MlflowClient(session.tracker.uri)
    experiment = client.get_experiment_by_name(session.tracker.experiment)
    runs = client.search_runs([experiment.experiment_id])
    parent = [r for r in runs if r.data.tags.get("raysweep.stage") == stage and r.data.tags.get("raysweep.kind") == "stage"]
    assert len(parent) == 1
    children = [r for r in runs if r.data.tags.get("mlflow.parentRunId") == parent[0].info.run_id]
    return client, parent[0], children


def reported_epochs(started_at: int, epochs: int) -> list[int]:
    """The epochs a trial reports: those it trained, after `started_at` (the epoch of an earlier stage's
    checkpoint it went on from); one that trained none (the final stage's chosen config, which the seeds
    stage ran) reports its last epoch once, scored on the test split."""
    return list(range(started_at + 1, epochs + 1)) or [epochs]


def assert_epoch_steps(client, run, metric: str, epochs: int, started_at: int = 0) -> None:
    """A trial run's history of `metric`: each epoch once, those `reported_epochs` names. Only a PBT
    clone may skip: it goes on from its donor's checkpoint, which can be epochs ahead of where it stood
    (as in Tune's own results). Either names the trial it went on from."""
    steps = sorted(m.step for m in client.get_metric_history(run.info.run_id, metric))
    assert len(steps) == len(set(steps)) and steps[0] == reported_epochs(started_at, epochs)[0] \
        and steps[-1] == epochs, steps
    if steps != list(range(started_at + 1, epochs + 1)) or started_at:
        assert "raysweep.resumed_from" in run.data.tags, (steps, run.data.tags)


def tiny_pipeline(concurrent: int, max_epochs: int, hidden: str, coarse: str, fine: str, seeds: str) -> list[str]:
    """--set arguments that shrink digits_mlp.yaml's pipeline to a test's size (stages as YAML maps)."""
    sets = {"resources.cpus_per_worker": 0.5, "search.max_concurrent": concurrent, "stopping.max_epochs": max_epochs,
            "parameters.hidden": hidden, "stopping.early_stopping": "null", "stages.lr_range_test.num_steps": 30,
            "stages.coarse": coarse, "stages.fine": fine, "stages.seeds": seeds}
    return [arg for key, value in sets.items() for arg in ("--set", f"{key}={value}")]
