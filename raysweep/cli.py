"""`raysweep` command line: the one place that wires the layers together."""
from __future__ import annotations

import _thread
import re
import signal
import sys
import threading
import time

import click
import yaml

from . import console
from .spec import ExprError, SpecError, load_spec
from .spec.model import STAGES
from .sweep.resources import ClusterError
from .train.run import ConfigError  # torch-free: the driver never imports torch


def load_checked(file, overrides=()):
    """Load a spec and check it against its task (the trainer's layer)."""
    from .train.validate import check_task

    spec = load_spec(file, overrides)
    check_task(spec)
    return spec


def _fail(message: str) -> None:
    console.error(f"raysweep: {message}")
    sys.exit(2)


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="raysweep")
@click.option("-v", "--verbose", count=True, help="Show raysweep's diagnostics (-vv: more).")
def cli(verbose):
    """Staged hyperparameter sweeps for PyTorch on Ray Tune, tracked in MLflow."""
    console.verbose(verbose)


@cli.command()
@click.argument("files", nargs=-1, required=True)
@click.option("--set", "overrides", multiple=True, metavar="KEY=VALUE", help="Override a key, e.g. search.num_samples=5.")
def validate(files, overrides):
    """Check sweep files; one line per file. Exit 2 if any is invalid."""
    bad = 0
    for file in files:
        try:
            spec = load_checked(file, overrides)
        except SpecError as e:
            console.error(str(e))
            bad += 1
            continue
        console.say(f"{file}: ok: {summary(spec)}")
    sys.exit(2 if bad else 0)


@cli.command()
@click.argument("file")
@click.option("-n", "num", default=3, show_default=True, type=click.IntRange(0, 10_000), help="Configs to sample.")
@click.option("--seed", default=0, show_default=True, help="Sampling seed.")
@click.option("--set", "overrides", multiple=True, metavar="KEY=VALUE", help="Override a key.")
def show(file, num, seed, overrides):
    """Print the resolved spec (after `extends`) and N sampled configs that satisfy every constraint."""
    import numpy as np

    from .spec import Space

    spec = load_checked(file, overrides)
    space = Space(spec)
    resolved = spec.model_dump(mode="json", exclude_none=True, exclude={"extends", "method"})
    console.say(f"# {file} resolved\n" + yaml.safe_dump(resolved, sort_keys=False), end="")
    rng = np.random.default_rng(seed)
    points = space.grid()
    samples = []
    for i in range(num):
        config = space.sample_feasible(rng, points[i % len(points)])
        if config is None:
            _fail(f"{file}: constraints: no feasible config found for sample {i + 1}")
        samples.append(space.with_derived(config))
    console.say(f"# {num} sampled trial configs (derived values applied)\n" + yaml.safe_dump(samples, sort_keys=False), end="")


@cli.command("train")
@click.argument("file")
@click.option("--set", "overrides", multiple=True, metavar="KEY=VALUE",
              help="A trial value (lr=3e-4) or, with a dot, a spec key (stopping.max_epochs=5).")
@click.option("--seed", default=0, show_default=True, help="Seed for the parameters you do not set.")
@click.option("--epochs", type=click.IntRange(1), help="Epochs (default: stopping.max_epochs).")
@click.option("--test", "evaluate_test", is_flag=True, help="Evaluate on the held-out test split at the end.")
@click.option("--out", type=click.Path(file_okay=False), help="Where to keep the final checkpoint.")
@click.option("--address", envvar="RAY_ADDRESS", help="Ray cluster for multi-worker trials (default: start one).")
def train_command(file, overrides, seed, epochs, evaluate_test, out, address):
    """Train one config of a spec, exactly as a sweep trial would: reproduce any trial."""
    import shutil
    import time

    from .train import Run

    spec_sets = [o for o in overrides if "." in o.partition("=")[0]]
    trial_sets = dict(_trial_value(o) for o in overrides if "." not in o.partition("=")[0])
    spec = load_checked(file, spec_sets)
    config = trial_config(spec, trial_sets, seed)
    run = Run.from_spec(spec, **({"epochs": epochs} if epochs else {}), evaluate_test=evaluate_test)
    out = out or f"runs/{spec.name}/train-{time.strftime('%Y%m%d-%H%M%S')}"
    console.say("config: " + yaml.safe_dump(config, default_flow_style=True, width=10_000).strip())
    kept = {}

    def report(metrics, checkpoint_dir):
        shown = " ".join(f"{k} {v:.4g}" if isinstance(v, float) else f"{k} {v}" for k, v in metrics.items()
                         if k in ("epoch", "train_loss", "val_loss", spec.metric.name, "scheduled_lr", "epoch_seconds", "status")
                         or k.startswith("test_"))
        console.say(shown)
        if checkpoint_dir:
            shutil.rmtree(out, ignore_errors=True)
            kept["path"] = shutil.copytree(checkpoint_dir, out)
        if metrics.get("status") == "diverged":
            console.say(f"diverged: {metrics['diverged_reason']}")

    from .sweep.resources import plan

    p = plan(spec.resources)
    if p.workers == 1:
        from .train import train
        from .train.device import local_device

        train(config, run, report, device=local_device(p.use_gpu))
    else:
        _train_ddp(spec, config, run, p, report, address)
    if "path" in kept:
        console.say(f"checkpoint: {kept['path']}")


@cli.command("sweep")
@click.argument("file")
@click.option("--set", "overrides", multiple=True, metavar="KEY=VALUE", help="Override a spec key.")
@click.option("--address", envvar="RAY_ADDRESS", help="Run on this Ray cluster (`auto` for the local one).")
@click.option("--resume", is_flag=True, help="Continue an interrupted sweep; finished trials are not re-run.")
@click.option("--runs-dir", default="runs", show_default=True, help="Where Tune results and the MLflow file go.")
@click.option("--tracking-uri", help="MLflow tracking URI (default: spec, MLFLOW_TRACKING_URI, sqlite under runs).")
@click.option("--experiment", help="MLflow experiment (default: spec's tracking.experiment, else its name).")
@click.option("--stage", default="sweep", show_default=True, help="Stage name (MLflow parent run, result folder).")
@click.option("--retry-failed", is_flag=True,
              help="Run the finished stage's errored, diverged and timed-out trials again (finished ones are kept).")
def sweep_command(file, overrides, address, resume, runs_dir, tracking_uri, experiment, stage, retry_failed):
    """Run one stage of a sweep on Ray Tune; every trial lands in MLflow."""
    spec = load_checked(file, overrides)
    if resume and retry_failed:
        raise click.UsageError("--resume and --retry-failed: use one (resume an interrupted stage first)")
    session = start_session(spec, address, runs_dir, tracking_uri, experiment)
    result = session.stage(spec, stage, resume=resume, retry=retry_failed)
    session.summarize(result)


@cli.command("run")
@click.argument("file")
@click.option("--set", "overrides", multiple=True, metavar="KEY=VALUE", help="Override a spec key.")
@click.option("--until", type=click.Choice(STAGES), default="final", show_default=True,
              help="Stop after this stage; a later run of the same command goes on from there.")
@click.option("--fresh", is_flag=True, help="Forget an earlier run of this spec's pipeline and start over.")
@click.option("--address", envvar="RAY_ADDRESS", help="Run on this Ray cluster (`auto` for the local one).")
@click.option("--runs-dir", default="runs", show_default=True, help="Where stage outputs, Tune results and MLflow go.")
@click.option("--tracking-uri", help="MLflow tracking URI (default: spec, MLFLOW_TRACKING_URI, sqlite under runs).")
@click.option("--experiment", help="MLflow experiment (default: spec's tracking.experiment, else its name).")
def run_command(file, overrides, until, fresh, address, runs_dir, tracking_uri, experiment):
    """The staged pipeline: LR range test, coarse, fine, multi-seed re-runs, final test. Resumable:
    run the same command again after an interruption."""
    from .pipeline import PipelineError

    spec = load_checked(file, overrides)
    session = start_session(spec, address, runs_dir, tracking_uri, experiment)
    try:
        done = session.pipeline(spec, until=until, fresh=fresh)
    except PipelineError as e:
        console.error(f"raysweep: {e}")
        sys.exit(1)
    console.say(f"\npipeline {spec.name}: finished {', '.join(done)}")
    if "final" in done:
        console.say(f"best config: {done['final'].best_config}")
    session.where()


@cli.command("report")
@click.argument("target")
@click.option("--runs-dir", default="runs", show_default=True, help="Where the sweep's results (and sqlite MLflow) are.")
@click.option("--tracking-uri", help="MLflow tracking URI (default: spec, MLFLOW_TRACKING_URI, sqlite under runs).")
@click.option("--experiment", help="MLflow experiment (default: spec's tracking.experiment, else its name).")
@click.option("--out", type=click.Path(file_okay=False), help="Folder for the report (default: under RUNS_DIR/reports).")
@click.option("--format", "fmt", type=click.Choice(["html", "md"]), default="html", show_default=True,
              help="A self-contained HTML page, or markdown (also printed).")
def report_command(target, runs_dir, tracking_uri, experiment, out, fmt):
    """Analyse a finished sweep from MLflow: top configs, parameter importance, failures, convergence,
    seed variance and what to try next. TARGET: the spec (its newest pipeline run) or an MLflow run id
    (a pipeline's or a stage's). The report is also logged as artifacts of that run."""
    import os

    from .session import report
    from .tracking import tracking_uri as default_uri

    os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
    if os.path.isfile(target):
        spec, run_id = load_spec(target), None
        experiment = experiment or spec.tracking.experiment or spec.name
    elif re.fullmatch(r"[0-9a-f]{32}", target):
        spec, run_id = None, target
    else:
        _fail(f"{target}: neither a spec file nor an MLflow run id (32 hex digits)")
    uri = tracking_uri or default_uri(spec, runs_dir)
    from mlflow.exceptions import MlflowException

    from .tracking.read import NotFound

    try:
        path = report(uri, run_id=run_id, experiment=experiment, out=out, runs_dir=runs_dir, fmt=fmt)
    except NotFound as e:
        _fail(str(e))
    except MlflowException as e:
        _fail(f"MLflow at {uri}: {str(e).splitlines()[0][:300]}; check the server is up (or pass --tracking-uri)")
    if fmt == "md":
        with open(path) as f:
            console.say(f.read())
    console.say(f"report: {path}")


@cli.command("sync")
@click.argument("file")
@click.option("--set", "overrides", multiple=True, metavar="KEY=VALUE", help="Override a spec key.")
@click.option("--address", envvar="RAY_ADDRESS", help="Ray cluster (`auto` for the local one).")
@click.option("--runs-dir", default="runs", show_default=True, help="Where the sweep's results are.")
@click.option("--tracking-uri", help="MLflow tracking URI (default: spec, MLFLOW_TRACKING_URI, sqlite under runs).")
@click.option("--experiment", help="MLflow experiment (default: spec's tracking.experiment, else its name).")
def sync_command(file, overrides, address, runs_dir, tracking_uri, experiment):
    """Write to MLflow what an earlier run of this spec could not (MLflow was down at a stage's end)."""
    spec = load_checked(file, overrides)
    session = start_session(spec, address, runs_dir, tracking_uri, experiment)
    synced = session.sync(spec)
    console.say(f"synced: {', '.join(synced)}" if synced else "nothing was pending")
    session.where()


def start_session(spec, address, runs_dir, tracking_uri, experiment=None):
    import os
    import time

    from .session import Session, route_ray_logs

    log = route_ray_logs(os.path.abspath(os.path.join(runs_dir, "logs", f"ray-{time.strftime('%Y%m%d-%H%M%S')}.log")))
    return Session.start(spec, address=address, runs_dir=runs_dir, tracking_uri=tracking_uri, experiment=experiment,
                         log_file=log)


def _train_ddp(spec, config, run, p, report, address):
    import os

    from .session import connect_ray
    from .sweep import check_resources
    from .sweep.ddp import run_ddp
    from .train import checkpoint

    connect_ray(address)
    check_resources(spec)
    storage = os.path.abspath(f"runs/{spec.name}/ray")

    def forward(metrics, path):
        report(metrics, path if path and os.path.exists(os.path.join(path, checkpoint.FILE)) else None)

    run_ddp(config, run, p, forward, storage, f"train-{spec.name}")


def _trial_value(assignment: str):
    from .spec.yaml_io import parse_value

    key, _, text = assignment.partition("=")
    return key.strip(), parse_value(text) if text else None


def trial_config(spec, values: dict, seed: int) -> dict:
    """The config one trial of `spec` would see: given values, the rest sampled (seeded), derived applied."""
    import numpy as np

    from .spec import Space
    from .spec.check import check_train_value
    from .spec.errors import did_you_mean
    from .spec.settings import TRAIN_KEYS
    from .train.run import spec_dirs
    from .train.tasks import is_function, load_task

    space = Space(spec)
    task = load_task(spec.task, spec_dirs(spec))
    if is_function(task):
        raise SpecError("raysweep train runs raysweep Tasks; this task is a training function", spec.file,
                        path="task", fix=f"run its config as a one-trial sweep: raysweep sweep {spec.file}")
    known = set(space.params) | set(spec.fixed) | set(spec.derived) | set(TRAIN_KEYS) | set(task.params)
    for name in values:
        if name not in known:
            raise SpecError(f"--set {name}: not a parameter or setting{did_you_mean(name, known)}", spec.file,
                            fix="set a parameter, a trainer setting or a task setting")
    for name, value in values.items():
        if name in TRAIN_KEYS:
            check_train_value(name, value, (), lambda path, msg, fix=None, name=name: _raise(f"--set {name}: {msg}", spec))
    params = {k: v for k, v in values.items() if k in space.params}
    rng = np.random.default_rng(seed)
    config = space.sample_feasible(rng, params) or space.sample(rng, params)
    bad = space.violated(config)
    if bad is not None:
        _raise(f"--set {', '.join(f'{k}={v}' for k, v in params.items())}: breaks the constraint `{bad.source}`", spec,
               "change the values you set")
    config = space.with_derived(config)
    config.update(values)  # settings outside the space, and derived values the user pins
    return config


def _raise(message, spec, fix=None):
    raise SpecError(message, spec.file, fix=fix)


def summary(spec) -> str:
    params = spec.parameters
    cond = sum(p.parent is not None for p in params.values())
    s = spec.search
    return (f"task {spec.task}, {len(params)} parameters ({cond} conditional), {len(spec.constraints)} constraints, "
            f"{len(spec.derived)} derived; {s.method} x {s.num_samples}, scheduler {spec.scheduler.type}; "
            f"metric {spec.metric.name} ({spec.metric.mode})")


class Interrupt:
    """Ctrl-C as KeyboardInterrupt, raised again every half second until the command has handled it:
    Python drops one that lands in a garbage-collection callback ("Exception ignored in ..."), and the
    sweep then went on as if nothing had happened (1 interruption in 2 of 3 test runs)."""

    def __init__(self):
        self.lock, self.pending, self.done = threading.Lock(), False, False

    def install(self) -> None:
        signal.signal(signal.SIGINT, self._on)

    def _on(self, signum, frame):
        with self.lock:
            if self.done:  # exiting already: a repeat that was on its way
                return
            if not self.pending:
                self.pending = True
                threading.Thread(target=self._again, daemon=True, name="raysweep-interrupt").start()
        raise KeyboardInterrupt

    def _again(self) -> None:
        while True:
            time.sleep(0.5)
            with self.lock:
                if self.done:
                    return
                _thread.interrupt_main()  # runs _on in the main thread: raised once more

    def handled(self) -> None:
        with self.lock:
            self.done = True


def _exit_now(code: int) -> None:
    """Leave without Python's exit hooks: Ray's (a 0.5 s sleep, then the core worker's teardown) made
    Ctrl-C take 2.3 s to return on a cluster, 3.5 s on a local instance. Nothing of the sweep's is lost
    that a SIGKILL would keep (tested): results are on disk, MLflow's writer is a daemon thread either
    way, and a cluster reaps the actors of a driver that is gone. A local instance this process started
    is shut down first: its agents outlived the driver otherwise."""
    import logging
    import os

    ray = sys.modules.get("ray")
    if ray is not None and ray.is_initialized():
        from .session import owns_ray

        if owns_ray():
            ray.shutdown()
    logging.shutdown()  # Ray's log file
    sys.stdout.flush()
    os._exit(code)


def main(argv=None) -> None:
    interrupt = Interrupt()
    if threading.current_thread() is threading.main_thread():
        interrupt.install()
    try:
        cli.main(args=argv, prog_name="raysweep", standalone_mode=False)
    except SpecError as e:
        console.error(str(e))
        sys.exit(2)
    except (ExprError, ConfigError, ClusterError) as e:  # a bad value, or a cluster that cannot be used
        _fail(str(e))
    except click.UsageError as e:
        command = e.ctx.command_path if e.ctx else "raysweep"
        _fail(f"{command}: {e.format_message().rstrip('.')}; see `{command} --help`")
    except click.ClickException as e:
        _fail(e.format_message())
    except (click.exceptions.Abort, KeyboardInterrupt):  # click turns Ctrl-C into Abort
        interrupt.handled()
        console.error("raysweep: interrupted; finished trials are kept: run the same command again to go on "
                      "(`raysweep sweep` with --resume)")
        _exit_now(130)
    except Exception as e:
        if not console.routed():
            raise
        import traceback

        traceback.print_exc()  # into the log file, beside Ray's
        console.error(f"raysweep: {type(e).__name__}: {e}".splitlines()[0])
        console.error("raysweep: the traceback is in Ray's log file (runs/logs/)")
        sys.exit(1)
    finally:
        interrupt.handled()  # a command that ended anyway takes no more repeats
