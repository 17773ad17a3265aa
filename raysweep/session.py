"""Wiring for the commands that run sweeps: Ray connection, storage, MLflow, stages, summaries.
The only module besides the CLI that knows every layer."""
from __future__ import annotations

import json
import logging
import os
import sys
import tempfile
from dataclasses import dataclass

import yaml

from . import console
from .report.table import top_table
from .spec import Spec, SpecError
from .sweep import StageResult, check_resources, run_stage, stage_dir, storage
from .sweep.resources import ClusterError
from .sweep.storage import STORAGE_VAR
from .tracking import MlflowTracker
from .tracking import tracking_uri as default_tracking_uri


def _token_available() -> bool:
    path = os.environ.get("RAY_AUTH_TOKEN_PATH") or os.path.expanduser("~/.ray/auth_token")
    return bool(os.environ.get("RAY_AUTH_TOKEN")) or os.path.isfile(path)


def _check_reachable(address: str, timeout: float = 5.0) -> None:
    """A TCP connect to the GCS before ray.init, which would retry an address of nothing for minutes."""
    import socket

    host, _, port = address.rpartition("://")[2].rpartition(":")
    try:
        socket.create_connection((host.strip("[]") or "127.0.0.1", int(port)), timeout=timeout).close()
    except ValueError:
        raise ClusterError(f"--address {address}: not HOST:PORT (e.g. 127.0.0.1:6379, or auto)") from None
    except OSError as e:
        raise ClusterError(f"nothing answers at {address} ({e.strerror or e}); start the cluster "
                           "(`make cluster-local`, `make cluster-up`) or fix --address / RAY_ADDRESS") from None


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
    return path


def _log_says(path: str | None, needle: str) -> bool:
    try:
        with open(path, errors="replace") as f:
            f.seek(max(0, os.path.getsize(path) - 200_000))
            return needle in f.read()
    except (OSError, TypeError):
        return False


def connect_ray(address: str | None, log_file: str | None = None) -> None:
    import ray

    os.environ.setdefault("RAY_TRAIN_HEALTH_CHECK_INTERVAL_S", "0.25")  # DDP reports reach Tune sooner
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    os.environ.setdefault("RAY_AIR_NEW_OUTPUT", "0")  # the legacy reporter honours verbose=0: no banners
    os.environ.setdefault("TUNE_GLOBAL_CHECKPOINT_S", "1")  # experiment state at most 1 s old if killed
    if ray.is_initialized():
        return
    if address:
        if address not in ("auto", "local"):
            _check_reachable(address)
        if "RAY_AUTH_MODE" not in os.environ and _token_available():
            os.environ["RAY_AUTH_MODE"] = "token"  # a cluster started with a token refuses clients without one
    token_help = ("set RAY_AUTH_MODE=token and RAY_AUTH_TOKEN_PATH to the cluster's token file "
                  "(~/.ray/auth_token on its head; `make cluster-local` prints it)")
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
    for name in ("ray.tune", "ray.train", "ray.air", "mlflow"):  # banners and DB-creation notes
        logging.getLogger(name).setLevel(logging.WARNING)
    # trials a stage-wide stop ended before they started have no results: not worth a warning
    logging.getLogger("ray.tune.analysis.experiment_analysis").setLevel(logging.ERROR)


@dataclass
class Session:
    runs_dir: str
    uri: str
    experiment: str
    parent_run_id: str | None = None
    spec_params: tuple = ()
    storage_path: str | None = None
    log_file: str | None = None

    @classmethod
    def start(cls, spec: Spec, address=None, runs_dir="runs", tracking_uri=None, experiment=None,
              log_file: str | None = None) -> Session:
        os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
        # MLflow's client retries a request for minutes by default, blocking the sweep's driver;
        # raysweep's writer retries on its own thread instead
        os.environ.setdefault("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "1")
        os.environ.setdefault("MLFLOW_HTTP_REQUEST_TIMEOUT", "10")
        import mlflow  # noqa: F401 - it configures its logger on import; connect_ray quiets it after
        runs_dir = os.path.abspath(runs_dir)
        storage_path = spec.storage_path or os.environ.get(STORAGE_VAR)
        storage_path = storage.resolve(storage_path) if storage_path else None
        for where, field in ((runs_dir, None), (storage_path, "storage_path")):
            why = where and storage.check_writable(where)
            if why:
                raise SpecError(f"cannot write results to {where} ({why})", spec.file,
                                path=field, fix="check the bucket or folder exists and the credentials (AWS_* for "
                                "s3://), or choose another" + (" storage_path" if field else " --runs-dir"))
        connect_ray(address, log_file)
        check_resources(spec)
        return cls(runs_dir, tracking_uri or default_tracking_uri(spec, runs_dir),
                   experiment or spec.tracking.experiment or spec.name, spec_params=(*spec.parameters, *spec.derived),
                   storage_path=storage_path, log_file=log_file)

    @property
    def storage(self) -> str:
        """Tune's results: the spec's storage_path (shared storage on a cluster), else runs/ray."""
        return self.storage_path or os.path.join(self.runs_dir, "ray")

    @property
    def artifact_root(self) -> str:
        """MLflow's artifacts beside the results: in shared storage when there is one."""
        return storage.join(self.storage_path or self.runs_dir, "mlartifacts")

    def tracker(self, spec: Spec, stage: str) -> MlflowTracker:
        return MlflowTracker(self.uri, self.experiment, stage, spec, stage_key=stage_dir(self.storage, spec.name, stage),
                             parent_run_id=self.parent_run_id, artifact_root=self.artifact_root)

    def stage(self, spec: Spec, stage: str, **kw) -> StageResult:
        tracker = self.tracker(spec, stage)
        result = run_stage(spec, stage, self.storage, callbacks=[tracker], **kw)
        self.log_stage(tracker, result)
        return result

    def log_stage(self, tracker: MlflowTracker, result: StageResult, top_k: int = 3) -> None:
        """The stage's summary on its parent run; the top trials' final checkpoints on their runs."""
        import time

        from mlflow.entities import Metric
        from mlflow.tracking import MlflowClient

        # look runs up by tag: after Tuner.restore, Tune runs its own unpickled copy of the tracker
        client = MlflowClient(self.uri)
        run_id, experiment_id = self._stage_run(client, tracker.stage, tracker.stage_key)
        best = result.best
        client.log_text(run_id, storage.read_text(storage.join(result.path, "results.json")) or "", "results.json")
        if best is not None:
            client.log_metric(run_id, f"best_{result.metric}", best.value)
            client.set_tag(run_id, "raysweep.best_trial", best.trial_id)
            client.log_text(run_id, json.dumps(best.config, indent=1, default=str), "best_config.json")
        for top in result.ranked()[:top_k]:
            found = client.search_runs([experiment_id], f"tags.`raysweep.trial_id` = '{top.trial_id}' and "
                                                        f"tags.`mlflow.parentRunId` = '{run_id}'", max_results=1)
            if top.checkpoint and found and storage.exists(top.checkpoint):
                with tempfile.TemporaryDirectory() as local:  # MLflow logs from local disk
                    storage.copy_tree(top.checkpoint, local)
                    client.log_artifacts(found[0].info.run_id, local, "checkpoint")
        counts: dict = {}
        for t in result.trials:
            counts[t.status] = counts.get(t.status, 0) + 1
        now = int(time.time() * 1000)
        client.log_batch(run_id, metrics=[Metric(f"trials_{k}", v, now, 0) for k, v in counts.items()])
        client.set_terminated(run_id, "FINISHED")

    # -- the staged pipeline --------------------------------------------------------------------------
    def pipeline(self, spec: Spec, until: str = "final", fresh: bool = False) -> dict:
        """Run the pipeline up to `until`, resuming an earlier run of the same spec; one MLflow run
        for the pipeline with the stage runs (and their trials) nested under it."""
        from mlflow.tracking import MlflowClient

        from .pipeline import Pipeline

        def staged(stage_spec, stage, **kw):
            result = self.stage(stage_spec, stage, **kw)
            self.summarize(result, footer=False)
            return result

        pipe = Pipeline(spec, os.path.join(self.runs_dir, "pipelines", spec.name), self.storage, run_stage=staged,
                        on_stage=lambda stage, info: self._pipeline_stage(pipe, spec, stage, info),
                        mirror=storage.join(self.storage_path, "pipelines", spec.name) if self.storage_path else None)
        if fresh:
            pipe.clear()
        state = pipe.open()
        client = MlflowClient(self.uri)
        self.parent_run_id = self._pipeline_run(client, spec, state["id"])
        status = "FAILED"
        try:
            done = pipe.run(until)
            status = "FINISHED"
        finally:
            client.set_terminated(self.parent_run_id, status)
        return done

    def _pipeline_run(self, client, spec: Spec, pipeline_id: str) -> str:
        from .tracking import find_or_create_run, get_experiment

        experiment_id = get_experiment(client, self.experiment, self.artifact_root)
        run_id, existed = find_or_create_run(client, experiment_id, {"raysweep.pipeline": pipeline_id},
                                             f"pipeline-{spec.name}")
        if existed:
            client.update_run(run_id, "RUNNING")
        else:
            client.set_tag(run_id, "raysweep.kind", "pipeline")
            if spec.file:
                client.log_artifact(run_id, spec.file)
            client.log_text(run_id, yaml.safe_dump(spec.payload(), sort_keys=False), "spec_resolved.yaml")
        return run_id

    def _stage_run(self, client, stage: str, key: str) -> tuple[str, str]:
        """(run id, experiment id) of a stage's MLflow run, created if missing."""
        from .tracking import find_or_create_run, get_experiment

        experiment_id = get_experiment(client, self.experiment)
        run_id, _ = find_or_create_run(client, experiment_id, {"raysweep.stage": stage, "raysweep.stage_key": key},
                                       stage, self.parent_run_id)
        return run_id, experiment_id

    def _pipeline_stage(self, pipe, spec: Spec, stage: str, info: dict) -> None:
        """A finished stage's summary in MLflow: on its stage run and on the pipeline run."""
        import time

        from mlflow.entities import Metric, Param
        from mlflow.tracking import MlflowClient

        from .report.plots import lr_range_plot

        client, parent, now = MlflowClient(self.uri), self.parent_run_id, int(time.time() * 1000)
        if stage == "lr_range_test":
            with open(info["file"]) as f:
                result = json.load(f)
            plot = lr_range_plot(result, pipe.file("lr_range.png"))
            print(f"lr range test plot: {plot}")
            run_id, _ = self._stage_run(client, stage, pipe.file(stage))
            metrics, params = [], []
            for r in result["runs"]:
                name = r["optimizer"]
                metrics += [Metric(f"smoothed_loss_{name}", v, now, i) for i, v in enumerate(r["curve"]["smoothed"])]
                metrics += [Metric(f"lr_{name}", v, now, i) for i, v in enumerate(r["curve"]["lrs"])]
                params += [Param(f"{k}_{name}", str(v)) for k, v in r["suggestion"].items() if k != "reason"]
            for i in range(0, len(metrics), 1000):  # MLflow takes at most 1000 metrics per batch
                client.log_batch(run_id, metrics=metrics[i:i + 1000], params=params if i == 0 else [])
            client.set_tag(run_id, "raysweep.note", result["note"][:5000])
            client.log_artifact(run_id, info["file"])
            client.log_artifact(run_id, plot)
            client.set_terminated(run_id, "FINISHED")
            if result["range"]:
                client.log_batch(parent, params=[Param(f"lr_test_{result['param']}_low", str(result["range"][0])),
                                                 Param(f"lr_test_{result['param']}_high", str(result["range"][1]))])
        elif stage in ("coarse", "fine"):
            client.log_metric(parent, f"{stage}_best_{spec.metric.name}", info["best"])
        elif stage == "seeds":
            run_id, _ = self._stage_run(client, stage, stage_dir(self.storage, spec.name, stage))
            client.log_artifact(run_id, info["file"])
            client.log_artifact(parent, info["file"])
            client.log_batch(parent, metrics=[Metric(f"seeds_{spec.metric.name}_{k}", info[k], now, 0)
                                              for k in ("mean", "std") if info[k] is not None])
            client.set_tag(parent, "raysweep.seeds_ranking_stable", str(info["stable"]))
        elif stage == "final":
            client.log_artifact(parent, info["best_config"])
            client.log_batch(parent, metrics=[Metric(k, v, now, 0) for k, v in info["test"].items()],
                             params=[Param(k, str(v)[:6000]) for k, v in info["config"].items()])

    def summarize(self, result: StageResult, k: int = 5, footer: bool = True) -> None:
        print(f"\n{result.stage}: {len(result.trials)} trials; top {k} by {result.metric} ({result.mode}):")
        print(top_table(result, k, list(self.spec_params)))
        if result.best:
            print(f"best config: {json.dumps(result.best.config, default=str)}")
        print(f"results: {storage.join(result.path, 'results.json')}")
        if footer:
            self.where()

    def where(self) -> None:
        print(f"MLflow: experiment '{self.experiment}' at {self.uri}")
        if self.uri.startswith("sqlite:///"):
            print(f"  open it: mlflow ui --backend-store-uri {self.uri} --host 127.0.0.1 --port 5000")
        if self.log_file:
            print(f"Ray's own logs: {self.log_file}")

