"""One CLI vocabulary: commands generated from config dataclasses, deprecated spellings, and one error path.

- `config_command(Cls)` turns a command body `body(cfg: Cls, **extra)` into a Typer callback whose options are
  Cls's fields (spelled as their `opt(...)` metadata says, uniretrieve/config.py) followed by the body's own extra
  parameters. Typer reads `inspect.signature`, so the wrapper carries a built `__signature__`.
- `DeprecatedAliases`: old spellings (`--out`, `--output-dir`, `--work`, …) are rewritten to the new ones before
  click parses, with a one-line note on stderr; they never show in `--help`. Usage errors (a missing or malformed
  option) end in the same one line as other bad input.
- `user_errors()`: the project's input errors end a command with one stderr line and exit code 2, no traceback.
"""

from __future__ import annotations

import contextlib
import dataclasses
import errno
import importlib
import inspect
import sys
import typing
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Annotated, Any, NoReturn, TypeVar

import typer
from typer.core import TyperCommand

from uniretrieve.config import UNSET, CliOpt, cli_spec

C = TypeVar("C")

# --- one error path --------------------------------------------------------------------------------------------

BASE_ERRORS: tuple[type[BaseException], ...] = (
    ValueError,  # ConfigError, CorpusError, ManifestError, IndexMetaError, QueryError … all derive from it
    FileNotFoundError,
    FileExistsError,
    NotADirectoryError,
    IsADirectoryError,
)
LAZY_ERRORS = (
    ("uniretrieve.models.loading", "ModelLoadError"),
    ("uniretrieve.index.gpu", "GpuUnavailableError"),
    ("uniretrieve.train.checkpoint", "CheckpointError"),
    ("uniretrieve.embed.ray_engine", "RayUnavailableError"),
)
"""User-facing errors that are not ValueErrors, by module: a module not imported cannot have raised its error,
so looking them up in sys.modules keeps the CLI from importing torch or faiss to name them."""


def known_errors(*extra: type[BaseException]) -> tuple[type[BaseException], ...]:
    lazy = [getattr(sys.modules[mod], name) for mod, name in LAZY_ERRORS if mod in sys.modules]
    return (*BASE_ERRORS, *lazy, *extra)


def fail(exc: BaseException | str) -> NoReturn:
    """One stderr line `error: …` and exit code 2."""
    text = " ".join(str(exc).split()) or type(exc).__name__
    typer.echo(f"error: {text}", err=True)
    raise typer.Exit(code=2)


@contextlib.contextmanager
def user_errors(*extra: type[BaseException]) -> Iterator[None]:
    """Turn the project's input errors (plus `extra`) raised inside the block into `fail`."""
    try:
        yield
    except (typer.Exit, typer.Abort):
        raise  # RuntimeErrors too, but already a deliberate end of the command
    except Exception as exc:
        if isinstance(exc, known_errors(*extra)):
            fail(exc)
        line = storage_error(exc)
        if line:
            fail(line)
        raise


STORAGE_ERRNOS = {
    errno.ENOSPC: ("no space left on the device", "free some space or write elsewhere"),
    errno.EDQUOT: ("disk quota exceeded", "free some space or write elsewhere"),
    errno.EROFS: ("read-only file system", "choose a writable output"),
    errno.EACCES: ("permission denied", "fix the permissions or choose another path"),
    errno.EPERM: ("operation not permitted", "fix the permissions or choose another path"),
}


def storage_error(exc: BaseException) -> str | None:
    """One line for a full disk, a read-only output or a permission problem anywhere in `exc`'s chain (a writer
    thread's error arrives wrapped), naming the path; None for other errors."""
    seen: list[BaseException] = []
    e: BaseException | None = exc
    while e is not None and e not in seen and len(seen) < 10:
        seen.append(e)
        known = STORAGE_ERRNOS.get(getattr(e, "errno", None) or 0)
        if known is None and isinstance(e, OSError) and "No space left" in str(e):
            known = STORAGE_ERRNOS[errno.ENOSPC]  # pyarrow's IO errors carry the text, not the errno
        if known is not None and isinstance(e, OSError):
            path = e.filename2 or e.filename
            context = "" if e is exc else f" ({exc})"
            where = f": {path}" if path else ""
            return f"{known[0]}{where}{context}; {known[1]}"
        e = e.__cause__ or e.__context__
    return None


_USAGE_ERROR: type[Exception] = next(c for c in typer.BadParameter.__mro__ if c.__name__ == "UsageError")
"""click's usage error (typer may vendor its own click, so it is found from typer's BadParameter)."""


# --- deprecated spellings ----------------------------------------------------------------------------------------


class DeprecatedAliases(TyperCommand):
    """A command that still accepts old option spellings: each is replaced by the new one, with a note."""

    aliases: Mapping[str, str] = {}

    def all_aliases(self) -> dict[str, str]:
        """The declared aliases plus those of the command's config fields (typer wraps our callback)."""
        fn = getattr(self.callback, "__wrapped__", None)
        own = config_aliases(fn.config_class) if isinstance(fn, ConfigCommand) else {}
        return {**own, **self.aliases}

    def parse_args(self, ctx: Any, args: list[str]) -> list[str]:
        aliases = self.all_aliases()
        out: list[str] = []
        for i, arg in enumerate(args):
            if arg == "--":
                out += args[i:]
                break
            name, eq, value = arg.partition("=")
            new = aliases.get(name)
            if new is not None:
                typer.echo(f"note: {name} is deprecated; use {new}", err=True)
                arg = f"{new}{eq}{value}"
            out.append(arg)
        try:
            return super().parse_args(ctx, out)
        except _USAGE_ERROR as exc:  # a missing or malformed option: the same one line as any other bad input
            fail(f"{exc.format_message()} (see `{ctx.command_path} --help`)")


def aliased(aliases: Mapping[str, str]) -> type[DeprecatedAliases]:
    """The command class for `app.command(name, cls=aliased({"--out": "--output"}))`."""
    return type("AliasedCommand", (DeprecatedAliases,), {"aliases": dict(aliases)})


def config_aliases(cls: type) -> dict[str, str]:
    """Old spelling → new spelling for every CLI field of config class `cls`."""
    out: dict[str, str] = {}
    for f in dataclasses.fields(cls):
        spec = cli_spec(f)
        if spec is not None:
            for old in spec.deprecated:
                out[old] = _long_name(f.name, spec)
    return out


def _long_name(name: str, spec: CliOpt) -> str:
    longs = [n.split("/")[0] for n in spec.names if n.startswith("--")]
    return longs[0] if longs else "--" + name.replace("_", "-")


# --- commands from config dataclasses ---------------------------------------------------------------------------


def _field_default(f: dataclasses.Field[Any]) -> Any:
    if f.default is not dataclasses.MISSING:
        return f.default
    if f.default_factory is not dataclasses.MISSING:
        return f.default_factory()
    return inspect.Parameter.empty


def cli_default(f: dataclasses.Field[Any], spec: CliOpt) -> Any:
    """The default the CLI shows for field `f` (`inspect.Parameter.empty`: required)."""
    return _field_default(f) if spec.default is UNSET else spec.default


def to_field_value(spec: CliOpt, value: Any) -> Any:
    """A parsed CLI value as the config field holds it."""
    if spec.parse is not None:
        return spec.parse(value)
    if isinstance(value, Path):
        return str(value)
    return value


def config_parameters(cls: type) -> list[inspect.Parameter]:
    """One keyword-only parameter per CLI field of `cls`, annotated with its typer.Option / typer.Argument."""
    hints = typing.get_type_hints(cls)
    params = []
    for f in dataclasses.fields(cls):
        spec = cli_spec(f)
        if spec is None:
            continue
        if spec.argument:
            info: Any = typer.Argument(help=spec.help, **spec.extra)
        else:
            info = typer.Option(*spec.names, help=spec.help, **spec.extra)
        tp = spec.type if spec.type is not None else hints[f.name]
        params.append(
            inspect.Parameter(
                f.name,
                inspect.Parameter.KEYWORD_ONLY,
                default=cli_default(f, spec),
                annotation=Annotated[tp, info],
            )
        )
    return params


def resolve(target: type | str) -> type:
    """A config class, or "module:Class" imported now (so building the CLI module stays light)."""
    if isinstance(target, type):
        return target
    module, _, name = target.partition(":")
    return getattr(importlib.import_module(module), name)


class ConfigCommand:
    """A Typer callback whose options are a config class's CLI fields, then the body's extra parameters.

    Typer reads `inspect.signature(callback)`; `__signature__` is built when first read (when typer builds the
    click command), so a config class named as "module:Class" is imported only then.
    """

    def __init__(self, target: type | str, body: Callable[..., None]) -> None:
        self.target, self.body = target, body
        self.__name__, self.__qualname__ = body.__name__, body.__qualname__
        self.__module__, self.__doc__ = body.__module__, body.__doc__
        self.__annotations__: dict[str, Any] = {}

    @property
    def config_class(self) -> type:
        return resolve(self.target)

    def specs(self) -> dict[str, CliOpt]:
        return {f.name: s for f in dataclasses.fields(self.config_class) if (s := cli_spec(f)) is not None}

    @property
    def __signature__(self) -> inspect.Signature:
        cls = self.config_class  # the body may name it under TYPE_CHECKING only
        body = inspect.signature(self.body, eval_str=True, locals={cls.__name__: cls})
        extra = list(body.parameters.values())[1:]
        own = [p.replace(kind=inspect.Parameter.KEYWORD_ONLY) for p in extra]
        return inspect.Signature(config_parameters(cls) + own)

    def __call__(self, **kwargs: Any) -> None:
        specs = self.specs()
        values = {name: kwargs.pop(name) for name in specs}
        with user_errors():
            cfg = self.config_class(**{name: to_field_value(specs[name], v) for name, v in values.items()})
        self.body(cfg, **kwargs)


def config_command(target: type | str) -> Callable[[Callable[..., None]], ConfigCommand]:
    """Decorator: `body(cfg, **extra)` → a Typer callback taking the config's fields and the body's extras.

    The config is built (and validated) under `user_errors`, so a bad value is one line and exit code 2; the body
    wraps its own work in `user_errors` too.
    """
    return lambda body: ConfigCommand(target, body)


def register(
    app: typer.Typer, name: str, fn: Callable[..., Any], aliases: Mapping[str, str] | None = None
) -> None:
    """Add command `fn` to `app`, accepting `aliases` (old → new) and its config fields' deprecated spellings."""
    app.command(name, cls=aliased(aliases or {}))(fn)
