"""Reading a sweep file: YAML with positions, W&B import, `extends`, `--set` overrides, validation."""
from __future__ import annotations

import copy
import logging
import types
import typing
from pathlib import Path

from pydantic import BaseModel, ValidationError

from . import wandb
from .errors import SpecError, allowed, did_you_mean
from .model import At, Spec
from .yaml_io import dotted, load_yaml, locate, parse_value

_REPLACED_WHOLE = {"parameters", "derived", "mutations"}  # entries here replace, not merge, the base's


log = logging.getLogger(__name__)


def _merge(base: dict, child: dict, path=()) -> dict:
    out = dict(base)
    for key, value in child.items():
        if value is None:  # `key: null` in a child file removes the base's entry
            out.pop(key, None)
        elif isinstance(value, dict) and isinstance(out.get(key), dict) and (not path or path[-1] not in _REPLACED_WHOLE):
            out[key] = _merge(out[key], value, path + (key,))
        else:
            out[key] = value
    return out


def _read(file: Path, positions: dict, chain: tuple) -> dict:
    data, pos = load_yaml(file)
    if data is None:
        raise SpecError("file is empty", str(file), fix="write a sweep spec (see README: Spec format)")
    if not isinstance(data, dict):
        raise SpecError(f"a spec is a mapping of keys, got a {type(data).__name__}", str(file), 1, 1,
                        fix="start with `name:`, `task:`, `metric:`, `parameters:`")
    if wandb.is_wandb(data):
        data, pos = wandb.convert(data, pos, str(file))
    base_ref = data.get("extends")
    if base_ref is not None:
        if not isinstance(base_ref, str):
            raise SpecError("must be one file path", *locate(pos, ("extends",)), "extends",
                            "write `extends: base.yaml` (relative to this file)")
        base_file = (file.parent / base_ref).resolve()
        if base_file in chain:
            raise SpecError(f"extends cycle: {' -> '.join(str(c.name) for c in chain + (base_file,))}",
                            *locate(pos, ("extends",)), "extends", "remove one of the `extends:`")
        if not base_file.exists():
            raise SpecError(f"base file '{base_ref}' not found",
                            *locate(pos, ("extends",)), "extends", "give a path relative to this file")
        base = _read(base_file, positions, chain + (base_file,))
        data = _merge(base, {k: v for k, v in data.items() if k != "extends"})
    positions.update(pos)  # the child's places win over the base's
    return data


def _set_override(data: dict, positions: dict, assignment: str, file: Path) -> None:
    key, sep, text = assignment.partition("=")
    if not sep or not key.strip():
        raise SpecError(f"--set '{assignment}' is not KEY=VALUE", fix="write e.g. --set search.num_samples=10")
    value = parse_value(text)
    parts = key.strip().split(".")
    node = data
    for part in parts[:-1]:
        node = node.setdefault(part, {})
        if not isinstance(node, dict):
            raise SpecError(f"--set {key}: '{part}' is not a section", fix="set a leaf key")
    if value is None:  # KEY=null removes the key, as `key: null` does under extends
        node.pop(parts[-1], None)
        return
    node[parts[-1]] = value
    positions[tuple(parts)] = (f"{file} (--set {key.strip()})", None, None)


def load_raw(file: str | Path, overrides: list[str] = ()) -> tuple[dict, dict]:
    """The merged mapping (after W&B import, extends and overrides) and where each key came from."""
    file = Path(file)
    positions: dict = {}
    data = _read(file, positions, (file.resolve(),))
    for assignment in overrides:
        _set_override(data, positions, assignment, file)
    return data, positions


def load_spec(file: str | Path, overrides: list[str] = ()) -> Spec:
    """Load, validate and check a sweep file. Raises SpecError (one line) on any bad input."""
    from .check import check_spec

    data, positions = load_raw(file, overrides)
    try:
        spec = Spec.model_validate(copy.deepcopy(data))
    except ValidationError as e:
        error = _one_line(e, data, positions, str(file))
        if overrides and error.path and "does not apply" in error.message:  # an override changed what applies
            error.message = error.message.removesuffix("; remove it")
            error.fix = f"remove it, or add --set {error.path}=null"
        raise error from None
    spec.located(str(file), positions)
    check_spec(spec)
    log.info("%s: %d parameters, %d constraints, %d derived; %s search", file, len(spec.parameters),
             len(spec.constraints), len(spec.derived), spec.search.method)
    return spec


# ---- pydantic error -> one line ---------------------------------------------------------------

def _unwrap(annotation):
    origin = typing.get_origin(annotation)
    if origin in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(annotation) if a is not type(None)]
        return _unwrap(args[0]) if len(args) == 1 else annotation
    return annotation


def _model_at(path) -> type[BaseModel] | None:
    """The model class that validates the mapping at `path`."""
    model: object = Spec
    for part in path:
        if isinstance(model, type) and issubclass(model, BaseModel):
            field = model.model_fields.get(part)
            if field is None:
                return None
            model = _unwrap(field.annotation)
        elif typing.get_origin(model) is dict:
            model = _unwrap(typing.get_args(model)[1])
        elif typing.get_origin(model) is list:
            model = _unwrap(typing.get_args(model)[0])
        else:
            return None
    return model if isinstance(model, type) and issubclass(model, BaseModel) else None


def _data_path(loc, data) -> tuple:
    """Drop pydantic's own loc parts (union tags, validator names) that are not keys of the data."""
    path, node = [], data
    for part in loc:
        if isinstance(node, dict) and part in node:
            node = node[part]
            path.append(part)
        elif isinstance(node, list) and isinstance(part, int) and part < len(node):
            node = node[part]
            path.append(part)
        elif isinstance(node, dict) and isinstance(part, str) and part.isidentifier() and part not in _PYDANTIC_TAGS:
            path.append(part)  # a missing key: name it
            node = None
    return tuple(path)


_PYDANTIC_TAGS = {"int", "float", "str", "bool", "list", "dict", "none"}


def _one_line(exc: ValidationError, data, positions, file) -> SpecError:
    err = exc.errors(include_url=False)[0]
    path = _data_path(err["loc"], data)
    kind, value = err["type"], err.get("input")
    cause = (err.get("ctx") or {}).get("error")
    if isinstance(cause, At):
        path = _data_path(path + cause.field, data) if all(
            isinstance(p, (str, int)) for p in cause.field) else path
        message, fix = str(cause), None
    elif kind == "extra_forbidden":
        key = path[-1]
        model = _model_at(path[:-1])
        names = list(model.model_fields) if model else []
        message = f"unknown key '{key}'{did_you_mean(key, names)}"
        fix = allowed(names) if names else "remove it"
    elif kind == "missing":
        message, fix = "required key is missing", f"add `{path[-1]}:`"
    elif kind == "literal_error":
        expected = err["ctx"]["expected"]
        options = [o.strip(" '") for o in expected.replace(" or ", ", ").split(",")]
        message = f"{value!r} is not allowed{did_you_mean(value, options)}"
        fix = f"allowed: {expected}"
    elif kind == "value_error":
        message, fix = str(cause) if cause else err["msg"], None
    elif kind in ("int_parsing", "float_parsing", "int_type", "float_type") and any(
            e["type"].startswith("float") for e in exc.errors() if _data_path(e["loc"], data) == path):
        message, fix = f"must be a number, got {value!r}", None  # an int | float field: say so, not "integer"
    else:
        message = f"{err['msg'][0].lower()}{err['msg'][1:]}, got {value!r}" if "input" in err else err["msg"]
        fix = None
    f, line, col = locate(positions, path)
    return SpecError(message, f or file, line, col, dotted(path), fix)
