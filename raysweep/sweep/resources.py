"""Resource math: what a trial asks Ray for, whether a cluster can ever satisfy it, and how many
trials fit at once. Pure functions over plain dicts, so GPU layouts are testable on a CPU machine."""
from __future__ import annotations

import json
import os
from dataclasses import dataclass


class ClusterError(RuntimeError):
    """The Ray cluster cannot be used (unreachable, refuses our token, lacks resources): one line."""


@dataclass(frozen=True)
class Plan:
    workers: int
    trial: dict          # the Tune trial's own bundle: {"CPU": .., "GPU": .., custom resources}
    worker: dict | None  # each Ray Train worker's bundle, None for an in-process trial
    placement: str = "pack"  # how a trial's DDP workers spread over nodes (Ray's placement strategies)

    @property
    def use_gpu(self) -> bool:
        return bool((self.worker or self.trial).get("GPU"))

    @property
    def bundles(self) -> list[dict]:
        """Every bundle one trial places: its own, then one per DDP worker."""
        return [self.trial] + [self.worker] * (self.workers if self.worker else 0)

    def total(self) -> dict:
        out: dict = {}
        for b in self.bundles:
            for k, v in b.items():
                out[k] = out.get(k, 0) + v
        return out


def plan(resources) -> Plan:
    """1 worker: the loop runs in the trial's own process with the worker's resources (no extra
    processes or placement groups). More: a small driver bundle plus one bundle per DDP worker."""
    worker = {"CPU": resources.cpus_per_worker, "GPU": resources.gpus_per_worker, **resources.custom}
    worker = {k: v for k, v in worker.items() if v}
    if resources.workers_per_trial == 1:
        return Plan(1, worker, None)
    return Plan(resources.workers_per_trial, {"CPU": resources.cpus_per_trial}, worker, resources.placement)


def scaling_config(p: Plan):
    from ray.train import ScalingConfig

    return ScalingConfig(num_workers=p.workers, use_gpu=p.use_gpu, resources_per_worker=dict(p.worker),
                         placement_strategy=p.placement.upper())


def tune_resources(p: Plan) -> dict:
    """Tune's resource dict for the trial's own process (cpu/gpu lower-case as tune.with_resources takes;
    other keys are custom resources)."""
    return {k.lower() if k in ("CPU", "GPU") else k: v for k, v in p.trial.items()} or {"cpu": 0}


def _pack(bundles: list[dict], free: list[dict]) -> dict | None:
    """Place bundles first-fit, largest first, taking from `free`; the first that fits nowhere, or None."""
    for bundle in sorted(bundles, key=lambda b: (-b.get("GPU", 0), -b.get("CPU", 0))):
        home = next((n for n in free if all(n.get(k, 0) + 1e-9 >= v for k, v in bundle.items())), None)
        if home is None:
            return bundle
        for k, v in bundle.items():
            home[k] -= v
    return None


def unsatisfiable(p: Plan, nodes: list[dict]) -> str | None:
    """Why no cluster of these nodes can ever run one trial, or None. Each bundle must fit on one node;
    all of a trial's bundles must fit on the cluster at once."""
    if not nodes:
        return "the cluster has no nodes"
    if p.worker and p.placement == "strict_spread":
        homes = sum(all(n.get(k, 0) + 1e-9 >= v for k, v in p.worker.items()) for n in nodes)
        if homes < p.workers:
            return (f"placement strict_spread puts each of {p.workers} workers on its own node and {homes} of "
                    f"{len(nodes)} nodes can hold one ({_fmt(p.worker)}); use placement: spread or fewer workers")
    bundle = _pack(p.bundles, [dict(n) for n in nodes])
    if bundle is None:
        return None
    biggest = {k: max(n.get(k, 0) for n in nodes) for k in bundle}
    if all(biggest[k] + 1e-9 >= v for k, v in bundle.items()):
        total = {k: sum(n.get(k, 0) for n in nodes) for k in p.total()}
        largest = max(nodes, key=lambda n: tuple(n.get(k, 0) for k in p.total()))
        return (f"one trial needs {_fmt(p.total())} in {len(p.bundles)} bundles and the cluster has "
                f"{_fmt(total)} (largest node {_fmt({k: largest.get(k, 0) for k in p.total()})}); "
                "lower workers_per_trial or the per-worker resources")
    return (f"a {'worker' if p.worker else 'trial'} needs {_fmt(bundle)} on one node and the largest node "
            f"has {_fmt(biggest)}; lower the per-worker resources or add larger nodes")


def waiting_reason(p: Plan, free: list[dict]) -> str:
    """Why one more trial cannot start now, from each node's free resources; "" if it fits."""
    if not free or _pack(p.bundles, [dict(n) for n in free]) is None:
        return ""
    largest = max(free, key=lambda n: tuple(n.get(k, 0) for k in sorted(p.total(), key=lambda k: k != "GPU")))
    return f"needs {_fmt(p.total())}; largest free node has {_fmt({k: largest.get(k, 0) for k in p.total()})}"


def free_nodes() -> list[dict]:
    """Each alive node's free resources now (Ray's own view; empty if it cannot say)."""
    try:
        from ray._private.state import available_resources_per_node

        return list(available_resources_per_node().values())
    except Exception:  # noqa: BLE001 - a progress line must never fail a sweep
        return []


def _fmt(resources: dict) -> str:
    return ", ".join(f"{v:g} {k}" for k, v in sorted(resources.items())) or "nothing"


AUTOSCALING_CONFIG_VAR = "RAYSWEEP_AUTOSCALING_CONFIG"
RAY_UP_CONFIG = "~/ray_bootstrap_config.yaml"  # where `ray up` leaves the cluster's config on the head


def nodes_of_config(config: dict, limit: int = 64) -> list[dict]:
    """The worker nodes an autoscaler with this `ray up` config may add: each type up to its max_workers."""
    out = []
    for node_type in (config.get("available_node_types") or {}).values():
        resources = {k: v for k, v in (node_type.get("resources") or {}).items() if k != "object_store_memory"}
        out += [resources] * min(int(node_type.get("max_workers", config.get("max_workers", 0)) or 0), limit)
    return out


def autoscaler_nodes() -> list[dict] | None:
    """Nodes the connected cluster's autoscaler may still add: [] when it has no autoscaler, None when it
    has one whose config cannot be read here (RAYSWEEP_AUTOSCALING_CONFIG, else the `ray up` file)."""
    import yaml
    from ray._private import ray_constants
    from ray.experimental.internal_kv import _internal_kv_get, _internal_kv_initialized

    try:  # an autoscaler reports on the cluster in the GCS
        status = _internal_kv_initialized() and _internal_kv_get(ray_constants.DEBUG_AUTOSCALING_STATUS)
        report = json.loads(status).get("autoscaler_report") if status else None
        if not report:
            return []
        # the read-only monitor of a `ray.init` instance reports too, each node its own type "node_<id>":
        # it launches nothing
        if all(kind == f"node_{node}" for node, kind in (report.get("node_type_mapping") or {}).items()):
            return []
    except Exception:  # noqa: BLE001 - no answer: judge by the nodes there are
        return []
    path = os.path.expanduser(os.environ.get(AUTOSCALING_CONFIG_VAR) or RAY_UP_CONFIG)
    try:
        with open(path) as f:
            return nodes_of_config(yaml.safe_load(f))
    except (OSError, yaml.YAMLError, AttributeError, TypeError, ValueError):
        return None


def ray_nodes() -> list[dict]:
    """The alive nodes' total resources (CPU, GPU, custom) of the connected Ray cluster."""
    import ray

    return [{k: v for k, v in n["Resources"].items() if not k.startswith(("node:", "memory", "object_store"))}
            for n in ray.nodes() if n["Alive"]]


__all__ = ["ClusterError", "Plan", "autoscaler_nodes", "free_nodes", "nodes_of_config", "plan", "ray_nodes",
           "scaling_config", "tune_resources", "unsatisfiable", "waiting_reason"]
