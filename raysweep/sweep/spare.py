"""CPUs a sweep leaves free at its end go to the trials still running. Once a stage has no trial left to
start, the trials running on a node share its CPUs: more torch threads, within a second. On the
default spec's sweep an ASHA-promoted last trial otherwise trained alone on one of two cores for its
final 15 s (bench/suite.py, B7); two threads run its epochs 1.4x faster there.

Only raysweep's own single-worker trainer on CPU takes them (a user's function, a DDP job or a GPU
trial keeps what Ray gave it). The driver publishes each running trial's thread count in Ray's key-value
store (the GCS's, where Ray's own libraries keep such state), and a trial reads its own at each epoch's
start and about once a second during it: a GCS round trip, about a millisecond. It assumes the stage's
trials are what runs on those nodes; `resources.spare_cpus: false` turns it off."""
from __future__ import annotations

from ray.tune import Callback

NAMESPACE = "raysweep_spare_cpus"


def base_threads(cpus: float) -> int:
    """The threads Ray gives a worker of `cpus` CPUs (its OMP_NUM_THREADS)."""
    return max(1, int(cpus))


def _kv():
    from ray.experimental import internal_kv

    return internal_kv


def register(trial_id: str) -> None:
    """In the trial, at its start: the node it runs on, for the driver to count trials per node; a count
    left by an earlier attempt (a driver killed before it cleaned up) is dropped."""
    import ray

    kv = _kv()
    kv._internal_kv_del(f"threads/{trial_id}", namespace=NAMESPACE)
    kv._internal_kv_put(f"node/{trial_id}", ray.get_runtime_context().get_node_id(), namespace=NAMESPACE)


def threads(trial_id: str) -> int | None:
    """In the trial: the threads the driver gave it, None if none."""
    value = _kv()._internal_kv_get(f"threads/{trial_id}", namespace=NAMESPACE)
    return int(value) if value else None


class SpareCpus(Callback):
    """On the driver: once all `expected` trials exist and none waits to start (or to resume), each
    running trial gets max(its own, the node's CPUs / the stage's trials running there) threads."""

    def __init__(self, expected: int, cpus: float):
        self.expected, self.base = expected, base_threads(cpus)
        self.running: tuple = ()
        self.given: dict[str, int] = {}

    def __getstate__(self):  # pickled with the experiment: a restored driver starts afresh
        return {**self.__dict__, "running": (), "given": {}}

    def on_step_end(self, iteration, trials, **info):
        if len(trials) < self.expected or any(t.status in ("PENDING", "PAUSED") for t in trials):
            return
        running = tuple(sorted(t.trial_id for t in trials if t.status == "RUNNING"))
        if running == self.running:  # the common case: nothing to do between trials' ends
            return
        import ray

        kv = _kv()
        on_node: dict = {}
        for trial_id in running:
            node = kv._internal_kv_get(f"node/{trial_id}", namespace=NAMESPACE)
            if not node:
                return  # a trial that has not said where it runs yet: asked again at the next step
            on_node.setdefault(node.decode(), []).append(trial_id)
        self.running = running
        cpus = {n["NodeID"]: n["Resources"].get("CPU", 0) for n in ray.nodes() if n.get("Alive")}
        for node, ids in on_node.items():
            share = max(self.base, int(cpus.get(node, 0) // len(ids)))
            for trial_id in ids:
                if self.given.get(trial_id, self.base) != share:
                    kv._internal_kv_put(f"threads/{trial_id}", str(share), namespace=NAMESPACE)
                    self.given[trial_id] = share

    def on_experiment_end(self, trials, **info):
        kv = _kv()
        for t in trials:
            for key in (f"node/{t.trial_id}", f"threads/{t.trial_id}"):
                kv._internal_kv_del(key, namespace=NAMESPACE)
