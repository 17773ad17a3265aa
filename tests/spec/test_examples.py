"""The shipped example specs validate, and `show` prints configs that satisfy their constraints."""
import yaml

from raysweep.spec import Expr, load_spec
from tests.support import ROOT, run_cli

EXAMPLES = sorted(str(p.relative_to(ROOT)) for p in (ROOT / "search_spaces").glob("*.yaml"))


def test_every_example_validates():
    assert len(EXAMPLES) >= 5
    result = run_cli("validate", *EXAMPLES)
    assert result.returncode == 0, result.stderr
    assert [line.split(": ok: ")[0] for line in result.stdout.splitlines()] == EXAMPLES


def test_show_samples_feasible_configs_with_derived_values():
    result = run_cli("show", "search_spaces/char_lm.yaml", "-n", "8", "--seed", "5")
    assert result.returncode == 0, result.stderr
    resolved_text, samples_text = result.stdout.split("# 8 sampled trial configs (derived values applied)\n")
    resolved = yaml.safe_load(resolved_text)
    assert resolved["name"] == "char_lm" and resolved["search"]["method"] == "hyperopt"
    samples = yaml.safe_load(samples_text)
    assert len(samples) == 8
    constraints = [Expr(c) for c in load_spec(ROOT / "search_spaces/char_lm.yaml").constraints]
    for config in samples:
        assert config["total_steps"] == 6 * config["steps_per_epoch"]  # derived: epochs * steps_per_epoch
        assert all(c(config) for c in constraints)
    assert len({(c["model_dim"], c["num_heads"]) for c in samples}) > 1


def test_show_resolves_extends():
    result = run_cli("show", "search_spaces/digits_mlp_cluster.yaml", "-n", "2")
    assert result.returncode == 0, result.stderr
    resolved = yaml.safe_load(result.stdout.split("# 2 sampled")[0])
    assert resolved["resources"]["workers_per_trial"] == 2 and resolved["resources"]["gpus_per_worker"] == 1
    assert resolved["parameters"]["optimizer"]["values"] == ["sgd", "adam", "adamw"]  # from the base
    assert resolved["fixed"]["precision"] == "bf16" and resolved["fixed"]["schedule"] == "cosine"  # merged


def test_readme_annotated_spec_is_valid(tmp_path):
    readme = (ROOT / "README.md").read_text()
    block = readme.split("## Spec format", 1)[1].split("```yaml\n", 1)[1].split("```", 1)[0]
    (tmp_path / "base.yaml").write_text("name: base\ntask: digits_mlp\nmetric: {name: val_loss, mode: min}\n")
    (tmp_path / "readme.yaml").write_text(block)
    result = run_cli("validate", tmp_path / "readme.yaml")
    assert result.returncode == 0, result.stderr
    spec = load_spec(tmp_path / "readme.yaml")
    assert spec.parameters["momentum"].when == {"optimizer": "sgd"} and spec.derived["lr"].startswith("base_lr")
