"""Where things live in MLflow: the experiment, and the pipeline, stage and trial runs found by their
tags (a resumed sweep, or a driver elsewhere, finds the runs an earlier one created)."""
from __future__ import annotations

import hashlib
import os

from ..cache import cached, whole
from ..pipeline.outcomes import BASELINE_KEY

TAG = "raysweep."
KIND_TAG = "mlflow.experimentKind"
REASONS = ("diverged_reason", "timeout_reason")  # why a trial ended early, from its last report: tags
_SKIP = {"status", *REASONS, "resumed_from", "trial_id", "date", "hostname", "node_ip", "pid",
         "experiment_id", "timestamp", "done", "training_iteration", "epoch", "checkpoint_dir_name", "config",
         "should_checkpoint", "time_this_iter_s", "time_total_s", "time_since_restore", "iterations_since_restore"}


def _make_store(path: str) -> None:
    """MLflow's tables and migrations (callers make it whole: `whole` or `cached`)."""
    from mlflow.store.tracking import DEFAULT_LOCAL_FILE_AND_ARTIFACT_PATH
    from mlflow.store.tracking.sqlalchemy_store import SqlAlchemyStore

    SqlAlchemyStore(f"sqlite:///{path}", DEFAULT_LOCAL_FILE_AND_ARTIFACT_PATH).engine.dispose()


def _new_store_template() -> str | None:
    """A new, empty store of this MLflow version, made once and kept in the user's cache: a copy of it
    is a new store in milliseconds instead of MLflow's second or two of migrations. None when the cache
    cannot be written."""
    import mlflow

    return cached(f"mlflow-{mlflow.__version__}-empty.db", _make_store)


def create_sqlite_whole(uri: str) -> None:
    """An sqlite store that does not exist yet is made in a file of its own and renamed into place: a
    driver killed while MLflow migrated a new file left it half made ("duplicate column name: step"),
    and every later run of the sweep failed on it."""
    if not uri.startswith("sqlite:///"):
        return
    path = uri.removeprefix("sqlite:///")
    if os.path.exists(path):
        return
    import shutil

    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    template = _new_store_template()
    if template is None:
        whole(path, _make_store)
        return
    whole(path, lambda tmp: shutil.copyfile(template, tmp))


def runs_page(server: str, experiment_id: str) -> str:
    """The experiment's runs in the stock UI; `workflowType` picks its model-training view (the UI's
    default is GenAI, whose experiment page has no runs)."""
    return f"{server.rstrip('/')}/#/experiments/{experiment_id}/runs?workflowType=machine_learning"


def step_of(result: dict) -> int:
    return int(result.get("epoch", result.get("training_iteration", 0)))


def reason_tags(last: dict) -> dict:
    return {TAG + k: str(last[k])[:5000] for k in REASONS if last.get(k)}


def role_split(config: dict) -> tuple[dict, dict]:
    """A trial's config as MLflow params, and its role tag: the final stage's untuned baseline is marked
    in its config (a mark, not a parameter)."""
    if not config.get(BASELINE_KEY):
        return config, {}
    return {k: v for k, v in config.items() if k != BASELINE_KEY}, {TAG + "role": "baseline"}


def numeric_metrics(result: dict, params=()) -> dict:
    """A report's numbers as MLflow metrics; one named as a parameter (a user's function may report its
    `lr`) becomes `reported_<name>`, so a run never holds a param and a metric of one name."""
    return {f"reported_{k}" if k in params else k: v for k, v in result.items()
            if k not in _SKIP and isinstance(v, (int, float)) and not isinstance(v, bool)}


class RunIndex:
    def __init__(self, client, experiment: str, artifact_root: str | None = None):
        self.client, self.experiment, self.artifact_root = client, experiment, artifact_root
        self._experiment_id: str | None = None
        self._context: dict | None = None

    @property
    def experiment_id(self) -> str:
        if self._experiment_id is None:
            exp = self.client.get_experiment_by_name(self.experiment)
            if exp is not None:
                self._experiment_id = exp.experiment_id
            else:
                root = self.artifact_root
                location = root if not root or "://" in root else "file://" + os.path.abspath(root)
                # the kind MLflow's UI files an experiment under when its GenAI/model-training selector is
                # off; with it on (3.17), the view comes from the URL (runs_page) or the user's last choice
                self._experiment_id = self.client.create_experiment(self.experiment, artifact_location=location,
                                                                    tags={KIND_TAG: "custom_model_development"})
        return self._experiment_id

    def find_or_create(self, tags: dict, name: str, parent: str | None = None) -> tuple[str, bool]:
        """The run carrying these tags (and parent), created if missing; True if it already existed."""
        clauses = [f"tags.`{k}` = '{v}'" for k, v in tags.items()]
        if parent:
            clauses.append(f"tags.`mlflow.parentRunId` = '{parent}'")
        found = self.client.search_runs([self.experiment_id], " and ".join(clauses), max_results=1)
        if found:
            return found[0].info.run_id, True
        return self.create(tags, name, parent), False

    @property
    def context(self) -> dict:
        """mlflow.user, mlflow.source.* and the git commit, as MLflow's fluent API sets them."""
        if self._context is None:
            from mlflow.tracking.context.registry import resolve_tags

            self._context = resolve_tags()
        return self._context

    def create(self, tags: dict, name: str, parent: str | None = None) -> str:
        all_tags = {**self.context, **tags, "mlflow.runName": name, **({"mlflow.parentRunId": parent} if parent else {})}
        return self.client.create_run(self.experiment_id, tags=all_tags, run_name=name).info.run_id

    def logged_steps(self, run_ids: list, metric: str) -> dict[str, set]:
        """The steps each run holds of `metric`: one query on MLflow's sqlite store, else a history per run."""
        from .writer import SqliteRows

        fast = SqliteRows.of(self.client)
        if fast is not None:
            return fast.steps(run_ids, metric)
        return {run: {m.step for m in self.client.get_metric_history(run, metric)} for run in run_ids}

    def stage_run(self, stage: str, stage_key: str, parent: str | None) -> tuple[str, bool]:
        """`stage_key` (the stage's results folder) is kept as a digest: no path of the driver's machine in MLflow."""
        key = hashlib.sha1(stage_key.encode()).hexdigest()[:16]
        run_id, existed = self.find_or_create({TAG + "stage": stage, TAG + "stage_key": key}, stage, parent)
        if not existed:
            self.client.set_tag(run_id, TAG + "kind", "stage")
        return run_id, existed

    def children(self, parent: str) -> list:
        return self.client.search_runs([self.experiment_id], f"tags.`mlflow.parentRunId` = '{parent}'",
                                       max_results=10_000)
