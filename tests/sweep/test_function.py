"""A user's Ray Train function swept unchanged, on the real Ray instance: one worker in the trial,
two as a TorchTrainer job; ASHA stopping it, PBT cloning it, the whole pipeline on it; a missing
metric and a function that never reports."""
import json

import pytest

from raysweep.session import Session
from raysweep.spec import SpecError, load_spec
from tests.support import trial_runs

# Written as a Ray Train user writes it: no raysweep import. Its state is one number, w, that grows
# by lr each epoch, so a run that starts from another trial's checkpoint shows it (w != lr x epochs).
FUNCTIONS = """
import json, os, sys, tempfile, time
import ray.train

def train_fn(config):
    ctx = ray.train.get_context()
    w, start, restored_lr = 0.0, 0, None
    checkpoint = ray.train.get_checkpoint()
    if checkpoint:
        with checkpoint.as_directory() as d:
            saved = json.load(open(os.path.join(d, "state.json")))
        w, start, restored_lr = saved["w"], saved["epoch"], saved["lr"]
    for epoch in range(start, config.get("num_epochs", 100)):
        time.sleep(config.get("sleep", 0.0))
        w += config["lr"]
        metrics = {"score": w, "epoch": epoch, "workers": ctx.get_world_size(), "lr_seen": config["lr"],
                   "config_json": json.dumps(config, sort_keys=True), "torch_imported": "torch" in sys.modules}
        if restored_lr is not None:
            metrics["restored_lr"], metrics["restored_w"] = restored_lr, w - config["lr"]
            restored_lr = None
        if config.get("evaluate_test"):
            metrics["test_score"] = 2 * w
        if config.get("report_log"):  # every report as the function made it, to check Tune's log against
            with open(config["report_log"], "a") as f:
                f.write(json.dumps(metrics) + "\\n")
        with tempfile.TemporaryDirectory() as d:
            json.dump({"w": w, "epoch": epoch + 1, "lr": config["lr"]}, open(os.path.join(d, "state.json"), "w"))
            ray.train.report(metrics, checkpoint=ray.train.Checkpoint.from_directory(d) if ctx.get_world_rank() == 0 else None)

def silent_fn(config):
    return None
"""


def spec_file(tmp_path, name, body):
    (tmp_path / "user_train.py").write_text(FUNCTIONS)
    (tmp_path / f"{name}.yaml").write_text(f"name: {name}\n" + body)
    return load_spec(str(tmp_path / f"{name}.yaml"))


def coarse(spec, tmp_path):
    session = Session.start(spec, runs_dir=str(tmp_path))
    return session, session.stage(spec, "coarse", quiet=True)


HEAD = "task: user_train:train_fn\nmetric: {name: score, mode: max}\nresources: {cpus_per_worker: 0.25}\n"


def test_one_worker_function_under_asha_gets_its_whole_config_and_is_stopped_or_completed(ray_session, tmp_path):
    spec = spec_file(tmp_path, "fn_asha", HEAD + """
search: {method: random, num_samples: 5, seed: 0, max_concurrent: 2}
scheduler: {type: asha, grace_period: 1, reduction_factor: 2}
stopping: {max_epochs: 6}
fixed: {sleep: 0.05, optimizer: lion}   # a trainer name, with the function's own value
derived: {num_epochs: epochs + 4}
parameters: {lr: {distribution: uniform, min: 0.1, max: 1.0}, width: {values: [1, 2]}}
""")
    session, result = coarse(spec, tmp_path)
    assert len(result.trials) == 5
    for t in result.trials:
        seen = json.loads(t.metrics["config_json"])
        # every parameter, fixed setting (a trainer name with the user's own value) and derived value
        assert {"lr", "width", "sleep", "optimizer", "num_epochs"} <= seen.keys() and seen["optimizer"] == "lion"
        assert seen["num_epochs"] == 10 and t.metrics["workers"] == 1
        assert t.metrics["score"] == pytest.approx(t.config["lr"] * t.epochs)  # its own reports, in order
        assert t.metrics["reported_epoch"] == t.epochs - 1  # the function's own `epoch`, kept aside
        assert t.metrics["torch_imported"] is False  # raysweep imports no torch into a function's trial
    epochs = sorted(t.epochs for t in result.trials)
    assert epochs[0] < 6 and epochs[-1] == 6, epochs  # raysweep ends it after the stage's epochs, ASHA earlier
    assert {t.status for t in result.trials} == {"stopped", "completed"}
    assert {t.status for t in result.trials if t.epochs == 6} == {"completed"}
    client, _, children = trial_runs(session, "coarse")
    by_trial = {r.data.tags["raysweep.trial_id"]: r for r in children}
    for t in result.trials:
        steps = [m.step for m in client.get_metric_history(by_trial[t.trial_id].info.run_id, "score")]
        assert sorted(steps) == list(range(1, t.epochs + 1))


def test_a_function_that_returns_early_is_completed_and_one_that_never_reports_errors(ray_session, tmp_path):
    spec = spec_file(tmp_path, "fn_short", HEAD + "search: {method: grid}\nstopping: {max_epochs: 5}\n"
                     "fixed: {num_epochs: 3}\nparameters: {lr: {distribution: grid, values: [0.5]}}\n")
    result = coarse(spec, tmp_path)[1]
    (t,) = result.trials
    assert (t.status, t.epochs, t.value) == ("completed", 3, pytest.approx(1.5))

    silent = spec_file(tmp_path, "fn_silent", HEAD.replace("train_fn", "silent_fn") + "search: {method: grid}\n"
                       "stopping: {max_epochs: 2}\nparameters: {lr: {distribution: grid, values: [0.5]}}\n")
    (t,) = coarse(silent, tmp_path)[1].trials
    assert t.status == "errored" and "returned without calling ray.train.report" in t.error


def test_a_metric_the_function_does_not_report_stops_the_stage_at_once(ray_session, tmp_path):
    spec = spec_file(tmp_path, "fn_missing", HEAD.replace("name: score", "name: val_accuracy") + (
        "search: {method: random, num_samples: 30, max_concurrent: 2}\nstopping: {max_epochs: 3}\n"
        "fixed: {sleep: 0.2}\nparameters: {lr: {distribution: uniform, min: 0.1, max: 1.0}}\n"))
    session = Session.start(spec, runs_dir=str(tmp_path))
    with pytest.raises(SpecError) as e:
        session.stage(spec, "coarse", quiet=True)
    line = str(e.value)
    assert "\n" not in line and line.startswith(f"{spec.file}:3:")
    assert ("the function reported config_json, epoch, lr_seen, score, torch_imported, workers; "
            "metric.name is 'val_accuracy'") in line
    log = (tmp_path / "ray" / "fn_missing-coarse" / "results.json")
    assert not log.exists()  # the stage did not end as if it had results
    started = list((tmp_path / "ray" / "fn_missing-coarse").glob("run_trial*"))
    assert len(started) <= 4, len(started)  # not 30 identical failures


def test_two_workers_run_as_one_torchtrainer_job(ray_session, tmp_path):
    spec = spec_file(tmp_path, "fn_ddp", HEAD.replace("cpus_per_worker: 0.25", "cpus_per_worker: 0.25, "
                     "workers_per_trial: 2, cpus_per_trial: 0.25") + "search: {method: grid}\n"
                     "stopping: {max_epochs: 2}\nparameters: {lr: {distribution: grid, values: [0.5]}}\n")
    (t,) = coarse(spec, tmp_path)[1].trials
    assert (t.status, t.epochs, t.metrics["workers"]) == ("completed", 2, 2), t.error
    assert t.value == pytest.approx(1.0) and t.checkpoint


def test_pbt_clones_a_function_from_its_donors_checkpoint_with_a_mutated_config(ray_session, tmp_path):
    spec = spec_file(tmp_path, "fn_pbt", HEAD + """
search: {method: random, num_samples: 8, seed: 0, max_concurrent: 8}
scheduler:
  type: pbt
  perturbation_interval: 1
  quantile_fraction: 0.5
  mutations: {lr: {distribution: uniform, min: 0.1, max: 1.0}}
stopping: {max_epochs: 6}
fixed: {sleep: 0.3, report_log: %s}
parameters: {lr: {distribution: uniform, min: 0.1, max: 1.0}}
""" % (tmp_path / "reports.jsonl"))
    session, result = coarse(spec, tmp_path)
    from raysweep.sweep.progress import result_log

    logged = [r for t in result.trials for r in result_log(t.path)]
    made = [json.loads(line) for line in (tmp_path / "reports.jsonl").read_text().splitlines()]
    # each trial's restarts (every exploit is one) keep the reports before them in its result log
    key = ("score", "lr_seen", "restored_lr")
    assert sorted(tuple(r.get(k, 0) for k in key) for r in logged) == sorted(tuple(r.get(k, 0) for k in key) for r in made)
    clones = [r for r in logged if "restored_lr" in r]
    assert clones, "no trial started from a checkpoint"
    for r in clones:  # it carries on from the checkpoint's w, with its own (mutated) lr
        assert r["score"] == pytest.approx(r["restored_w"] + r["lr_seen"])
        assert r["epoch"] > 1
    assert any(r["restored_lr"] != r["lr_seen"] for r in clones)  # a clone of another trial, config mutated
    assert all(t.epochs == 6 for t in result.trials)


def test_the_pipeline_on_a_function_skips_the_lr_test_and_asks_the_final_run_for_test_metrics(ray_session, tmp_path):
    spec = spec_file(tmp_path, "fn_pipe", HEAD + (
        "search: {method: random, num_samples: 3, seed: 0}\nstopping: {max_epochs: 3}\n"
        "parameters: {lr: {distribution: loguniform, min: 0.01, max: 1.0}}\n"
        "stages: {coarse: {num_samples: 3, epochs: 2, top_k: 1}, fine: {num_samples: 2},"
        " seeds: {top_n: 1, num_seeds: 2}}\n"))
    session = Session.start(spec, runs_dir=str(tmp_path))
    done = session.pipeline(spec)
    assert "lr_range_test" not in done and {"coarse", "fine", "seeds", "final"} <= done.keys()
    final = done["final"]
    assert final.test == {"test_score": pytest.approx(2 * final.value)}
    assert final.baseline_value is None  # a function has no defaults raysweep knows: no untuned baseline
    assert "evaluate_test" not in final.config  # raysweep's request, not a parameter of the chosen config
    with open(final.best_config) as f:
        assert "raysweep sweep" in f.readline()  # a function's config runs again as a one-trial sweep


@pytest.mark.parametrize("name", ["nested_groups", "dict_list_values", "hydra_names"])
def test_w_and_b_files_reach_the_function_as_w_and_b_would_pass_them(ray_session, tmp_path, name):
    from tests.support import ROOT

    path = ROOT / "tests/spec/wandb_corpus" / f"{name}.yaml"
    spec = load_spec(path, ["search.num_samples=3", "resources.cpus_per_worker=0.25"])
    result = coarse(spec, tmp_path)[1]
    seen = [json.loads(t.metrics["config_json"]) for t in result.trials]
    assert len(seen) == 3 and all(t.status == "completed" for t in result.trials)
    for config, t in zip(seen, result.trials, strict=True):
        if name == "nested_groups":  # W&B's nested groups arrive nested
            assert set(config) == {"optimizer", "model"} and set(config["optimizer"]) == {"lr", "betas"}
            assert config["optimizer"]["betas"]["beta2"] == 0.999 and config["model"]["width"] in (32, 64)
        elif name == "dict_list_values":  # values as written: lists stay lists, dicts stay dicts (TPE too)
            assert config["layers"] in ([64, 64], [128, 64, 32])
            assert config["optim"] in ({"name": "adam", "betas": [0.9, 0.999]}, {"name": "sgd", "momentum": 0.9})
            assert t.config["optim"] == config["optim"]
        else:  # Hydra-style names as they are
            assert set(config) == {"model.lr", "data-augment", "trainer.max-epochs", "epochs"}
