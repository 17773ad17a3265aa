"""`raysweep` command line: the one place that wires the layers together."""
from __future__ import annotations

import sys

import click
import yaml

from .spec import SpecError, load_spec


def _fail(message: str) -> None:
    click.echo(f"raysweep: {message}", err=True)
    sys.exit(2)


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="raysweep")
def cli():
    """Staged hyperparameter sweeps for PyTorch on Ray Tune, tracked in MLflow."""


@cli.command()
@click.argument("files", nargs=-1, required=True)
@click.option("--set", "overrides", multiple=True, metavar="KEY=VALUE", help="Override a key, e.g. search.num_samples=5.")
def validate(files, overrides):
    """Check sweep files; one line per file. Exit 2 if any is invalid."""
    bad = 0
    for file in files:
        try:
            spec = load_spec(file, overrides)
        except SpecError as e:
            click.echo(str(e), err=True)
            bad += 1
            continue
        click.echo(f"{file}: ok: {summary(spec)}")
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

    spec = load_spec(file, overrides)
    space = Space(spec)
    resolved = spec.model_dump(mode="json", exclude_none=True, exclude={"extends", "method"})
    click.echo(f"# {file} resolved\n" + yaml.safe_dump(resolved, sort_keys=False), nl=False)
    rng = np.random.default_rng(seed)
    points = space.grid()
    samples = []
    for i in range(num):
        config = space.sample_feasible(rng, points[i % len(points)])
        if config is None:
            _fail(f"{file}: constraints: no feasible config found for sample {i + 1}")
        samples.append(space.with_derived(config))
    click.echo(f"# {num} sampled trial configs (derived values applied)\n" + yaml.safe_dump(samples, sort_keys=False), nl=False)


def summary(spec) -> str:
    params = spec.parameters
    cond = sum(p.parent is not None for p in params.values())
    s = spec.search
    return (f"task {spec.task}, {len(params)} parameters ({cond} conditional), {len(spec.constraints)} constraints, "
            f"{len(spec.derived)} derived; {s.method} x {s.num_samples}, scheduler {spec.scheduler.type}; "
            f"metric {spec.metric.name} ({spec.metric.mode})")


def main(argv=None) -> None:
    try:
        cli.main(args=argv, prog_name="raysweep", standalone_mode=False)
    except SpecError as e:
        click.echo(str(e), err=True)
        sys.exit(2)
    except click.UsageError as e:
        command = e.ctx.command_path if e.ctx else "raysweep"
        _fail(f"{command}: {e.format_message().rstrip('.')}; see `{command} --help`")
    except click.ClickException as e:
        _fail(e.format_message())
    except click.exceptions.Abort:
        _fail("aborted")
    except KeyboardInterrupt:
        _fail("interrupted")
