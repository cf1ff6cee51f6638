"""What every config dataclass shares: its CLI spelling declared on the field, strict loading, a schema version.

A command's options are generated from its config's fields (uniretrieve/cli/options.py), so each field says here,
next to its default, how the CLI shows it: `field(default=16, metadata=opt("Items per forward pass."))`. A field
the CLI does not offer says so with `metadata=no_cli()`; a field with neither is a mistake the CLI refuses to build.
This module imports nothing heavy (no typer): library configs depend on it.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, TypeVar

C = TypeVar("C")

CLI_KEY = "uniretrieve.cli"
SCHEMA_KEY = "schema_version"
SCHEMA_VERSION = 1
"""Version of the saved config files (encode_config.json, the config block of index.json, training config.yaml).
Files without the key were written before it existed and read as version 1."""


class _Unset:
    def __repr__(self) -> str:
        return "UNSET"


UNSET: Any = _Unset()
"""`CliOpt.default` when the CLI default is the field's own."""


class ConfigError(ValueError):
    """A config that cannot be parsed or is invalid; the message names the file and key and what to do."""


@dataclass(frozen=True)
class CliOpt:
    """How one config field appears on the command line."""

    help: str = ""
    names: tuple[str, ...] = ()
    """Option spellings, e.g. ("--type",) or ("--output", "-o"); empty: typer's --field-name."""
    deprecated: tuple[str, ...] = ()
    """Old spellings still accepted (hidden; using one prints a one-line note)."""
    parse: Callable[[Any], Any] | None = None
    """CLI value → field value (e.g. "8GB" → bytes); also applied to the CLI default."""
    type: Any = None
    """The CLI value's annotation when it is not the field's (e.g. str for a byte count)."""
    default: Any = UNSET
    """The CLI default when it is spelled otherwise than the field's (parse(default) must equal it)."""
    argument: bool = False
    """A positional argument rather than an option."""
    extra: Mapping[str, Any] = field(default_factory=dict)
    """Other typer.Option / typer.Argument keywords (metavar, show_default, ...)."""


def opt(
    help: str = "",
    *names: str,
    deprecated: tuple[str, ...] = (),
    parse: Callable[[Any], Any] | None = None,
    type: Any = None,
    default: Any = UNSET,
    argument: bool = False,
    **extra: Any,
) -> dict[str, Any]:
    """Field metadata: the field is a CLI option (or argument) spelled `names`, with `help`."""
    spec = CliOpt(help, tuple(names), tuple(deprecated), parse, type, default, argument, dict(extra))
    return {CLI_KEY: spec}


TRUST_REMOTE_CODE = "--trust-remote-code"
TRUST_REMOTE_CODE_HELP = (
    "Allow a model that runs Python code shipped with its checkpoint (phi3_v); off: such a model is refused."
)


def trust_remote_code_opt() -> dict[str, Any]:
    """Metadata of every config's `trust_remote_code` field: one spelling and help for the opt-in everywhere."""
    return opt(TRUST_REMOTE_CODE_HELP, TRUST_REMOTE_CODE)


def no_cli() -> dict[str, Any]:
    """Field metadata: a library-only setting, deliberately not a CLI option."""
    return {CLI_KEY: None}


def cli_spec(f: dataclasses.Field[Any]) -> CliOpt | None:
    """The field's CLI spelling, None for a declared library-only field; TypeError when undeclared."""
    if CLI_KEY not in f.metadata:
        raise TypeError(f"config field {f.name!r} declares neither opt(...) nor no_cli() in its metadata")
    return f.metadata[CLI_KEY]


def check_schema_version(version: Any, where: str) -> None:
    """Refuse a file written by a newer uniretrieve; a missing version is the current release's format."""
    if version is None:
        return
    if isinstance(version, bool) or not isinstance(version, int) or version < 1:
        raise ConfigError(f"{where}: {SCHEMA_KEY} must be a positive integer, got {version!r}")
    if version > SCHEMA_VERSION:
        raise ConfigError(
            f"{where} has {SCHEMA_KEY} {version}, newer than this uniretrieve reads ({SCHEMA_VERSION}); "
            "upgrade uniretrieve"
        )


def strict_from_dict(cls: type[C], data: Mapping[str, Any], *, where: str) -> C:
    """`cls(**data)` after checking the schema version and refusing keys `cls` does not have."""
    if not isinstance(data, Mapping):
        raise ConfigError(f"{where}: expected a mapping of settings, got {type(data).__name__}")
    d = dict(data)
    check_schema_version(d.pop(SCHEMA_KEY, None), where)
    known = [f.name for f in dataclasses.fields(cls) if f.init]  # type: ignore[arg-type]
    unknown = sorted(set(d) - set(known))
    if unknown:
        raise ConfigError(
            f"{where}: unknown key(s) {', '.join(unknown)} for {cls.__name__}; valid keys: {', '.join(known)}"
        )
    return cls(**d)


def versioned(d: dict[str, Any]) -> dict[str, Any]:
    """`d` with the current schema version first, as it is written to a file."""
    return {SCHEMA_KEY: SCHEMA_VERSION, **{k: v for k, v in d.items() if k != SCHEMA_KEY}}
