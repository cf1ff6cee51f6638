"""dict ⇄ config dataclass: the typed conversion behind `load_config` (train/config.py), generic over fields.

Handles nested dataclasses, `list[X]`, `tuple[X, Y]`, `dict[str, X]`, `Literal`, `X | None` and bool/int/float/str;
unknown keys, missing required keys and wrong types raise `ConfigError` naming the file and the dotted key.
"""

from __future__ import annotations

import contextlib
import dataclasses
import types
import typing
from collections.abc import Mapping, Sequence
from typing import Any, Literal, TypeVar

from uniretrieve.config import ConfigError

C = TypeVar("C")


def _type_name(tp: Any) -> str:
    return getattr(tp, "__name__", None) or str(tp).replace("typing.", "")


def _convert(value: Any, tp: Any, key: str, where: str) -> Any:
    """Check/convert one YAML value to the annotated type `tp`."""
    origin = typing.get_origin(tp)
    args = typing.get_args(tp)
    loc = f"{where}: " if where else ""

    def bad(expected: str) -> ConfigError:
        return ConfigError(f"{loc}{key} must be {expected}; got {value!r}")

    if tp is Any:
        return value
    if origin in (typing.Union, types.UnionType):
        if value is None:
            if type(None) in args:
                return None
            raise bad(" or ".join(_type_name(a) for a in args))
        for arg in args:
            if arg is type(None):
                continue
            with contextlib.suppress(ConfigError):
                return _convert(value, arg, key, where)
        raise bad(" or ".join(_type_name(a) for a in args if a is not type(None)))
    if origin is Literal:
        if value not in args:
            raise bad("one of " + ", ".join(repr(a) for a in args))
        return value
    if dataclasses.is_dataclass(tp):
        if isinstance(value, tp):
            return value
        if not isinstance(value, Mapping):
            raise bad(f"a mapping (section {_type_name(tp)})")
        return config_from_dict(tp, value, where=where, prefix=f"{key}.")
    if origin in (list, Sequence) or tp is list:
        if not isinstance(value, list | tuple):
            raise bad("a list")
        item = args[0] if args else Any
        return [_convert(v, item, f"{key}[{i}]", where) for i, v in enumerate(value)]
    if origin is tuple:
        if not isinstance(value, list | tuple) or (
            args and args[-1] is not Ellipsis and len(value) != len(args)
        ):
            raise bad(f"a list of {len(args)} values")
        if args and args[-1] is Ellipsis:
            return tuple(_convert(v, args[0], f"{key}[{i}]", where) for i, v in enumerate(value))
        return tuple(
            _convert(v, a, f"{key}[{i}]", where) for i, (v, a) in enumerate(zip(value, args, strict=True))
        )
    if origin in (dict, Mapping):
        if not isinstance(value, Mapping):
            raise bad("a mapping")
        kt, vt = args if args else (Any, Any)
        return {_convert(k, kt, key, where): _convert(v, vt, f"{key}.{k}", where) for k, v in value.items()}
    if tp is bool:
        if not isinstance(value, bool):
            raise bad("true or false")
        return value
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise bad("an integer")
        return value
    if tp is float:
        if isinstance(value, bool) or not isinstance(value, int | float):
            # YAML 1.1 reads "5e-4" (no dot) as a string; accept it when it is a number.
            if isinstance(value, str):
                try:
                    return float(value)
                except ValueError:
                    pass
            raise bad("a number")
        return float(value)
    if tp is str:
        if not isinstance(value, str):
            raise bad("a string")
        return value
    if isinstance(tp, type):
        if not isinstance(value, tp):
            raise bad(f"a {tp.__name__}")
        return value
    raise ConfigError(f"{loc}{key}: unsupported annotation {tp!r}")


def config_from_dict(cls: type[C], data: Mapping[str, Any], *, where: str = "", prefix: str = "") -> C:
    """Build dataclass `cls` from a mapping; unknown keys, missing required keys and bad types are named."""
    if not isinstance(data, Mapping):
        raise ConfigError(f"{where or 'config'}: expected a mapping of settings, got {type(data).__name__}")
    hints = typing.get_type_hints(cls)
    fields_by_name = {f.name: f for f in dataclasses.fields(cls) if f.init}  # type: ignore[arg-type]
    loc = f"{where}: " if where else ""
    unknown = sorted(set(data) - set(fields_by_name))
    if unknown:
        raise ConfigError(
            f"{loc}unknown key(s) {', '.join(prefix + k for k in unknown)} for {cls.__name__}; "
            f"valid keys: {', '.join(prefix + k for k in fields_by_name)}"
        )
    kwargs: dict[str, Any] = {}
    for name, f in fields_by_name.items():
        if name in data:
            kwargs[name] = _convert(data[name], hints[name], prefix + name, where)
        elif f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING:
            raise ConfigError(f"{loc}missing required key {prefix + name} ({cls.__name__})")
    try:
        return cls(**kwargs)
    except ConfigError as exc:
        raise ConfigError(f"{loc}{exc}") from None


def config_to_dict(cfg: Any) -> dict[str, Any]:
    """A dataclass config as plain YAML-able data (tuples become lists)."""

    def plain(v: Any) -> Any:
        if dataclasses.is_dataclass(v) and not isinstance(v, type):
            return {f.name: plain(getattr(v, f.name)) for f in dataclasses.fields(v)}
        if isinstance(v, list | tuple):
            return [plain(x) for x in v]
        if isinstance(v, Mapping):
            return {str(k): plain(x) for k, x in v.items()}
        return v

    return plain(cfg)
