"""Hostile and oversized inputs, generated here: each gets one line and exit 2 within seconds, under a
3 GB address-space limit; nothing they ask for runs. Prints each input's time and peak memory."""
import os
import resource
import subprocess
import sys
import time

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from raysweep.spec import ExprError, SpecError, load_spec
from tests.support import ROOT

FUZZ = settings(max_examples=int(os.environ.get("FUZZ_EXAMPLES", 150)), deadline=None,  # FUZZ_EXAMPLES=3000 to dig
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])
HEAD = "name: h\ntask: digits_mlp\nmetric: {name: val_loss, mode: min}\n"
LIMIT = 3 * 2**30


def _limit():
    resource.setrlimit(resource.RLIMIT_AS, (LIMIT, LIMIT))
    resource.setrlimit(resource.RLIMIT_CPU, (60, 60))  # and a bound on time


def validate(path):
    """(returncode, stdout, stderr, seconds, peak RSS in MB) of `raysweep validate path` in its own process,
    its peak read from its own rusage (wait4), not the largest of every child so far."""
    start = time.monotonic()
    proc = subprocess.Popen([sys.executable, "-m", "raysweep", "validate", str(path)], cwd=ROOT, text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, preexec_fn=_limit)
    _, status, usage = os.wait4(proc.pid, 0)  # one short line each way: the pipes cannot fill
    proc.returncode = os.waitstatus_to_exitcode(status)
    out, err = proc.stdout.read(), proc.stderr.read()
    return proc.returncode, out, err, time.monotonic() - start, usage.ru_maxrss / 1024


HOSTILE = {
    "deep_flow_sequence": lambda: HEAD + "fixed: {x: " + "[" * 50_000 + "]" * 50_000 + "}\n",
    "deep_block_mapping": lambda: HEAD + "fixed:\n" + "".join("  " * (i + 1) + f"k{i}:\n" for i in range(80))
    + "  " * 81 + "v: 1\n",
    "ten_megabytes_of_parameters": lambda: HEAD + "parameters:\n" + "".join(
        f"  p{i}: {{distribution: uniform, min: 0, max: 1}}\n" for i in range(200_000)),
    "binary": lambda: bytes(range(256)) * 64,
    "not_utf8": lambda: (HEAD + "description: caf\xe9\n").encode("latin-1"),
    "nested_expression": lambda: HEAD + "parameters:\n  lr: {distribution: uniform, min: 0, max: 1}\nconstraints:\n"
                                 "  - \"" + "(" * 150 + "lr" + ")" * 150 + " > 0\"\n",
    "long_expression": lambda: HEAD + "parameters:\n  lr: {distribution: uniform, min: 0, max: 1}\nconstraints:\n"
                               "  - \"" + " + ".join(["lr"] * 3000) + " > 0\"\n",
    "null_bytes": lambda: HEAD + "description: \"a\x00b\"\n",
}


@pytest.mark.parametrize("name", sorted(HOSTILE))
def test_hostile_file_gets_one_line_and_exit_2_in_bounded_time_and_memory(tmp_path, name):
    content = HOSTILE[name]()
    path = tmp_path / f"{name}.yaml"
    path.write_bytes(content if isinstance(content, bytes) else content.encode())
    code, out, err, seconds, peak = validate(path)
    print(f"{name}: {path.stat().st_size:,} bytes -> exit {code} in {seconds:.1f} s, peak {peak:.0f} MB")
    assert code == 2, out + err
    lines = err.splitlines()
    assert len(lines) == 1 and lines[0].startswith(str(path)) and "Traceback" not in err, err
    assert out == ""


YAMLISH = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=True) | st.text(max_size=20),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=12), children, max_size=4),
    max_leaves=30)
KEYS = ["name", "task", "metric", "parameters", "search", "scheduler", "stopping", "resources", "fixed", "derived",
        "constraints", "stages", "extends", "method", "program", "command"]


@FUZZ
@given(st.dictionaries(st.sampled_from(KEYS) | st.text(max_size=10), YAMLISH, max_size=8) | YAMLISH)
def test_no_generated_spec_lets_anything_but_a_spec_error_escape(tmp_path, data):
    import yaml

    path = tmp_path / "fuzz.yaml"
    path.write_text(yaml.safe_dump(data))
    try:
        load_spec(path)
    except (SpecError, ExprError):
        pass


@FUZZ
@given(st.text(max_size=200))
def test_no_yaml_text_or_set_value_lets_anything_but_a_spec_error_escape(tmp_path, text):
    path = tmp_path / "fuzz.yaml"
    path.write_bytes((HEAD + text).encode("utf-8", errors="replace"))
    for overrides in ((), (f"fixed.x={text}",), (f"{text}=1",)):
        try:
            load_spec(path, overrides)
        except (SpecError, ExprError):
            pass


def test_a_nearly_full_disk_is_refused_before_any_trial_starts(tmp_path):
    import shutil

    mount = tmp_path / "tiny"
    mount.mkdir()
    if subprocess.run(["mount", "-t", "tmpfs", "-o", "size=2m", "tmpfs", str(mount)], capture_output=True).returncode:
        pytest.skip("needs root to mount a 2 MB tmpfs")
    try:
        result = subprocess.run([sys.executable, "-m", "raysweep", "sweep", "search_spaces/digits_mlp.yaml",
                                 "--runs-dir", str(mount / "runs")], cwd=ROOT, capture_output=True, text=True, timeout=120)
        assert result.returncode == 2, result.stdout + result.stderr
        assert result.stderr.strip().endswith("MB free there; a sweep needs at least 200 MB); check the bucket or folder "
                                              "exists and the credentials (AWS_* for s3://), or choose another --runs-dir")
        assert len(result.stderr.strip().splitlines()) == 1 and not (mount / "runs" / "ray").exists()
    finally:
        subprocess.run(["umount", str(mount)])
        shutil.rmtree(mount, ignore_errors=True)
