"""`raysweep sweep` as a user runs it: a separate driver process, its own local Ray (or, where the local
instance is not what a test is about, the session's), MLflow sqlite."""
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

from mlflow.tracking import MlflowClient

from tests.support import ROOT, run_cli

SPEC = "search_spaces/digits_mlp.yaml"
SMALL = ["--set", "resources.cpus_per_worker=0.25", "--set", "stopping.max_epochs=3", "--set", "parameters.hidden=32",
         "--set", "search.method=random", "--set", "scheduler={type: fifo}"]


def children(runs_dir, experiment="digits_mlp"):
    client = MlflowClient(f"sqlite:///{runs_dir}/mlflow.db")
    exp = client.get_experiment_by_name(experiment)
    runs = client.search_runs([exp.experiment_id])
    return client, [r for r in runs if "raysweep.trial_id" in r.data.tags]


def test_impossible_resource_request_fails_before_the_run(tmp_path, ray_client_env):
    result = run_cli("sweep", SPEC, "--set", "resources.gpus_per_worker=1", "--runs-dir", tmp_path, timeout=120,
                     env=ray_client_env)
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert lines[-1].startswith(f"{SPEC}: resources: a trial needs 1 CPU, 1 GPU on one node and the largest node has")
    assert "Traceback" not in result.stderr
    assert not (tmp_path / "ray").exists()  # nothing was started


def test_retry_failed_needs_a_finished_stage_and_excludes_resume(tmp_path, ray_client_env):
    result = run_cli("sweep", SPEC, "--retry-failed", "--resume", "--runs-dir", tmp_path)
    assert result.returncode == 2 and "--resume and --retry-failed: use one" in result.stderr
    result = run_cli("sweep", SPEC, *SMALL, "--retry-failed", "--runs-dir", tmp_path, timeout=120, env=ray_client_env)
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert result.stderr.strip().splitlines()[-1] == (
        f"{SPEC}: no finished stage 'sweep' to retry at {tmp_path}/ray/digits_mlp-sweep; run it first (without --retry-failed)")


# trials of ~2 s, one at a time, so that the kill lands mid-sweep
LONGER = ["--set", "stopping.max_epochs=20", "--set", "parameters.batch_size=16", "--set", "stopping.early_stopping=null",
          "--set", "search.num_samples=6", "--set", "search.max_concurrent=1"]


# the same for a user's Ray Train function (its checkpoints carry it on): batch 1 for ~2 s trials
FUNCTION = ("search_spaces/wine_train_fn.yaml", "wine_train_fn", [
    "--set", "resources.cpus_per_worker=0.25", "--set", "search.method=random", "--set", "scheduler={type: fifo}",
    "--set", "fixed.batch_size=1", "--set", "stopping.max_epochs=20", "--set", "search.num_samples=6",
    "--set", "search.max_concurrent=1"])


# A user's function, whose driver is killed with the local Ray instance it started (a built-in task's
# drivers are killed and resumed five times by tests/cli/test_interruptions.py, with the same checks)
def test_killed_driver_resumes_without_repeating_finished_trials(tmp_path):
    spec, name, sets = FUNCTION
    args = [sys.executable, "-m", "raysweep", "sweep", spec, *sets, "--runs-dir", str(tmp_path)]
    driver = subprocess.Popen(args, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                              start_new_session=True)
    output = []
    for line in driver.stdout:  # wait until two trials have finished, then kill the driver and its Ray
        output.append(line)
        if "] 2/6 done" in line:
            break
    assert driver.poll() is None, "".join(output)
    time.sleep(2)  # Tune snapshots its state every second (TUNE_GLOBAL_CHECKPOINT_S=1)
    os.killpg(driver.pid, signal.SIGKILL)
    driver.wait()
    _, before = children(tmp_path, name)
    # (a run created just before the kill may not have its first tags yet)
    finished_before = {r.data.tags["raysweep.trial_id"] for r in before
                       if r.data.tags.get("raysweep.decision", "running") != "running"}
    assert 2 <= len(finished_before) < 6

    resumed = run_cli("sweep", spec, *sets, "--runs-dir", tmp_path, "--resume", timeout=600)
    assert resumed.returncode == 0, resumed.stdout + resumed.stderr
    assert "sweep: 6 trials" in resumed.stdout
    client, after = children(tmp_path, name)
    experiment = client.get_experiment_by_name(name)  # the stock UI opens it on its runs, and the command links there
    assert experiment.tags["mlflow.experimentKind"] == "custom_model_development"
    assert (f"  its runs: http://127.0.0.1:5000/#/experiments/{experiment.experiment_id}/runs?workflowType="
            "machine_learning") in resumed.stdout
    ids = [r.data.tags["raysweep.trial_id"] for r in after]
    assert len(ids) == 6 and len(set(ids)) == 6  # every trial exactly once in MLflow
    for run in after:
        steps = [m.step for m in client.get_metric_history(run.info.run_id, "val_accuracy")]
        assert sorted(steps) == list(range(1, 21)), (run.data.tags["raysweep.trial_id"], steps)  # each epoch once
        assert run.data.tags["raysweep.decision"] == "completed" and run.info.status == "FINISHED"
    # finished trials were not trained again: Tune's own result log of each holds its 20 epochs once
    for trial_id in finished_before:
        [trial_dir] = (tmp_path / "ray" / f"{name}-sweep").glob(f"*{trial_id}*")
        assert len((trial_dir / "result.json").read_text().splitlines()) == 20


def test_ctrl_c_ends_the_command_at_once_and_takes_its_local_ray_instance_with_it(tmp_path):
    import psutil

    args = [sys.executable, "-m", "raysweep", "sweep", SPEC, *SMALL, *LONGER, "--runs-dir", str(tmp_path)]
    driver = subprocess.Popen(args, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                              start_new_session=True)
    for line in driver.stdout:
        if "] 1/6 done" in line:
            break
    ray_processes = psutil.Process(driver.pid).children(recursive=True)  # its GCS, raylet, agents, trials
    assert any(p.name() == "raylet" for p in ray_processes)
    os.killpg(driver.pid, signal.SIGINT)  # as a terminal sends Ctrl-C
    assert driver.wait(timeout=60) == 130
    assert driver.stderr.read().strip().splitlines()[-1].startswith("raysweep: interrupted; finished trials are kept")
    _, alive = psutil.wait_procs(ray_processes, timeout=15)
    assert not alive, [(p.pid, p.name()) for p in alive]  # none outlives the command (its agents did, once)


def saved_checkpoint(stage_dir) -> str | None:
    """The checkpoint Tune's newest saved experiment state would restore its one trial from."""
    from ray.tune.utils.serialization import TuneFunctionDecoder

    state = json.loads(sorted(stage_dir.glob("experiment_state-*.json"))[-1].read_text())
    [(_, meta)] = state["trial_data"]
    decoder = TuneFunctionDecoder(allow_cloudpickle=True)  # the file this test wrote
    result = decoder.decode(meta)["checkpoint_manager"].latest_checkpoint_result
    return result.checkpoint.path if result else None


def epoch_of(checkpoint) -> int:
    return json.loads((Path(checkpoint) / "metrics.json").read_text())["epoch"]


def test_a_resumed_trial_whose_saved_checkpoint_is_gone_goes_on_from_the_newest_one(tmp_path, ray_client_env):
    # Tune deletes older checkpoints as it registers newer ones and saves its state every second or so:
    # a driver killed in between left a state naming a deleted checkpoint. Here the saved one is
    # renamed after the kill (its epoch's state under a newer name), as that race leaves it
    spec, name, sets = FUNCTION
    sets = [*sets, "--set", "search.num_samples=1", "--set", "stopping.max_epochs=120"]
    args = ["sweep", spec, *sets, "--runs-dir", tmp_path]
    env = {**os.environ, **ray_client_env}
    driver = subprocess.Popen([sys.executable, "-m", "raysweep", *map(str, args)], cwd=ROOT, env=env,
                              stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    stage = tmp_path / "ray" / f"{name}-sweep"
    deadline = time.monotonic() + 120
    while not list(stage.glob("*/checkpoint_000010")):
        assert driver.poll() is None and time.monotonic() < deadline, driver.stdout.read()
        time.sleep(0.05)
    time.sleep(1.5)  # a state save that names a checkpoint
    driver.kill()
    driver.communicate()
    saved = Path(saved_checkpoint(stage))
    [trial_dir] = [d for d in stage.iterdir() if d.is_dir()]
    source = saved if saved.exists() else sorted(trial_dir.glob("checkpoint_*"))[-1]
    epoch = epoch_of(source)
    assert epoch < 120  # killed mid-trial
    shutil.copytree(source, trial_dir / "checkpoint_000099")
    shutil.rmtree(saved, ignore_errors=True)

    resumed = subprocess.run([sys.executable, "-m", "raysweep", *map(str, args), "--resume"], cwd=ROOT, env=env,
                             capture_output=True, text=True, timeout=300)
    assert resumed.returncode == 0, resumed.stdout + resumed.stderr
    [trial] = json.loads((stage / "results.json").read_text())["trials"]
    assert trial["status"] == "completed" and trial["epochs"] == 120, trial  # not errored on the missing checkpoint
    client, [run] = children(tmp_path, name)
    assert sorted(m.step for m in client.get_metric_history(run.info.run_id, "val_accuracy")) == list(range(1, 121))
    assert run.data.tags["raysweep.resumed_epoch"] == str(epoch)  # it went on from there, not from its first epoch
