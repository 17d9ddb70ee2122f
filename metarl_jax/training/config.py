"""Algorithm configs from dicts, JSON/TOML files and ``key=value`` strings.

An algorithm's ``Config`` is a frozen dataclass whose fields all have
defaults. :func:`config_from_dict` builds one from plain data, checking every
key and coercing every value to its field's annotated type, so a typo or a
wrong type fails loudly *before* anything is compiled, with a message that
names the key and lists the valid ones. The same functions serve the Python
API (``train(..., config={"inner_lr": 0.05})``), config files and the CLI's
``--set key=value``.
"""

from __future__ import annotations

import dataclasses
import json
import sys
import types
import typing
import warnings
from pathlib import Path
from typing import Any, Iterable, Mapping

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - exercised only on Python 3.10
    import tomli as tomllib


class ConfigError(ValueError):
    """A config key, value or file is invalid; the message names the culprit."""


def parse_value(text: str) -> Any:
    """Parse a command-line value: JSON where possible, else the raw string.

    ``"0.1" -> 0.1``, ``"[64, 64]" -> [64, 64]``, ``"true" -> True``,
    ``"trpo" -> "trpo"``.
    """
    try:
        return json.loads(text)
    except json.JSONDecodeError:
        return text


def parse_assignments(items: Iterable[str], what: str = "--set") -> dict[str, Any]:
    """``["a=1", "net.hidden=[64,64]"]`` -> ``{"a": 1, "net": {"hidden": [64, 64]}}``.

    Dotted keys address fields of nested dataclass configs.
    """
    out: dict[str, Any] = {}
    for item in items:
        key, sep, text = item.partition("=")
        key = key.strip()
        if not sep or not key:
            raise ConfigError(f"{what} expects key=value, got {item!r}")
        *parents, leaf = key.split(".")
        node = out
        for part in parents:
            node = node.setdefault(part, {})
            if not isinstance(node, dict):
                raise ConfigError(f"{what} sets both {part!r} and a field inside it")
        node[leaf] = parse_value(text)
    return out


def load_config_file(path: str | Path) -> dict[str, Any]:
    """Read a config dict from a ``.json`` or ``.toml`` file."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"config file {str(path)!r} does not exist")
    suffix = path.suffix.lower()
    try:
        if suffix == ".json":
            data = json.loads(path.read_text())
        elif suffix == ".toml":
            data = tomllib.loads(path.read_text())
        else:
            raise ConfigError(f"config file {str(path)!r} must end in .json or .toml")
    except (json.JSONDecodeError, tomllib.TOMLDecodeError) as err:
        raise ConfigError(f"cannot parse config file {str(path)!r}: {err}") from None
    if not isinstance(data, dict):
        raise ConfigError(f"config file {str(path)!r} must contain a table/object of fields")
    return data


def merge(base: Mapping[str, Any], override: Mapping[str, Any]) -> dict[str, Any]:
    """Recursive dict merge; values in ``override`` win."""
    out = dict(base)
    for key, value in override.items():
        if isinstance(value, Mapping) and isinstance(out.get(key), Mapping):
            out[key] = merge(out[key], value)
        else:
            out[key] = value
    return out


def field_types(cls: type) -> dict[str, Any]:
    """``{field name: resolved type annotation}`` of dataclass ``cls``."""
    hints = typing.get_type_hints(cls)
    return {f.name: hints.get(f.name, Any) for f in dataclasses.fields(cls) if f.init}


def type_name(tp: Any) -> str:
    """Readable name of a type annotation (``tuple[int, ...]``, ``float``)."""
    if isinstance(tp, type) and not typing.get_args(tp):
        return tp.__name__
    return str(tp).replace("typing.", "")


def config_from_dict(cls: type, data: Mapping[str, Any], prefix: str = "") -> Any:
    """Build dataclass ``cls`` from ``data``, checking keys and coercing types.

    Unknown keys and values of the wrong type raise :class:`ConfigError`
    naming the key (with ``prefix`` for nested configs) and, for unknown
    keys, listing the valid ones. Errors raised by the config's own
    ``__post_init__`` validation are re-raised as :class:`ConfigError`.
    Keys a config renamed (its ``RENAMED_FIELDS``, old name -> new name) are
    read under their new name with a ``DeprecationWarning``.
    """
    if not dataclasses.is_dataclass(cls):
        raise TypeError(f"{cls!r} is not a dataclass")
    if not isinstance(data, Mapping):
        raise ConfigError(f"config {prefix.rstrip('.') or cls.__name__} must be a mapping, "
                          f"got {data!r}")
    data = rename_fields(cls, data, warn=True)
    types_ = field_types(cls)
    unknown = [key for key in data if key not in types_]
    if unknown:
        raise ConfigError(
            f"unknown config key {prefix + unknown[0]!r} for {cls.__name__}; "
            f"valid keys: {', '.join(types_)}"
        )
    values = {key: _coerce(value, types_[key], prefix + key) for key, value in data.items()}
    try:
        return cls(**values)
    except (ValueError, TypeError) as err:
        raise ConfigError(f"invalid {cls.__name__}: {err}") from None


def rename_fields(cls: type, data: Mapping[str, Any], *, warn: bool = False) -> dict[str, Any]:
    """``data`` with ``cls.RENAMED_FIELDS``' old keys under their new names.

    Raises :class:`ConfigError` when both names are given.
    """
    renamed = getattr(cls, "RENAMED_FIELDS", {})
    out = dict(data)
    for old, new in renamed.items():
        if old in out:
            if new in out:
                raise ConfigError(f"config sets both {old!r} and its new name {new!r}")
            if warn:
                warnings.warn(f"{cls.__name__}: config key {old!r} is now {new!r}; the old "
                              "name will stop working in the next release",
                              DeprecationWarning, stacklevel=3)
            out[new] = out.pop(old)
    return out


def config_to_dict(config: Any) -> dict[str, Any]:
    """JSON-ready dict of a dataclass config (tuples become lists)."""
    return json.loads(json.dumps(dataclasses.asdict(config)))


def describe_fields(cls: type) -> list[tuple[str, str, Any]]:
    """``[(name, type name, default), ...]`` of a config class, for ``--help``."""
    types_ = field_types(cls)
    rows = []
    for f in dataclasses.fields(cls):
        if not f.init:
            continue
        if f.default is not dataclasses.MISSING:
            default = f.default
        elif f.default_factory is not dataclasses.MISSING:
            default = f.default_factory()
        else:
            default = "(required)"
        rows.append((f.name, type_name(types_[f.name]), default))
    return rows


def _coerce(value: Any, tp: Any, name: str) -> Any:
    """``value`` converted to annotation ``tp``; ConfigError naming ``name`` if impossible."""

    def fail():
        raise ConfigError(
            f"config field {name!r} expects {type_name(tp)}, got {value!r} "
            f"({type(value).__name__})"
        )

    if tp is Any:
        return value
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    if origin is typing.Union or origin is types.UnionType:
        if value is None:
            if type(None) in args:
                return None
            fail()
        for arg in (a for a in args if a is not type(None)):
            try:
                return _coerce(value, arg, name)
            except ConfigError:
                continue
        fail()
    if origin is typing.Literal:
        if value not in args:
            raise ConfigError(f"config field {name!r} must be one of {list(args)}, got {value!r}")
        return value
    if origin in (tuple, list):
        if not isinstance(value, (list, tuple)):
            fail()
        if origin is list or (len(args) == 2 and args[1] is Ellipsis) or not args:
            item_type = args[0] if args else Any
            items = [_coerce(v, item_type, f"{name}[{i}]") for i, v in enumerate(value)]
        else:
            if len(value) != len(args):
                fail()
            items = [_coerce(v, t, f"{name}[{i}]") for i, (v, t) in enumerate(zip(value, args))]
        return tuple(items) if origin is tuple else items
    if origin is dict or tp is dict:
        if not isinstance(value, Mapping):
            fail()
        return dict(value)
    if isinstance(tp, type) and dataclasses.is_dataclass(tp):
        if isinstance(value, tp):
            return value
        return config_from_dict(tp, value, prefix=name + ".")
    if tp is bool:
        if not isinstance(value, bool):
            fail()
        return value
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            fail()
        return value
    if tp is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            fail()
        return float(value)
    if tp is str:
        if not isinstance(value, str):
            fail()
        return value
    if isinstance(tp, type) and not isinstance(value, tp):
        fail()
    return value
