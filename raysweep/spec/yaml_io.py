"""YAML loading that remembers where every key and value came from, so errors can point at them."""
from __future__ import annotations

import re
from pathlib import Path

import yaml

from .errors import SpecError

Path_ = tuple  # a field path: keys (str) and list indices (int)


class _Loader(yaml.SafeLoader):
    """SafeLoader that reads `1e-5` as a float (YAML 1.1 needs a dot: PyYAML would give a string)."""


_FLOAT = re.compile(
    r"""^(?:[-+]?(?:[0-9][0-9_]*)\.[0-9_]*(?:[eE][-+]?[0-9]+)?
    |[-+]?(?:[0-9][0-9_]*)(?:[eE][-+]?[0-9]+)
    |\.[0-9][0-9_]*(?:[eE][-+]?[0-9]+)?
    |[-+]?\.(?:inf|Inf|INF)
    |\.(?:nan|NaN|NAN))$""",
    re.X,
)
_Loader.yaml_implicit_resolvers = {k: list(v) for k, v in yaml.SafeLoader.yaml_implicit_resolvers.items()}
for _first in list("-+0123456789."):
    _Loader.yaml_implicit_resolvers[_first] = [
        (tag, rx) for tag, rx in _Loader.yaml_implicit_resolvers.get(_first, []) if tag != "tag:yaml.org,2002:float"
    ]
_Loader.add_implicit_resolver("tag:yaml.org,2002:float", _FLOAT, list("-+0123456789."))


class YamlError(SpecError):
    """Text that is not YAML (as opposed to YAML past the bounds below)."""


# What a spec file may expand to: real specs are a few KB; a file past these is refused in one line
# before it can take the machine's memory or time (aliases can make a small file expand exponentially).
MAX_BYTES = 1_000_000
MAX_VALUES = 100_000
MAX_DEPTH = 50


class _Budget:
    def __init__(self, file):
        self.file, self.values = file, 0

    def spend(self, node, path):
        self.values += 1
        where = (self.file, node.start_mark.line + 1, node.start_mark.column + 1, _dotted(path))
        if self.values > MAX_VALUES:
            raise SpecError(f"the file expands to more than {MAX_VALUES:,} values (YAML aliases?)", *where,
                            fix="write the spec out without alias chains")
        if len(path) > MAX_DEPTH:
            raise SpecError(f"nested more than {MAX_DEPTH} levels deep", *where, fix="flatten the spec")


def _build(loader, node, path, positions, file, budget=None):
    budget = budget or _Budget(file)
    budget.spend(node, path)
    if not node.tag.startswith("tag:yaml.org,2002:") or node.tag.startswith("tag:yaml.org,2002:python/"):
        raise SpecError(f"YAML tag {node.tag.replace('tag:yaml.org,2002:', '!!')} is not allowed", file,
                        node.start_mark.line + 1, node.start_mark.column + 1, _dotted(path),
                        "raysweep reads plain YAML: remove the tag")
    positions[path] = (file, node.start_mark.line + 1, node.start_mark.column + 1)
    if isinstance(node, yaml.MappingNode):
        out = {}
        for key_node, value_node in node.value:
            key = loader.construct_object(key_node) if isinstance(key_node, yaml.ScalarNode) else None
            if not isinstance(key, (str, int, float, bool)):
                raise SpecError("keys must be plain names", file, key_node.start_mark.line + 1,
                                key_node.start_mark.column + 1, _dotted(path))
            key = str(key)
            if key in out:
                raise SpecError(f"duplicate key '{key}'", file, key_node.start_mark.line + 1,
                                key_node.start_mark.column + 1, _dotted(path), "keep one of them")
            out[key] = _build(loader, value_node, path + (key,), positions, file, budget)
            # keys point at the key itself: "unknown key" errors land on the right column
            positions[path + (key,)] = (file, key_node.start_mark.line + 1, key_node.start_mark.column + 1)
        return out
    if isinstance(node, yaml.SequenceNode):
        return [_build(loader, n, path + (i,), positions, file, budget) for i, n in enumerate(node.value)]
    try:
        return loader.construct_object(node, deep=True)
    except (ValueError, TypeError, OverflowError) as e:  # PyYAML's own resolvers accept a few values it cannot build
        raise SpecError(f"cannot read the value `{node.value}` ({e})", file, node.start_mark.line + 1,
                        node.start_mark.column + 1, _dotted(path), "quote it to make it a string") from None


def load_yaml(file: str | Path) -> tuple[object, dict]:
    """Return (data, positions) where positions maps a field path to (file, line, col)."""
    name = str(file)
    try:
        size = Path(file).stat().st_size
        if size > MAX_BYTES:
            raise SpecError(f"{size:,} bytes is too large for a spec (at most {MAX_BYTES:,})", name,
                            fix="a spec is a few KB: check the path")
        text = Path(file).read_text(encoding="utf-8")
    except FileNotFoundError:
        raise SpecError("file not found", name, fix="check the path") from None
    except IsADirectoryError:
        raise SpecError("is a directory, not a spec file", name, fix="give a .yaml file") from None
    except (OSError, UnicodeDecodeError) as e:
        raise SpecError(f"cannot read file ({e.__class__.__name__}: {e})", name) from None
    return parse_yaml(text, name)


def parse_yaml(text: str, name: str | None = None) -> tuple[object, dict]:
    """(data, positions) of YAML text, within the budget above."""
    try:
        loader = _Loader(text)
        node = loader.get_single_node()
    except RecursionError:
        raise SpecError(f"nested more than {MAX_DEPTH} levels deep", name, fix="flatten the spec") from None
    except yaml.MarkedYAMLError as e:
        mark = e.problem_mark or e.context_mark
        what = " ".join(str(p) for p in (e.context, e.problem) if p)
        if e.context_mark and e.problem_mark and e.context_mark.line != e.problem_mark.line:
            what += f" (the {e.context.split()[-1] if e.context else 'block'} opened at line {e.context_mark.line + 1})"
        raise YamlError(f"YAML syntax error: {what}", name, mark.line + 1 if mark else None,
                        mark.column + 1 if mark else None, fix="fix the YAML syntax at this place") from None
    except yaml.YAMLError as e:  # e.g. a control character: the reader's first line says which
        raise YamlError(f"YAML error: {str(e).splitlines()[0]}", name, fix="remove it") from None
    positions: dict = {}
    if node is None:
        return None, positions
    try:
        data = _build(loader, node, (), positions, name)
    except yaml.constructor.ConstructorError as e:
        mark = e.problem_mark
        raise YamlError(f"YAML error: {e.problem}", name, mark.line + 1 if mark else None,
                        mark.column + 1 if mark else None) from None
    return data, positions


def parse_value(text: str):
    """A command-line value read like a YAML scalar (so `3e-4` is a number); unparsable text stays text."""
    try:
        return parse_yaml(text, "--set")[0]
    except YamlError:
        return text


def _dotted(path) -> str:
    out = ""
    for part in path:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out


dotted = _dotted


def locate(positions: dict, path) -> tuple[str | None, int | None, int | None]:
    """Position of the longest known prefix of path."""
    path = tuple(path)
    while True:
        if path in positions:
            return positions[path]
        if not path:
            return None, None, None
        path = path[:-1]
