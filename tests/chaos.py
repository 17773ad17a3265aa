"""A `raysweep run` driver interrupted at random moments (SIGINT as Ctrl-C sends it, or SIGKILL, to its
process group) and started again each time, then audited from what it left on disk and in MLflow:
finished trials lost or trained again, progress that went back, trials or epochs twice in MLflow.
Shared by the suite (tests/cli/test_interruptions.py) and the benchmark (bench/interruptions.py)."""
from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

from tests.support import reported_epochs

ROOT = Path(__file__).resolve().parent.parent


def trial_logs(stage_dir: Path) -> dict:
    """trial folder -> its Tune result log (one line per reported epoch)."""
    if not stage_dir.is_dir():
        return {}
    return {d.name: (d / "result.json").read_text() for d in stage_dir.iterdir()
            if d.is_dir() and (d / "result.json").exists()}


def finished_in_snapshot(stage_dir: Path) -> dict:
    """Trial id -> its last reported epoch, for the trials that Tune's latest experiment snapshot of a
    stage holds as finished. Tune writes the snapshot in place: a read that catches it cut short is
    tried again."""
    for _ in range(40):
        snapshots = sorted(stage_dir.glob("experiment_state-*.json"))
        try:
            data = json.loads(snapshots[-1].read_text()) if snapshots else {"trial_data": []}
            break
        except (json.JSONDecodeError, OSError):  # being written
            time.sleep(0.05)
    else:
        return {}
    done = {}
    for t, meta in data["trial_data"]:
        t, meta = (json.loads(x) if isinstance(x, str) else x for x in (t, meta))
        epochs = (meta.get("last_result") or {}).get("training_iteration", 0)
        # a trial a stage-wide stop (fine's stop rule) ended before it started is TERMINATED with no
        # report: not a finished trial, and not in the stage's records (bench/interruptions.py counted
        # two such as lost)
        if t["status"] == "TERMINATED" and epochs:
            done[t["trial_id"]] = epochs
    return done


def _log_upto(path: Path, epochs: int) -> str:
    """A finished trial's result log once it holds its last epoch: Tune uploads the logs after the
    state, file by file, so a read in between finds the last lines missing."""
    for _ in range(40):
        text = path.read_text()
        try:
            if json.loads(text.splitlines()[-1]).get("training_iteration", 0) >= epochs:
                break
        except (IndexError, json.JSONDecodeError):  # empty, or its last line being written
            pass
        time.sleep(0.05)
    return text


def retrained(before: str, now: str) -> bool:
    """A finished trial's result log, read at an interruption and at the end: trained again if a line
    it held is gone or a line added since reports an epoch it had reached. A log the kill cut short
    while Tune uploaded it is only completed on resume (from the driver's staged copy): its added lines
    are later epochs. An epoch the log held twice already (the trial resumed from its checkpoint
    before it finished) is not a new one: bench/interruptions.py counted such a trial once per later
    interruption."""
    from raysweep.sweep.progress import parse_log

    held, later = parse_log(before), parse_log(now)
    reached = max((r.get("training_iteration", 0) for r in held), default=0)
    return later[:len(held)] != held or any(r.get("training_iteration", 0) <= reached for r in later[len(held):])


@dataclass
class Snapshot:
    """What had finished when the driver was interrupted."""
    done_stages: list
    finished: dict  # stage -> {trial id: its result log}


def snapshot(runs: Path, name: str) -> Snapshot:
    state = runs / "pipelines" / name / "state.json"
    done = list(json.loads(state.read_text())["done"]) if state.exists() else []
    finished = {}
    for stage_dir in sorted((runs / "ray").glob(f"{name}-*")):
        ids = finished_in_snapshot(stage_dir)
        folders = [d for d in stage_dir.iterdir() if d.is_dir() and (d / "result.json").exists()]
        finished[stage_dir.name] = {i: _log_upto(d / "result.json", epochs) for i, epochs in ids.items()
                                    for d in folders if i in d.name}
    return Snapshot(done, finished)


@dataclass
class Chaos:
    seconds: list = field(default_factory=list)    # each driver's wall time, the last one ran to the end
    signals: list = field(default_factory=list)
    snapshots: list = field(default_factory=list)
    output: str = ""
    returncode: int | None = None


def mid_stage(snap: Snapshot) -> bool:
    """A stage not done yet has trials that Tune's saved state holds as finished."""
    return any(ids and stage.rsplit("-", 1)[-1] not in snap.done_stages for stage, ids in snap.finished.items())


def wait_mid_stage(driver: subprocess.Popen, runs: Path, name: str, timeout: float = 300) -> None:
    deadline = time.monotonic() + timeout
    while driver.poll() is None and time.monotonic() < deadline and not mid_stage(snapshot(runs, name)):
        time.sleep(0.1)


def interrupted_run(args: list, runs: Path, name: str, kills: int, seed: int, window: tuple, env=None,
                    after_start: bool = False, mid_stage_kills: tuple = ()) -> Chaos:
    """`raysweep ARGS` interrupted `kills` times, SIGINT and SIGKILL in turn, then run to the end. Each
    moment is drawn from `window`: seconds after that driver's start, or with `after_start` seconds after
    it printed its first stage line (Ray's start-up left out, so that the kills land on the stages
    however slow the machine). The kills numbered in `mid_stage_kills` (from 0) land as soon as a stage
    in progress has finished trials instead, the moment a resume must not repeat them."""
    rng, chaos = random.Random(seed), Chaos()
    for attempt in range(kills + 1):
        started = time.monotonic()
        driver = subprocess.Popen([sys.executable, "-m", "raysweep", *map(str, args)], cwd=ROOT, start_new_session=True,
                                  stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env)
        lines, staged = [], threading.Event()

        def read(out=driver.stdout, lines=lines, staged=staged):
            for line in out:
                lines.append(line)
                if line.startswith("["):
                    staged.set()
            staged.set()

        reader = threading.Thread(target=read, daemon=True)
        reader.start()
        if attempt < kills:
            moment = rng.uniform(*window)
            if len(chaos.signals) in mid_stage_kills:
                wait_mid_stage(driver, runs, name)
                moment = 0.01
            elif after_start:
                staged.wait(timeout=300)
            try:
                driver.wait(timeout=moment)
            except subprocess.TimeoutExpired:
                sig = (signal.SIGINT, signal.SIGKILL)[len(chaos.signals) % 2]
                chaos.snapshots.append(snapshot(runs, name))
                os.killpg(driver.pid, sig)
                chaos.signals.append(sig.name)
                try:
                    driver.wait(timeout=60)
                except subprocess.TimeoutExpired:
                    pass
        driver.wait(timeout=900)
        reader.join(timeout=60)
        try:  # what a Ctrl-C leaves of the local Ray instance goes with its group
            os.killpg(driver.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        chaos.seconds.append(time.monotonic() - started)
        chaos.output += f"--- attempt {attempt + 1}\n{''.join(lines)}"
        chaos.returncode = driver.returncode
        if attempt < kills and driver.returncode == 0:
            break  # it finished before the moment drawn for the kill
    return chaos


def audit(chaos: Chaos, runs: Path, name: str, stages_expected: list, trials_expected: dict,
          metric: str = "val_accuracy") -> dict:
    """Figures: finished trials lost, finished trials trained again, times progress went back, stages
    with other than their number of trials, trials and epochs held twice in MLflow (or missing)."""
    from mlflow.tracking import MlflowClient

    final = snapshot(runs, name)
    results = {}
    for stage_dir in (runs / "ray").glob(f"{name}-*"):
        if (stage_dir / "results.json").exists():
            results[stage_dir.name] = json.loads((stage_dir / "results.json").read_text())["trials"]
    lost = rerun = back = 0
    seen = [*chaos.snapshots, final]
    for before, after in zip(seen, seen[1:], strict=False):
        back += not set(before.done_stages) <= set(after.done_stages)
        back += sum(not set(ids) <= set(after.finished.get(stage, {})) for stage, ids in before.finished.items())
    for snap in chaos.snapshots:
        for stage, ids in snap.finished.items():
            recorded = {t["trial_id"] for t in results.get(stage, [])}
            logs = trial_logs(runs / "ray" / stage)
            for trial_id, log in ids.items():
                lost += trial_id not in recorded
                rerun += any(trial_id in folder and retrained(log, now) for folder, now in logs.items())
    client = MlflowClient(f"sqlite:///{runs}/mlflow.db")
    experiment = client.get_experiment_by_name(name)
    all_runs = client.search_runs([experiment.experiment_id], max_results=5000)
    twice = missing = extra_steps = 0
    for stage, trials in results.items():
        mine = [r for r in all_runs if r.data.tags.get("raysweep.stage") == stage.removeprefix(f"{name}-")
                and "raysweep.trial_id" in r.data.tags]
        ids = [r.data.tags["raysweep.trial_id"] for r in mine]
        twice += len(ids) - len(set(ids))
        missing += len({t["trial_id"] for t in trials} - set(ids))
        # a fine trial that went on from its coarse checkpoint starts after it
        epochs = {t["trial_id"]: reported_epochs(t.get("started_at", 0), t["epochs"]) for t in trials}
        for r in mine:
            steps = sorted(m.step for m in client.get_metric_history(r.info.run_id, metric))
            extra_steps += steps != list(epochs.get(r.data.tags["raysweep.trial_id"], []))
    counts = {stage: len(results.get(f"{name}-{stage}", [])) for stage in trials_expected}
    by_parent: dict = {}
    for r in all_runs:
        by_parent.setdefault(r.data.tags.get("mlflow.parentRunId"), []).append(r)
    stage_runs = [r for r in all_runs if r.data.tags.get("raysweep.kind") == "stage"]
    counts_off = [r.info.run_name for r in stage_runs if "raysweep.best_trial" in r.data.tags and
                  sum(v for k, v in r.data.metrics.items() if k.startswith("trials_")) != len(by_parent.get(r.info.run_id, []))]
    return {"interruptions": len(chaos.signals), "signals": chaos.signals, "finished_trials_lost": lost,
            "stages_with_wrong_trial_count": {s: n for s, n in counts.items() if n != trials_expected[s]},
            "finished_trials_rerun": rerun, "progress_went_back": back, "mlflow_trials_twice": twice,
            "mlflow_trials_missing": missing, "mlflow_runs_with_wrong_steps": extra_steps,
            "mlflow_stage_counts_not_children": counts_off,
            "mlflow_runs_without_metrics": sum(not r.data.metrics for r in all_runs if "raysweep.trial_id" in r.data.tags),
            "mlflow_runs_without_kind": sum("raysweep.kind" not in r.data.tags for r in all_runs),
            "stages_done": final.done_stages, "all_stages_done": final.done_stages == stages_expected,
            "wall_s": round(sum(chaos.seconds), 1), "drivers_s": [round(s, 1) for s in chaos.seconds]}
