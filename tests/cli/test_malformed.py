"""Every malformed spec gets exactly its expected one-line error and exit code 2, through the real CLI."""
import re
from pathlib import Path

from tests.support import ROOT, run_cli

CORPUS = sorted((ROOT / "tests/spec/malformed").glob("*.yaml"))


def expected(path: Path) -> str:
    first = path.read_text().splitlines()[0]
    match = re.fullmatch(r"# expect: (.*)", first)
    assert match, f"{path.name} lacks its '# expect:' line"
    return f"{path.relative_to(ROOT)}:{match.group(1)}"


def test_corpus_is_large_enough():
    assert len(CORPUS) >= 30


def test_each_malformed_file_gets_its_exact_line():
    files = [str(p.relative_to(ROOT)) for p in CORPUS]
    result = run_cli("validate", *files)
    assert result.returncode == 2
    assert result.stdout == ""
    lines = result.stderr.splitlines()
    assert "Traceback" not in result.stderr
    assert len(lines) == len(CORPUS), result.stderr  # one line per file, nothing else
    for path, line in zip(CORPUS, lines, strict=False):
        assert line == expected(path)


def test_one_bad_file_among_good_ones_fails_the_run():
    result = run_cli("validate", "search_spaces/digits_mlp.yaml", "tests/spec/malformed/log_bound_zero.yaml")
    assert result.returncode == 2
    assert result.stdout.startswith("search_spaces/digits_mlp.yaml: ok")
    assert result.stderr.strip() == expected(ROOT / "tests/spec/malformed/log_bound_zero.yaml")


def test_unreadable_inputs(tmp_path):
    (tmp_path / "dir.yaml").mkdir()
    result = run_cli("validate", tmp_path / "missing.yaml", tmp_path / "dir.yaml")
    assert result.returncode == 2
    assert result.stderr.splitlines() == [
        f"{tmp_path / 'missing.yaml'}: file not found; check the path",
        f"{tmp_path / 'dir.yaml'}: is a directory, not a spec file; give a .yaml file",
    ]


def test_binary_file(tmp_path):
    bad = tmp_path / "bin.yaml"
    bad.write_bytes(b"\xff\xfe\x00garbage")
    result = run_cli("validate", bad)
    assert result.returncode == 2
    assert result.stderr.startswith(f"{bad}: cannot read file (UnicodeDecodeError")
    assert len(result.stderr.splitlines()) == 1


def test_unknown_option_and_command_are_one_line():
    for args, needle in ((["validate", "--bogus", "x.yaml"], "No such option '--bogus'"),
                         (["valdate", "x.yaml"], "No such command 'valdate'"),
                         (["show", "search_spaces/digits_mlp.yaml", "-n", "-3"], "-n")):
        result = run_cli(*args)
        assert result.returncode == 2, args
        assert len(result.stderr.splitlines()) == 1, result.stderr
        assert needle in result.stderr and "Traceback" not in result.stderr


def test_bad_override_is_one_line():
    result = run_cli("validate", "search_spaces/digits_mlp.yaml", "--set", "search.num_samples=-1")
    assert result.returncode == 2
    assert result.stderr.strip() == ("search_spaces/digits_mlp.yaml (--set search.num_samples): search.num_samples: "
                                     "input should be greater than or equal to 1, got -1")
