"""Wiring for the commands that run sweeps: Ray connection, storage, the MLflow tracker, stages and
the pipeline. It writes nothing to MLflow itself (tracking/ does) and prints through console."""
from __future__ import annotations

import json
import logging
import os
import sys
from dataclasses import dataclass

from . import console
from .report.plots import lr_range_plot
from .report.table import top_table
from .spec import Spec, SpecError
from .spec.model import STAGES
from .sweep import StageResult, check_resources, retry_failed, run_stage, stage_dir, storage
from .sweep.resources import ClusterError
from .sweep.storage import STORAGE_VAR
from .tracking import Tracker, pending
from .tracking import tracking_uri as default_tracking_uri

log = logging.getLogger(__name__)


def _token_available() -> bool:
    path = os.environ.get("RAY_AUTH_TOKEN_PATH") or os.path.expanduser("~/.ray/auth_token")
    return bool(os.environ.get("RAY_AUTH_TOKEN")) or os.path.isfile(path)


def _host_port(address: str) -> tuple[str, str]:
    host, _, port = address.rpartition("://")[2].rpartition(":")
    return host.strip("[]"), port


def _check_reachable(address: str, timeout: float = 5.0) -> None:
    """A TCP connect to the GCS before ray.init, which would retry an address of nothing for minutes."""
    import socket

    host, port = _host_port(address)
    try:
        socket.create_connection((host or "127.0.0.1", int(port)), timeout=timeout).close()
    except ValueError:
        raise ClusterError(f"--address {address}: not HOST:PORT (e.g. 127.0.0.1:6379, or auto)") from None
    except OSError as e:
        raise ClusterError(f"nothing answers at {address} ({e.strerror or e}); start the cluster "
                           "(`make cluster-local`, `make cluster-up`) or fix --address / RAY_ADDRESS") from None


def _on_loopback_only(address: str) -> bool:
    """An instance at a loopback address that its machine's own address does not reach (one that
    listens on loopback alone, as raysweep's do): its clients must not turn 127.0.0.1 into that address."""
    import ipaddress
    import socket

    from ray._private import services

    host, port = _host_port(address)
    try:
        if not (host == "localhost" or ipaddress.ip_address(host).is_loopback):
            return False
        socket.create_connection((services.get_node_ip_address(), int(port)), timeout=2).close()
    except ValueError:
        return False
    except OSError:
        return True
    return False


def route_ray_logs(path: str) -> str:
    """Ray's component logs (its C++ output on fd 2, its processes' stderr, the `ray` loggers) go to
    `path`; raysweep's own error lines keep the terminal (console.err). Call before connect_ray."""
    os.makedirs(os.path.dirname(path), exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
    sys.stderr.flush()
    console.keep_terminal(os.dup(2))
    os.dup2(fd, 2)  # Ray's C++ output, its child processes and its Python printers (via sys.stderr)
    os.close(fd)
    import ray  # noqa: F401 - it installs its logger's handler on import; replaced just below

    handler = logging.FileHandler(path)
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    for name in ("ray", "py.warnings"):
        logger = logging.getLogger(name)
        logger.handlers[:] = [handler]
        logger.propagate = False
    logging.captureWarnings(True)
    from ray._private import worker

    # Ray's driver thread that relays cluster errors (a raylet's death with its last log lines, OOM
    # kills) prints them to stdout even with log_to_driver=False; raysweep says what they cost in its
    # own words (a trial lost its worker, retrying), so the raw text goes to the file with the rest
    worker.print_to_stdstream = lambda data, ignore_prefix=False: logging.getLogger("ray").warning(
        "(%s) %s", data.get("pid"), "\n".join(data.get("lines", ())))
    return path


def _log_says(path: str | None, needle: str) -> bool:
    try:
        with open(path, errors="replace") as f:
            f.seek(max(0, os.path.getsize(path) - 200_000))
            return needle in f.read()
    except (OSError, TypeError):
        return False


def listen_on_loopback() -> None:
    """The local instance a driver starts for itself serves no other machine: its node address becomes
    127.0.0.1, and Ray's servers (GCS, raylet, workers' gRPC, agents) bind to it alone. Ray does this
    on macOS and Windows, where it is single-node by default; on Linux it resolves 127.0.0.1 to the
    machine's address and binds the wildcard. Its processes take the address from the raylet, so the
    driver's switch is enough; RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=1 keeps Ray's own behaviour."""
    from ray._private import ray_constants

    if "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER" not in os.environ:
        ray_constants.ENABLE_RAY_CLUSTER = False


_OWN_INSTANCE = False  # this process started the Ray instance it is connected to


def owns_ray() -> bool:
    return _OWN_INSTANCE


def connect_ray(address: str | None, log_file: str | None = None) -> None:
    global _OWN_INSTANCE
    import ray

    os.environ.setdefault("RAY_TRAIN_HEALTH_CHECK_INTERVAL_S", "0.25")  # DDP reports reach Tune sooner
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    os.environ.setdefault("RAY_AIR_NEW_OUTPUT", "0")  # the legacy reporter honours verbose=0: no banners
    os.environ.setdefault("TUNE_GLOBAL_CHECKPOINT_S", "1")  # experiment state at most 1 s old if killed
    # Tune's own Ctrl-C handler ends the run and returns the trials so far as if the stage had finished
    # (a pipeline then went on with a partial stage): let Ctrl-C interrupt the command instead
    os.environ.setdefault("TUNE_DISABLE_SIGINT_HANDLER", "1")
    # Tune's CSV and TensorBoard loggers write (and fsync) every result a second and third time; raysweep
    # reads the JSON log alone (run_stage adds it), and MLflow is its dashboard
    os.environ.setdefault("TUNE_DISABLE_AUTO_CALLBACK_LOGGERS", "1")
    if ray.is_initialized():
        return
    if not address or _on_loopback_only(address):
        listen_on_loopback()
    if address:
        if address not in ("auto", "local"):
            _check_reachable(address)
        from ray._private import ray_constants

        # the GCS answered the TCP check: Ray's 20 one-second retries of the client's first request
        # only delayed the answer to a refused token (24 s; 9 s with 5)
        ray_constants.NUM_REDIS_GET_RETRIES = int(os.environ.get("RAY_NUM_REDIS_GET_RETRIES", "5"))
        if "RAY_AUTH_MODE" not in os.environ and _token_available():
            os.environ["RAY_AUTH_MODE"] = "token"  # a cluster started with a token refuses clients without one
    token_help = ("set RAY_AUTH_MODE=token and RAY_AUTH_TOKEN_PATH to the cluster's token file "
                  "(~/.ray/auth_token on its head; `make cluster-local` prints it)")
    log.info("connecting to Ray at %s", address or "a new local instance")
    try:
        env = storage.worker_env()  # a trial on any node reaches the same storage as the driver
        ray.init(address=address, include_dashboard=False, log_to_driver=False, logging_level=logging.WARNING,
                 runtime_env={"env_vars": env} if env else None)
    except ray.exceptions.AuthenticationError as e:
        raise ClusterError(f"the Ray cluster at {address} needs a token: {str(e).splitlines()[0]}; {token_help}") from None
    except ConnectionError as e:
        if _log_says(log_file, "InvalidAuthToken"):
            raise ClusterError(f"the Ray cluster at {address} refused this client's token "
                               f"(RAY_AUTH_MODE={os.environ.get('RAY_AUTH_MODE', 'unset')}); {token_help}") from None
        raise ClusterError(f"cannot reach the Ray cluster at {address}: {e}") from None
    _OWN_INSTANCE = address in (None, "", "local")
    for name in ("ray.tune", "ray.train", "ray.air", "mlflow"):  # banners and DB-creation notes
        logging.getLogger(name).setLevel(logging.WARNING)
    # trials a stage-wide stop ended before they started have no results: not worth a warning
    logging.getLogger("ray.tune.analysis.experiment_analysis").setLevel(logging.ERROR)


def report(uri: str, run_id: str | None = None, experiment: str | None = None, out: str | None = None,
           runs_dir: str = "runs", fmt: str = "html") -> str:
    """The report of `run_id` (else the experiment's newest pipeline or stage run) from the MLflow at
    `uri`, written to `out` and logged to the run; its path. NotFound for a store or run that is not there."""
    from mlflow.tracking import MlflowClient

    from .report import build
    from .tracking.read import NotFound, latest_run

    if uri.startswith("sqlite:///") and not os.path.exists(uri.removeprefix("sqlite:///")):
        raise NotFound(f"no MLflow store at {uri}; run the sweep first, or pass --runs-dir / --tracking-uri")
    Tracker.quiet_client()
    client = MlflowClient(uri)
    run_id = run_id or latest_run(client, experiment)
    out = out or os.path.join(runs_dir, "reports", f"{experiment}-{run_id[:8]}" if experiment else run_id[:8])
    files, _ = build(client, run_id, out, fmt)
    return files[0]


@dataclass
class Session:
    runs_dir: str
    tracker: Tracker
    spec_params: tuple = ()
    storage_path: str | None = None
    log_file: str | None = None

    @classmethod
    def start(cls, spec: Spec, address=None, runs_dir="runs", tracking_uri=None, experiment=None,
              log_file: str | None = None) -> Session:
        os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
        import mlflow  # noqa: F401 - it configures its logger on import; connect_ray quiets it after
        runs_dir = os.path.abspath(runs_dir)
        storage_path = spec.storage_path or os.environ.get(STORAGE_VAR)
        storage_path = storage.resolve(storage_path) if storage_path else None
        for where, key in ((runs_dir, None), (storage_path, "storage_path")):
            why = where and storage.check_writable(where)
            if why:
                raise SpecError(f"cannot write results to {where} ({why})", spec.file,
                                path=key, fix="check the bucket or folder exists and the credentials (AWS_* for "
                                "s3://), or choose another" + (" storage_path" if key else " --runs-dir"))
        connect_ray(address, log_file)
        check_resources(spec)
        artifact_root = storage.join(storage_path or runs_dir, "mlartifacts")  # beside the results
        log.info("results in %s; MLflow artifacts in %s", storage_path or runs_dir, artifact_root)
        tracker = Tracker(tracking_uri or default_tracking_uri(spec, runs_dir),
                          experiment or spec.tracking.experiment or spec.name, artifact_root)
        return cls(runs_dir, tracker, spec_params=(*spec.parameters, *spec.derived), storage_path=storage_path,
                   log_file=log_file)

    @property
    def storage(self) -> str:
        """Tune's results: the spec's storage_path (shared storage on a cluster), else runs/ray."""
        return self.storage_path or os.path.join(self.runs_dir, "ray")

    def stage(self, spec: Spec, stage: str, retry: bool = False, **kw) -> StageResult:
        """One stage, its trials logged under the stage's MLflow run; `retry` runs a finished stage's
        failed trials again instead."""
        key = stage_dir(self.storage, spec.name, stage)
        callbacks = [self.tracker.callback(spec, stage, key)]
        result = (retry_failed if retry else run_stage)(spec, stage, self.storage, callbacks=callbacks, **kw)
        self.tracker.finish_stage(result, key)
        return result

    def sync(self, spec: Spec) -> list[str]:
        """Write to MLflow what earlier runs of this spec could not (the stages marked pending)."""
        synced = []
        for stage in (*STAGES, "sweep"):
            key = stage_dir(self.storage, spec.name, stage)
            if pending(key):
                if stage != "sweep":
                    self._attach_pipeline(spec)
                if self.tracker.finish_stage(StageResult.load(key), key):
                    synced.append(stage)
        return synced

    # -- the staged pipeline --------------------------------------------------------------------------
    def pipeline(self, spec: Spec, until: str = "final", fresh: bool = False) -> dict:
        """Run the pipeline up to `until`, resuming an earlier run of the same spec; one MLflow run
        for the pipeline with the stage runs (and their trials) nested under it."""
        def staged(stage_spec, stage, **kw):
            result = self.stage(stage_spec, stage, **kw)
            self.summarize(result, footer=False)
            return result

        pipe = self._pipe(spec, staged)
        if fresh:
            pipe.clear()
        state = pipe.open()
        self.tracker.start_pipeline(spec, state["id"])
        self.sync(spec)  # what MLflow did not take from finished stages of an earlier run
        status = "FAILED"
        try:
            done = pipe.run(until)
            status = "FINISHED"
        finally:
            self.tracker.end_pipeline(status)
        if self.tracker.parent_run_id:
            self._report(spec, self.tracker.parent_run_id, pipe.file("report"))
        return done

    def _report(self, spec: Spec, run_id: str, out: str) -> None:
        try:
            console.say(f"report: {report(self.tracker.uri, run_id, out=out)}")
        except Exception as e:  # noqa: BLE001 - the sweep is done and recorded; the report can be built later
            log.info("report failed", exc_info=True)
            console.note(f"the report was not built ({type(e).__name__}: {str(e).splitlines()[0][:200] if str(e) else ''}); "
                         f"`raysweep report {spec.file or spec.name}` builds it from MLflow")

    def _pipe(self, spec: Spec, run_stage_fn=None):
        from .pipeline import Pipeline

        pipe = Pipeline(spec, os.path.join(self.runs_dir, "pipelines", spec.name), self.storage,
                        run_stage=run_stage_fn or self.stage, log=console.say,
                        mirror=storage.join(self.storage_path, "pipelines", spec.name) if self.storage_path else None)
        pipe.on_stage = lambda stage, outcome: self._stage_done(pipe, spec, stage, outcome)
        return pipe

    def _attach_pipeline(self, spec: Spec) -> None:
        state = os.path.join(self.runs_dir, "pipelines", spec.name, "state.json")
        if self.tracker.parent_run_id is None and os.path.exists(state):
            with open(state) as f:
                self.tracker.start_pipeline(spec, json.load(f)["id"])

    def _stage_done(self, pipe, spec: Spec, stage: str, outcome) -> None:
        """A finished pipeline stage: the LR test's plot drawn, then the outcome on the pipeline's run."""
        from .pipeline.outcomes import LrTestOutcome

        files: tuple = ()
        if isinstance(outcome, LrTestOutcome):
            with open(outcome.file) as f:
                files = (lr_range_plot(json.load(f), pipe.file("lr_range.png")),)
            console.say(f"lr range test plot: {files[0]}")
        key = pipe.file(stage) if stage == "lr_range_test" else stage_dir(self.storage, spec.name, stage)
        self.tracker.record(spec, stage, key, outcome, files)

    def summarize(self, result: StageResult, k: int = 5, footer: bool = True) -> None:
        console.say(f"\n{result.stage}: {len(result.trials)} trials; top {k} by {result.metric} ({result.mode}):")
        console.say(top_table(result, k, list(self.spec_params)))
        if result.best:
            console.say(f"best config: {json.dumps(result.best.config, default=str)}")
        console.say(f"results: {storage.join(result.path, 'results.json')}")
        if footer:
            self.where()

    def where(self) -> None:
        from .tracking.runs import runs_page

        uri = self.tracker.uri
        console.say(f"MLflow: experiment '{self.tracker.experiment}' at {uri}")
        try:
            experiment_id = self.tracker.index.experiment_id
        except Exception:  # noqa: BLE001 - MLflow down at the end: the link is a convenience
            experiment_id = None
        if uri.startswith("sqlite:///"):
            console.say(f"  open it: mlflow ui --backend-store-uri {uri} --host 127.0.0.1 --port 5000")
            server = "http://127.0.0.1:5000"
        else:
            server = uri if uri.startswith("http") else None
        if experiment_id and server:
            console.say(f"  its runs: {runs_page(server, experiment_id)}")
        if self.log_file:
            console.say(f"Ray's own logs: {self.log_file}")
