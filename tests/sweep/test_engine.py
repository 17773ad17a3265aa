"""The sweep engine on a real Ray instance, the real trainer and real MLflow (sqlite), read back
through MlflowClient: every searcher x scheduler, ASHA's early stops, PBT's exploits, failing trials."""
import math
import os
import time
from pathlib import Path

import pytest

from raysweep.session import Session
from raysweep.spec import Space, Spec, load_spec
from raysweep.sweep import StageResult
from raysweep.sweep.progress import result_log
from raysweep.sweep.schedulers import SCHEDULERS
from raysweep.sweep.searchers import SEARCHERS
from tests.support import assert_epoch_steps, trial_runs

BASE = {
    "task": "digits_mlp", "metric": {"name": "val_accuracy", "mode": "max"},
    "fixed": {"batch_size": 128, "hidden": 32},
    "resources": {"cpus_per_worker": 0.25},
    "parameters": {"optimizer": {"values": ["sgd", "adamw"]},
                   "momentum": {"distribution": "uniform", "min": 0.8, "max": 0.95, "when": {"optimizer": "sgd"}},
                   "lr": {"distribution": "loguniform", "min": 1e-3, "max": 3e-2},
                   "dropout": {"distribution": "grid", "values": [0.0, 0.2]}},
    "constraints": ["lr < 0.02 or optimizer == 'sgd'"],
}
SCHEDULER_ARGS = {"fifo": {}, "asha": {"grace_period": 1, "reduction_factor": 2}, "hyperband": {"reduction_factor": 2},
                  "median": {"grace_period": 1, "min_samples_required": 2},
                  "pbt": {"perturbation_interval": 1, "mutations": {"lr": {"distribution": "loguniform",
                                                                             "min": 1e-3, "max": 3e-2}}}}


def make_spec(name, method, scheduler, epochs=3, samples=2, **extra):
    data = {**BASE, "name": name, "search": {"method": method, "num_samples": samples, "seed": 0, "max_concurrent": 2},
            "scheduler": {"type": scheduler, **SCHEDULER_ARGS[scheduler]}, "stopping": {"max_epochs": epochs}, **extra}
    if method == "hyperopt":  # TPE takes choices, not grids
        data["parameters"] = {**data["parameters"], "dropout": {"values": [0.0, 0.2]}}
        data["search"]["num_samples"] = 4
    if scheduler == "pbt":
        data["fixed"] = {**data["fixed"], "checkpoint_every": 1}
    return Spec.model_validate(data)


COMBOS = [(m, s) for m in SEARCHERS for s in SCHEDULERS if not (s == "pbt" and m == "hyperopt")]


@pytest.mark.parametrize("method, scheduler", COMBOS)
def test_every_searcher_with_every_scheduler(ray_session, tmp_path, method, scheduler):
    spec = make_spec(f"{method}_{scheduler}", method, scheduler)
    session = Session.start(spec, runs_dir=str(tmp_path))
    result = session.stage(spec, "coarse", quiet=True)
    space = Space(spec)
    # random: 2 dropout values x 2 draws; grid: also x 2 optimizers; hyperopt: 4 suggestions
    expected = {"random": 4, "grid": 8, "hyperopt": 4}[method]
    assert len(result.trials) == expected
    assert all(t.status in ("completed", "stopped", "early_stopped") for t in result.trials), \
        [(t.status, t.error) for t in result.trials]
    for t in result.trials:
        params = {k: v for k, v in t.config.items() if k in space.params}
        assert space.violated(params) is None  # constraints held for every searcher
        assert ("momentum" in t.config) == (t.config["optimizer"] == "sgd")
    client, parent, children = trial_runs(session, "coarse")
    assert len(children) == expected and parent.data.metrics["best_val_accuracy"] == result.best.value
    by_trial = {r.data.tags["raysweep.trial_id"]: r for r in children}
    for t in result.trials:
        run = by_trial[t.trial_id]
        assert_epoch_steps(client, run, "val_accuracy", t.epochs)
        # never started over: Tune's median rule and HyperBand paused trials, which began again (PBT's
        # clones go on from other trials' checkpoints by design)
        assert [r["epoch"] for r in result_log(t.path)] == list(range(1, t.epochs + 1)) or scheduler == "pbt"
        assert run.data.tags["raysweep.decision"] == t.status and run.info.status == "FINISHED"
        assert float(run.data.params["lr"]) == pytest.approx(t.config["lr"]) or scheduler == "pbt"
    assert os.path.exists(os.path.join(result.path, "results.json"))


def test_asha_stops_weak_trials_before_max_t(ray_session, tmp_path):
    spec = make_spec("asha_stops", "random", "asha", epochs=6, samples=5)
    result = Session.start(spec, runs_dir=str(tmp_path)).stage(spec, "coarse", quiet=True)
    epochs = sorted(t.epochs for t in result.trials)
    assert epochs[0] < 6 and epochs[-1] == 6, epochs
    assert {t.status for t in result.trials if t.epochs < 6} == {"stopped"}


def test_a_stage_shorter_than_max_epochs_trains_the_start_of_full_length_runs(ray_session, tmp_path):
    """The coarse stage's 1 epoch of a 4-epoch cosine run ends where the full run's first epoch does
    (lr at cos(pi/4) of the way down), not at the end of a 1-epoch cosine of its own (lr near 0)."""
    spec = make_spec("short_stage", "random", "fifo", epochs=4, fixed={**BASE["fixed"], "schedule": "cosine"})
    result = Session.start(spec, runs_dir=str(tmp_path)).stage(spec, "coarse", quiet=True, epochs=1)
    assert result.trials and all(t.epochs == 1 for t in result.trials)
    for t in result.trials:
        assert t.metrics["scheduled_lr"] == pytest.approx(t.config["lr"] * (1 + math.cos(math.pi / 4)) / 2, rel=0.02)


def test_pbt_exploits_from_checkpoints(ray_session, tmp_path):
    # 8 trials side by side, the bottom half cloning the top half: an exploit does not hinge on two trials'
    # timing on a loaded machine
    spec = make_spec("pbt_exploits", "random", "pbt", epochs=6).derive(
        search={"method": "random", "num_samples": 4, "seed": 0, "max_concurrent": 8},
        scheduler={"type": "pbt", **SCHEDULER_ARGS["pbt"], "quantile_fraction": 0.5})
    session = Session.start(spec, runs_dir=str(tmp_path))
    result = session.stage(spec, "coarse", quiet=True)
    client, _, children = trial_runs(session, "coarse")
    exploited = {r.data.tags["raysweep.trial_id"]: r.data.tags["raysweep.resumed_from"] for r in children
                 if "raysweep.resumed_from" in r.data.tags}
    ids = {t.trial_id for t in result.trials}
    assert exploited, "no trial continued from another trial's checkpoint"
    for trial, donor in exploited.items():
        assert donor in ids and donor != trial
    assert all(t.epochs == 6 for t in result.trials)  # exploited trials continue, they do not restart


def test_a_stage_killed_before_tunes_first_save_runs_whole_on_resume(ray_session, tmp_path):
    spec = make_spec("early_kill", "random", "fifo", epochs=1, samples=3)
    session = Session.start(spec, runs_dir=str(tmp_path))
    first = session.stage(spec, "coarse", quiet=True)
    # what a driver killed within Tune's first second leaves: the Tuner's own file, no saved state
    folder = tmp_path / "ray" / "early_kill-coarse"
    for f in folder.iterdir():
        if f.is_file() and f.name != "tuner.pkl":
            f.unlink()
    again = session.stage(spec, "coarse", resume=True, quiet=True)
    assert len(first.trials) == len(again.trials) == 6  # 2 dropout grid values x 3 draws (it ran 1)


def staged_copies(folder, name) -> list:
    """Where Tune staged `name` of a stage's folder before uploading it (this test session's Ray)."""
    from ray.train.constants import _get_ray_train_session_dir

    return list(Path(_get_ray_train_session_dir()).glob(f"*/{folder.name}/driver_artifacts/{name}"))


def cut(path) -> None:
    path.write_text(path.read_text()[: len(path.read_text()) // 2])


def finished_stage(name, tmp_path, epochs):
    """A 2-trial stage run to its end: (resume it, its folder, its one state file, the trials' logs)."""
    spec = make_spec(name, "random", "fifo", epochs=epochs, samples=2)
    session = Session.start(spec, runs_dir=str(tmp_path))
    first = session.stage(spec, "coarse", quiet=True)
    folder = tmp_path / "ray" / f"{name}-coarse"
    [state] = folder.glob("experiment_state-*.json")
    return (lambda: session.stage(spec, "coarse", resume=True, quiet=True), folder, state,
            {t.trial_id: result_log(t.path) for t in first.trials})


def test_an_upload_cut_short_by_a_kill_is_completed_from_the_staged_files_on_resume(ray_session, tmp_path):
    resume, folder, state, logs = finished_stage("cut_upload", tmp_path, epochs=2)
    assert staged_copies(folder, state.name) and all(len(log) == 2 for log in logs.values())
    # a driver killed while Tune copied its staged files to storage: the only state and a finished
    # trial's result.json cut short there (without the staged copies, the stage started afresh)
    cut(state)
    cut(next(folder.glob("run_trial_*/result.json")))
    again = resume()
    assert {t.trial_id for t in again.trials} == set(logs)  # restored: the same trials, none trained again
    assert all(result_log(t.path) == logs[t.trial_id] for t in again.trials)  # every epoch's record back
    assert not list(folder.glob("unreadable-*"))


def test_a_stage_whose_newest_saved_state_is_cut_short_resumes_from_a_whole_one(ray_session, tmp_path):
    resume, folder, state, logs = finished_stage("cut_state", tmp_path, epochs=1)
    # an earlier driver's whole state, and the newest one cut short by a kill while Tune wrote it, on
    # storage and where it staged it
    (folder / "experiment_state-0000-00-00_00-00-00.json").write_text(state.read_text())
    for copy in [state, *staged_copies(folder, state.name)]:
        cut(copy)
    again = resume()
    assert {t.trial_id for t in again.trials} == set(logs)  # restored: the same trials, none trained again
    assert all(result_log(t.path) == logs[t.trial_id] for t in again.trials)
    assert (folder / f"unreadable-{state.name}").exists()  # set aside (the resumed driver saves its own)
    for whole in [*folder.glob("experiment_state-*.json"), *staged_copies(folder, "experiment_state-*.json")]:
        whole.write_text("{")  # every state cut short, staged copies too: the stage starts afresh
    afresh = resume()
    assert len(afresh.trials) == 4 and not {t.trial_id for t in afresh.trials} & set(logs)


FAULTY_TASK = """
import os, time
from raysweep.train.tasks.digits import DigitsMLP
FIXED = os.path.join(os.path.dirname(__file__), "fixed")

class Faulty(DigitsMLP):
    # hidden picks the fault: 13 raises, 14 hangs, 15 diverges, until a file `fixed` sits beside it
    def model(self, config):
        hidden = int(self.settings(config)["hidden"])
        if not os.path.exists(FIXED) and hidden == 13:
            raise ValueError("no model with 13 units")
        if not os.path.exists(FIXED) and hidden == 14:
            time.sleep(3600)
        self.scale = 1e30 if hidden == 15 and not os.path.exists(FIXED) else 1.0
        return super().model(config)

    def loss(self, output, target):
        return super().loss(output, target) * self.scale
"""


# The watchdog's clock runs from a trial's start, so a good trial's fresh process must load digits,
# build its first optimizer (torch._dynamo's import) and train an epoch inside it: more than 4 s once
# in a clean-clone run under two xdist workers.
TIMEOUT_S = 10


def faulty_session(tmp_path, hidden: list, concurrent: int, timeout_s: float = TIMEOUT_S):
    """A grid over FAULTY_TASK's `hidden` (which picks each trial's fault), one epoch a trial."""
    (tmp_path / "faulty_task.py").write_text(FAULTY_TASK)
    (tmp_path / "faulty.yaml").write_text(
        "name: faulty\ntask: faulty_task:Faulty\nmetric: {name: val_accuracy, mode: max}\n"
        f"search: {{method: grid, max_concurrent: {concurrent}}}\nstopping: {{max_epochs: 1, trial_timeout_s: {timeout_s}}}\n"
        f"resources: {{cpus_per_worker: 0.25}}\nparameters: {{hidden: {{distribution: grid, values: {hidden}}}}}\n")
    spec = load_spec(str(tmp_path / "faulty.yaml"))
    return spec, Session.start(spec, runs_dir=str(tmp_path))


def test_a_raising_a_diverging_and_a_hanging_trial_are_recorded_and_only_they_run_again(ray_session, tmp_path):
    spec, session = faulty_session(tmp_path, [16, 13, 14, 15], concurrent=2)
    started = time.monotonic()
    result = session.stage(spec, "coarse", quiet=True)
    took = time.monotonic() - started
    by_hidden = {t.config["hidden"]: t for t in result.trials}
    assert {h: t.status for h, t in by_hidden.items()} == {16: "completed", 13: "errored", 14: "timed_out", 15: "diverged"}
    assert "no model with 13 units" in by_hidden[13].error
    assert "trial_timeout_s" in by_hidden[14].metrics["timeout_reason"]
    assert by_hidden[15].metrics["diverged_reason"] and by_hidden[15].value is None
    assert result.best.config["hidden"] == 16
    _, _, children = trial_runs(session, "coarse")
    tags = {r.data.tags["raysweep.trial_id"]: r.data.tags for r in children}
    assert {r.data.tags["raysweep.decision"]: r.info.status for r in children}["errored"] == "FAILED"
    assert {tags[t.trial_id]["raysweep.decision"] for t in result.trials} == {"completed", "errored", "timed_out", "diverged"}
    assert "trial_timeout_s" in tags[by_hidden[14].trial_id]["raysweep.timeout_reason"]
    assert "no model with 13 units" in tags[by_hidden[13].trial_id]["raysweep.error"]
    print(f"\nfaults: 4 trials (raise, hang, diverge, ok) recorded in {took:.1f} s with a {TIMEOUT_S} s trial timeout")

    (tmp_path / "fixed").write_text("")  # the user fixed the task: run the failed three again
    again = session.stage(spec, "coarse", retry=True, quiet=True)
    retried = {t.retry_of: t for t in again.trials if t.retry_of}
    assert set(retried) == {by_hidden[h].trial_id for h in (13, 14, 15)}  # not the finished one
    assert all(t.status == "completed" and t.value is not None for t in retried.values())
    old = {t.trial_id: t for t in again.trials if not t.retry_of}
    assert old[by_hidden[16].trial_id].retried_as is None
    assert all(old[by_hidden[h].trial_id].retried_as == retried[by_hidden[h].trial_id].trial_id for h in (13, 14, 15))
    def by_id(stage):
        return {t.trial_id: t for t in stage.trials}

    assert by_id(StageResult.load(again.path)) == by_id(again)  # merged on disk
    assert len(again.ranked()) == 4  # the finished one and the three re-runs, not the failures
    _, _, children = trial_runs(session, "coarse")
    assert len(children) == 7 and {r.info.status for r in children if r.data.tags["raysweep.trial_id"]
                                   in {t.trial_id for t in retried.values()}} == {"FINISHED"}
    assert by_id(session.stage(spec, "coarse", retry=True, quiet=True)) == by_id(again)  # nothing left to retry


def test_the_trial_after_a_hung_one_gets_a_fresh_process_not_the_hung_ones(ray_session, tmp_path):
    # one at a time: Tune would hand the hung trial's process (its thread still asleep) to the next
    # trial, whose start then fails after a 2 s wait for that thread (Tune's reset_config)
    spec, session = faulty_session(tmp_path, [14, 16], concurrent=1)
    result = session.stage(spec, "coarse", quiet=True)
    assert {t.config["hidden"]: t.status for t in result.trials} == {14: "timed_out", 16: "completed"}


def test_the_trial_left_alone_at_a_stages_end_trains_on_the_cpus_the_stage_freed(ray_session, tmp_path):
    # two trials one at a time on Ray's 2 CPUs, 0.25 CPU each: the first runs while the second is still
    # to come, on the one thread Ray gives it; the second is the stage's last, alone, and the driver
    # gives it the node's 2 CPUs within a second (its first epoch may end before the driver sees it)
    from raysweep.sweep import run_stage

    spec = Spec.model_validate({**BASE, "name": "spare", "fixed": {"batch_size": 16, "hidden": 64},
                                "parameters": {**BASE["parameters"], "dropout": {"distribution": "uniform", "min": 0, "max": .2}},
                                "search": {"method": "random", "num_samples": 2, "seed": 0, "max_concurrent": 1},
                                "stopping": {"max_epochs": 6}})
    result = run_stage(spec, "coarse", str(tmp_path), quiet=True)
    first, last = sorted(result.trials, key=lambda t: result_log(t.path)[0]["timestamp"])
    assert [r["threads"] for r in result_log(first.path)] == [1] * 6
    threads = [r["threads"] for r in result_log(last.path)]
    print("threads per epoch of the last trial:", threads)
    assert threads[-3:] == [2, 2, 2], threads
