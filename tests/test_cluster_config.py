"""cluster.yaml is a config `ray up` accepts (Ray's own schema check; no cloud SDK needed)."""
import yaml
from ray.autoscaler._private.util import prepare_config, validate_config

from tests.conftest import ROOT


def test_cluster_yaml_passes_rays_validation():
    cfg = prepare_config(yaml.safe_load((ROOT / "cluster.yaml").read_text()))
    validate_config(cfg)  # raises on unknown keys, bad node types, min > max workers
    assert cfg["head_node_type"] == "head" and cfg["available_node_types"]["gpu_worker"]["max_workers"] == 8
    assert any("TORCH_SPEC" in c for c in cfg["setup_commands"])  # GPU torch instead of the CPU pin
