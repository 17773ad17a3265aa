"""Resource math for CPU and GPU layouts, checked as tables (no GPU needed)."""
import pytest
import torch

from raysweep.spec.model import Resources
from raysweep.sweep.resources import (
    nodes_of_config,
    plan,
    scaling_config,
    tune_resources,
    unsatisfiable,
    waiting_reason,
)
from raysweep.train.device import local_device, precision_for

LAPTOP = [{"CPU": 2}]
GPU_BOX = [{"CPU": 16, "GPU": 1}]
FOUR_GPU_NODES = [{"CPU": 8, "GPU": 1}] * 4
DGX = [{"CPU": 96, "GPU": 8}]


def test_one_worker_trial_runs_in_its_own_process():
    p = plan(Resources(workers_per_trial=1, cpus_per_worker=0.25))
    assert p.worker is None and p.bundles == [{"CPU": 0.25}]
    assert tune_resources(p) == {"cpu": 0.25} and not p.use_gpu
    assert waiting_reason(p, [{"CPU": 0.25}]) == "" and waiting_reason(p, [{"CPU": 0.2}]).startswith("needs 0.25 CPU")


def test_fractional_gpus_share_a_gpu_between_small_trials():
    p = plan(Resources(workers_per_trial=1, cpus_per_worker=1, gpus_per_worker=0.25))
    assert tune_resources(p) == {"cpu": 1, "gpu": 0.25} and p.use_gpu
    assert unsatisfiable(p, GPU_BOX) is None and waiting_reason(p, [{"CPU": 1, "GPU": 0.25}]) == ""


def test_ddp_trial_places_a_driver_bundle_and_one_bundle_per_worker():
    p = plan(Resources(workers_per_trial=2, cpus_per_worker=4, gpus_per_worker=1, cpus_per_trial=0.25))
    assert p.bundles == [{"CPU": 0.25}, {"CPU": 4, "GPU": 1}, {"CPU": 4, "GPU": 1}]
    assert p.total() == {"CPU": 8.25, "GPU": 2}
    cfg = scaling_config(p)
    assert (cfg.num_workers, cfg.use_gpu, cfg.resources_per_worker) == (2, True, {"CPU": 4, "GPU": 1})
    assert unsatisfiable(p, FOUR_GPU_NODES) is None  # workers spread over nodes
    assert unsatisfiable(p, [{"CPU": 8, "GPU": 1}]) is not None  # two GPU workers never fit one 1-GPU node


def test_impossible_requests_say_why():
    two_gpu_trial = plan(Resources(workers_per_trial=2, gpus_per_worker=1))
    assert unsatisfiable(two_gpu_trial, GPU_BOX) == (
        "one trial needs 2.25 CPU, 2 GPU in 3 bundles and the cluster has 16 CPU, 1 GPU "
        "(largest node 16 CPU, 1 GPU); lower workers_per_trial or the per-worker resources")
    big_worker = plan(Resources(workers_per_trial=1, gpus_per_worker=8))
    assert unsatisfiable(big_worker, FOUR_GPU_NODES) == (
        "a trial needs 1 CPU, 8 GPU on one node and the largest node has 8 CPU, 1 GPU; "
        "lower the per-worker resources or add larger nodes")
    assert unsatisfiable(plan(Resources(gpus_per_worker=1)), LAPTOP).startswith("a trial needs 1 CPU, 1 GPU")


def test_custom_resources_and_strict_spread_are_placed_per_node():
    head_and_two = [{"CPU": 1}, {"CPU": 1, "worker": 1}, {"CPU": 1, "worker": 1}]
    on_workers = plan(Resources(cpus_per_worker=0.5, custom={"worker": 0.5}))
    assert on_workers.trial == {"CPU": 0.5, "worker": 0.5} and tune_resources(on_workers) == {"cpu": 0.5, "worker": 0.5}
    assert waiting_reason(on_workers, [{"CPU": 1}]) != ""  # none on the head, which has no `worker`
    assert unsatisfiable(on_workers, [{"CPU": 8}]) == (
        "a trial needs 0.5 CPU, 0.5 worker on one node and the largest node has 8 CPU, 0 worker; "
        "lower the per-worker resources or add larger nodes")
    spread = plan(Resources(workers_per_trial=3, cpus_per_worker=0.5, custom={"worker": 0.5}, placement="strict_spread"))
    assert spread.placement == "strict_spread"
    assert unsatisfiable(spread, head_and_two).startswith("placement strict_spread puts each of 3 workers on its own "
                                                          "node and 2 of 3 nodes can hold one")
    assert unsatisfiable(plan(Resources(workers_per_trial=2, cpus_per_worker=0.5, custom={"worker": 0.5},
                                        placement="strict_spread")), head_and_two) is None


def test_whole_cpu_ddp_workers_cannot_fit_two_cores_but_fractions_run_two_trials():
    # the deadlock of a nested trainer asking for whole CPUs on 2 cores is caught before the run
    whole = plan(Resources(workers_per_trial=2, cpus_per_worker=1, cpus_per_trial=0.25))
    assert unsatisfiable(whole, LAPTOP) is not None
    fractional = plan(Resources(workers_per_trial=2, cpus_per_worker=0.375, cpus_per_trial=0.25))
    assert unsatisfiable(fractional, LAPTOP) is None


@pytest.mark.parametrize("precision, device, expected", [
    ("fp32", "cpu", (False, None, False)), ("bf16", "cpu", (True, torch.bfloat16, False)),
    ("bf16", "cuda", (True, torch.bfloat16, False)), ("fp16", "cuda", (True, torch.float16, True)),
])
def test_autocast_settings(precision, device, expected):
    p = precision_for(precision, device)
    assert (p.enabled, p.dtype, p.scaler) == expected and p.device_type == device


def test_fp16_on_cpu_and_gpu_without_cuda_are_refused():
    with pytest.raises(ValueError, match="use bf16 on CPU"):
        precision_for("fp16", "cpu")
    assert local_device(False) == torch.device("cpu")
    if not torch.cuda.is_available():
        with pytest.raises(RuntimeError, match="torch sees none"):
            local_device(True)


def test_an_autoscalers_node_types_count_up_to_their_max_workers():
    config = {"max_workers": 8, "available_node_types": {
        "head": {"resources": {}, "max_workers": 0},
        "gpu": {"resources": {"CPU": 4, "GPU": 1, "worker": 1}, "max_workers": 3},
        "cpu": {"resources": {"CPU": 2, "object_store_memory": 10**8}}}}  # max_workers: the cluster's
    nodes = nodes_of_config(config)
    assert nodes.count({"CPU": 4, "GPU": 1, "worker": 1}) == 3 and nodes.count({"CPU": 2}) == 8
    gpu_trial = plan(Resources(workers_per_trial=2, gpus_per_worker=1, custom={"worker": 1}, placement="strict_spread"))
    head_only = [{"CPU": 8}]
    assert unsatisfiable(gpu_trial, head_only) is not None and unsatisfiable(gpu_trial, head_only + nodes) is None
