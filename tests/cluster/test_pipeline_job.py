"""`raysweep run` end to end on digits as a user runs it on a cluster: submitted with `ray job submit` to
the local multi-node cluster, its driver SIGKILLed during the fine stage, submitted again, and everything
the pipeline promises read back from disk and from MLflow."""
import json
import math
import os
import subprocess
import time
from collections import defaultdict

import numpy as np
import pytest
import yaml
from mlflow.tracking import MlflowClient
from scipy import stats

from raysweep.cli import load_checked, trial_config
from raysweep.spec import load_spec
from raysweep.sweep.local_cluster import submit_command
from tests.chaos import finished_in_snapshot, trial_logs
from tests.support import ROOT, cli_on, reported_epochs, run_cli, tiny_pipeline

SPEC = "search_spaces/digits_mlp.yaml"
TINY = tiny_pipeline(1, 6, "[32, 64]", "{num_samples: 6, epochs: 2, top_k: 3}",
                     "{num_samples: 8, top_k: 2, stop_window: 20}", "{top_n: 2, num_seeds: 3}")
NAME = "digits_mlp"


def submit(cluster, *args, wait=True):
    """`ray job submit` of `raysweep ARGS` to the cluster, as `make sweep-cluster-local` does it."""
    cmd = submit_command(cluster.dashboard, list(map(str, args)))
    env = {**os.environ, **cluster.env()}
    if wait:
        return subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=900)
    return subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def drivers(runs) -> list:
    """The job's driver: the `raysweep run` process writing to `runs`."""
    import psutil

    return [p for p in psutil.process_iter(["cmdline"])
            if "raysweep" in (cmd := p.info["cmdline"] or []) and str(runs) in cmd and "submit" not in cmd]


@pytest.fixture(scope="module")
def pipeline(cluster, tmp_path_factory):
    runs = tmp_path_factory.mktemp("pipeline")
    job = submit(cluster, "run", SPEC, *TINY, "--runs-dir", runs, wait=False)
    deadline = time.monotonic() + 600
    while not (fine_done := finished_in_snapshot(runs / "ray" / f"{NAME}-fine")):
        # kill the job's driver once Tune's own snapshot holds a finished fine trial: a resume must not
        # run it again (the job's log reaches `ray job submit` seconds late; the stage lasts seconds)
        assert job.poll() is None and time.monotonic() < deadline, job.stdout.read()
        time.sleep(0.05)
    [driver] = drivers(runs)
    driver.kill()
    first, _ = job.communicate(timeout=120)  # the job fails with its driver
    state = json.loads((runs / "pipelines" / NAME / "state.json").read_text())
    coarse_logs = trial_logs(runs / "ray" / f"{NAME}-coarse")
    fine_logs = trial_logs(runs / "ray" / f"{NAME}-fine")
    second = submit(cluster, "run", SPEC, *TINY, "--runs-dir", runs)
    return dict(runs=runs, first=first, second=second, state_at_kill=state, coarse_logs=coarse_logs,
                fine_logs=fine_logs, fine_done=fine_done)


def test_rerun_after_a_kill_in_fine_finishes_without_repeating_coarse(pipeline):
    second, runs = pipeline["second"], pipeline["runs"]
    assert second.returncode == 0, second.stdout[-3000:] + second.stderr[-3000:]
    assert set(pipeline["state_at_kill"]["done"]) == {"lr_range_test", "coarse"}
    assert "[coarse]" not in second.stdout and "[lr_range_test]" not in second.stdout
    assert "[fine]" in second.stdout and "[seeds]" in second.stdout and "[final]" in second.stdout
    assert trial_logs(runs / "ray" / f"{NAME}-coarse") == pipeline["coarse_logs"]  # not one coarse epoch re-run
    fine_after = trial_logs(runs / "ray" / f"{NAME}-fine")
    assert 1 <= len(pipeline["fine_done"]) < 8
    for trial, log in pipeline["fine_logs"].items():
        if any(t in trial for t in pipeline["fine_done"]):  # finished before the kill: not trained again
            # Tune's driver writes a trial's result log: a kill can come after its snapshot took the
            # last report and before the log did, and that line is written later. Anything else would
            # be training again, which repeats epochs (Tune keeps a lost attempt's lines). A coarse
            # top-k trial the fine stage went on with starts after its coarse checkpoint's epoch.
            epochs = [json.loads(line)["epoch"] for line in fine_after[trial].splitlines()]
            assert fine_after[trial].startswith(log) and epochs == list(range(epochs[0], epochs[0] + len(epochs))) \
                and epochs[0] in (1, 3), (log, fine_after[trial])
        else:  # unfinished: run again (from its last checkpoint, or from scratch without one)
            assert trial in fine_after
    state = json.loads((runs / "pipelines" / NAME / "state.json").read_text())
    assert list(state["done"]) == ["lr_range_test", "coarse", "fine", "seeds", "final"]


def test_lr_range_test_sets_the_coarse_range_and_fine_narrows_it(pipeline):
    runs = pipeline["runs"]
    done = json.loads((runs / "pipelines" / NAME / "state.json").read_text())["done"]
    assert (runs / "pipelines" / NAME / "lr_range.png").stat().st_size > 10_000
    lo, hi = done["lr_range_test"]["range"]
    assert 1e-4 <= lo < hi <= 1e-1 and (lo, hi) != (1e-4, 1e-1)
    coarse = json.loads((runs / "ray" / f"{NAME}-coarse" / "results.json").read_text())["trials"]
    assert len(coarse) == 6 and all(lo <= t["config"]["base_lr"] <= hi for t in coarse)
    fine_space = done["fine"]["parameters"]
    f_lo, f_hi = fine_space["base_lr"]["min"], fine_space["base_lr"]["max"]
    assert lo <= f_lo < f_hi <= hi and math.log(f_hi / f_lo) < math.log(hi / lo)
    top = sorted((t for t in coarse if t["value"] is not None), key=lambda t: -t["value"])[:2]
    assert all(f_lo <= t["config"]["base_lr"] <= f_hi for t in top)
    assert set(fine_space["optimizer"]["values"]) == {t["config"]["optimizer"] for t in top}
    fine = json.loads((runs / "ray" / f"{NAME}-fine" / "results.json").read_text())["trials"]
    assert len(fine) == 8 and all(f_lo <= t["config"]["base_lr"] <= f_hi for t in fine)


def test_seeds_statistics_match_the_re_runs_and_the_winner_has_the_best_mean(pipeline):
    runs = pipeline["runs"]
    summary = json.loads((runs / "pipelines" / NAME / "seeds.json").read_text())
    trials = json.loads((runs / "ray" / f"{NAME}-seeds" / "results.json").read_text())["trials"]
    assert len(trials) == 6 and all(t["epochs"] == 6 and t["status"] == "completed" for t in trials)
    groups = defaultdict(dict)
    for t in trials:
        params = {k: v for k, v in t["config"].items() if k != "seed"}
        groups[json.dumps(params, sort_keys=True)][t["config"]["seed"]] = t["value"]
    assert len(groups) == 2 and all(len(v) == 3 for v in groups.values())
    means = {}
    for c in summary["ranked"]:
        key = next(k for k in groups if all(json.loads(k)[p] == v for p, v in c["config"].items()))
        values = np.array(list(groups[key].values()))
        half = stats.t.ppf(0.975, 2) * values.std(ddof=1) / math.sqrt(3)
        assert math.isclose(c["mean"], values.mean()) and math.isclose(c["std"], values.std(ddof=1))
        assert np.allclose(c["ci95"], [values.mean() - half, values.mean() + half])
        means[c["config_id"]] = values.mean()
    assert summary["winner"] == max(means, key=means.get)
    assert f"[seeds] config {summary['winner']}: val_accuracy mean" in pipeline["second"].stdout


def test_best_config_is_a_valid_spec_with_the_winner_and_its_test_accuracy(pipeline):
    runs = pipeline["runs"]
    path = runs / "pipelines" / NAME / "best_config.yaml"
    assert run_cli("validate", path).returncode == 0
    best = load_checked(path)
    seeds = json.loads((runs / "pipelines" / NAME / "seeds.json").read_text())
    winner = seeds["ranked"][0]
    assert {k: best.fixed[k] for k in winner["config"]} == winner["config"]
    final, baseline = sorted(json.loads((runs / "ray" / f"{NAME}-final" / "results.json").read_text())["trials"],
                             key=lambda t: bool(t["config"].get("raysweep_baseline")))
    assert trial_config(best, {}, seed=0) == final["config"]  # `raysweep train` trains what the final run did
    # the untuned baseline beside it: the spec's fixed settings and defaults, nothing searched, the same seed
    # the searched trainer settings at raysweep's defaults, the task's (hidden, dropout) and base_lr unset
    assert baseline["config"]["raysweep_baseline"]
    assert {k: baseline["config"][k] for k in set(baseline["config"]) & set(winner["config"])} == {
        "optimizer": "adamw", "weight_decay": 0.0, "batch_size": 32}
    assert baseline["config"]["seed"] == final["config"]["seed"] and baseline["epochs"] == 6
    assert best.results["baseline_test_accuracy"] == baseline["metrics"]["test_accuracy"]
    assert f"test_accuracy {baseline['metrics']['test_accuracy']:.4g}; tuned " in pipeline["second"].stdout
    assert 0.5 < best.results["test_accuracy"] == final["metrics"]["test_accuracy"] <= 1.0
    assert best.results["seeds_val_accuracy_mean"] == pytest.approx(winner["mean"])
    assert f"test_accuracy {best.results['test_accuracy']:.4g}" in pipeline["second"].stdout
    assert str(path) in pipeline["second"].stdout
    assert yaml.safe_load(path.read_text())["stopping"]["max_epochs"] == 6


def test_mlflow_holds_one_pipeline_run_over_every_stage_and_each_trial_once(pipeline):
    runs = pipeline["runs"]
    client = MlflowClient(f"sqlite:///{runs}/mlflow.db")
    exp = client.get_experiment_by_name(NAME)
    all_runs = client.search_runs([exp.experiment_id], max_results=1000)
    [top] = [r for r in all_runs if r.data.tags.get("raysweep.kind") == "pipeline"]
    assert top.info.status == "FINISHED"
    stages = {r.data.tags["raysweep.stage"]: r for r in all_runs
              if "raysweep.stage" in r.data.tags and "raysweep.trial_id" not in r.data.tags}
    assert set(stages) == {"lr_range_test", "coarse", "fine", "seeds", "final"}
    assert all(r.data.tags["mlflow.parentRunId"] == top.info.run_id for r in stages.values())
    for stage, expected in (("coarse", 6), ("fine", 8), ("seeds", 6), ("final", 2)):
        trials = [r for r in all_runs if r.data.tags.get("mlflow.parentRunId") == stages[stage].info.run_id]
        ids = [r.data.tags["raysweep.trial_id"] for r in trials]
        assert len(ids) == expected == len(set(ids)), (stage, ids)
        epochs = {t["trial_id"]: reported_epochs(t["started_at"], t["epochs"]) for t in json.loads(
            (runs / "ray" / f"{NAME}-{stage}" / "results.json").read_text())["trials"]}
        for r in trials:  # every epoch it trained once, also for the trials the kill interrupted
            steps = [m.step for m in client.get_metric_history(r.info.run_id, "val_accuracy")]
            assert sorted(steps) == epochs[r.data.tags["raysweep.trial_id"]], (stage, steps)
    final_runs = [r for r in all_runs if r.data.tags.get("mlflow.parentRunId") == stages["final"].info.run_id]
    [baseline] = [r for r in final_runs if r.data.tags.get("raysweep.role") == "baseline"]
    assert "raysweep_baseline" not in baseline.data.params and "base_lr" not in baseline.data.params
    assert top.data.metrics["baseline_test_accuracy"] == baseline.data.metrics["test_accuracy"]
    report = (runs / "pipelines" / NAME / "report" / "report.html").read_text()  # built from MLflow
    untuned = baseline.data.metrics["test_accuracy"]
    assert f"nothing searched), trained beside it on the same seed: test_accuracy = {untuned:.4g}" in report
    artifacts = {a.path for a in client.list_artifacts(top.info.run_id)}
    assert {"best_config.yaml", "seeds.json"} <= artifacts
    assert {"lr_range.png", "lr_range.json"} <= {a.path for a in client.list_artifacts(stages["lr_range_test"].info.run_id)}
    assert top.data.metrics["test_accuracy"] == load_spec(runs / "pipelines" / NAME / "best_config.yaml").results["test_accuracy"]
    assert len(client.get_metric_history(stages["lr_range_test"].info.run_id, "smoothed_loss_sgd")) == 30


def test_a_changed_spec_is_refused_until_fresh(pipeline, cluster):
    runs = pipeline["runs"]
    changed = cli_on(cluster, "run", SPEC, *TINY, "--set", "stages.seeds.num_seeds=4", "--runs-dir", runs, "--until",
                      "lr_range_test", timeout=300)
    assert changed.returncode == 2
    assert changed.stderr.strip().splitlines()[-1] == (
        f"{SPEC}: {runs}/pipelines/{NAME} holds a pipeline of a different version of this spec; "
        "add --fresh to start over, or use another --runs-dir")


def test_until_stops_after_the_named_stage(cluster, tmp_path):
    result = cli_on(cluster, "run", SPEC, *TINY, "--runs-dir", tmp_path, "--until", "lr_range_test", timeout=300)
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-2000:]
    state = json.loads((tmp_path / "pipelines" / NAME / "state.json").read_text())
    assert list(state["done"]) == ["lr_range_test"]
    assert not (tmp_path / "ray" / f"{NAME}-coarse").exists() and "[coarse]" not in result.stdout
    assert "pipeline digits_mlp: finished lr_range_test" in result.stdout
