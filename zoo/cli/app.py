"""The Typer application object, its global options, and helpers every command module shares."""

from __future__ import annotations

import os
from contextlib import contextmanager
from dataclasses import dataclass
from typing import TYPE_CHECKING, Optional

import typer
from typer.core import TyperGroup

from zoo.errors import ZooError, print_error
from zoo.filters import check_choice, parse_tags  # noqa: F401  (re-exported: every command module uses them)

if TYPE_CHECKING:
    from zoo.config import Config

try:  # typer >= 0.29 vendors its own click
    from typer._click.exceptions import UsageError
except ImportError:  # pragma: no cover - older typer on real click
    from click.exceptions import UsageError


class ZooGroup(TyperGroup):
    """Prints a ZooError, or a mistyped command line, as one red line and exits 1, also under CliRunner.

    Recent typer (0.29 here) vendors its own click, whose handler knows nothing of ZooError; and click's own
    usage errors (a bad option value, a missing argument) would otherwise be a boxed message with exit code 2.
    It also accepts the global ``--registry`` after the command (``zoo list-runs --registry x.db``) and applies
    the config file (zoo.toml) around each command."""

    def make_context(self, info_name, args, parent=None, **extra):  # the global options: zoo --bogus
        if parent is None:
            args = hoist_global_options(list(args))
        try:
            return super().make_context(info_name, args, parent=parent, **extra)
        except UsageError as exc:
            self._usage_error(exc)

    def invoke(self, ctx):  # the command and its options
        try:
            with configured():
                return super().invoke(ctx)
        except ZooError as exc:
            exc.show()
            raise typer.Exit(exc.exit_code) from None
        except UsageError as exc:
            self._usage_error(exc)

    def get_command(self, ctx, cmd_name):
        command = super().get_command(ctx, cmd_name)
        if command is not None:
            tidy_help(command, ctx)
        return command

    def format_help(self, ctx, formatter):
        tidy_help(self, ctx)
        return super().format_help(ctx, formatter)

    @staticmethod
    def _usage_error(exc: UsageError):
        if type(exc).__name__ == "NoArgsIsHelpError" or exc.ctx is None:
            raise exc  # 'zoo train' alone prints its help, as asked
        print_error(f"{' '.join(exc.format_message().split())} (see '{exc.ctx.command_path} --help')")
        raise typer.Exit(1) from None


def tidy_help(command, ctx) -> None:
    """One metavar style in help: flags show none (not <bool>), values an upper-case name (RUN, MODEL...,
    N for numbers) unless the command gave its own."""
    if getattr(command, "_zoo_tidy", False):
        return
    command._zoo_tidy = True
    help_option = command.get_help_option(ctx)
    for param in [*command.params, *([help_option] if help_option is not None else [])]:
        if param.param_type_name == "option":
            if getattr(param, "is_flag", False) or getattr(param, "count", False):
                param.metavar = ""
            elif param.metavar is None:
                number = getattr(getattr(param, "type_descriptor", None), "annotation", None) in (int, float)
                long = next((o for o in param.opts if o.startswith("--")), param.name or "value")
                param.metavar = "N" if number else long.lstrip("-").replace("-", "_").upper()
        elif param.param_type_name == "argument":
            if param.metavar is None:
                param.metavar = (param.name or "value").upper()  # usage adds '...' when it takes several
            param.display_type_rich = lambda ctx: None  # the name says it; no <str> beside it


GLOBAL_WITH_VALUE = ("--registry",)  # global options a user may also write after the command


def hoist_global_options(args: list[str]) -> list[str]:
    """``zoo CMD ... --registry X ...`` -> ``zoo --registry X CMD ...``: the global options written after the
    command move before it (not after a ``--``), so both spellings work."""
    try:
        command = next(i for i, a in enumerate(args) if not a.startswith("-") and
                       (i == 0 or args[i - 1] not in GLOBAL_WITH_VALUE))
    except StopIteration:
        return args
    head, tail, moved = args[:command + 1], [], []
    rest = args[command + 1:]
    i = 0
    while i < len(rest):
        arg = rest[i]
        if arg == "--":
            tail += rest[i:]
            break
        name = arg.split("=", 1)[0]
        if name in GLOBAL_WITH_VALUE:
            if "=" in arg:
                moved.append(arg)
            elif i + 1 < len(rest):
                moved += [arg, rest[i + 1]]
                i += 1
            else:
                tail.append(arg)  # no value: let the parser say so
            i += 1
            continue
        tail.append(arg)
        i += 1
    return head[:-1] + moved + head[-1:] + tail if moved else args  # the last one given wins, as usual


app = typer.Typer(
    name="zoo",
    cls=ZooGroup,
    help="A model zoo for image classification: train architectures the same way, remember every run, compare.",
    no_args_is_help=True,
    add_completion=True,
    pretty_exceptions_enable=False,
    context_settings={"help_option_names": ["-h", "--help"]},
)

DEFAULT_REGISTRY = "registry.db"


@dataclass
class State:
    registry: Optional[str] = None  # path or SQLAlchemy URL given with --registry / ZOO_REGISTRY
    config: Optional["Config"] = None  # the zoo.toml files read for the command running now


state = State()


def config() -> "Config":
    """The config files' values: those read for the command running now, else read afresh."""
    from zoo.config import load_config

    return state.config if state.config is not None else load_config()


@contextmanager
def configured():
    """Around one command: zoo.toml read once (a bad one is one clear line), its artifacts folder in effect
    unless ZOO_ARTIFACTS says otherwise; everything as it was afterwards."""
    state.config = None
    state.config = config()
    artifacts = state.config.artifacts if not os.environ.get("ZOO_ARTIFACTS") else None
    if artifacts:
        os.environ["ZOO_ARTIFACTS"] = artifacts
    try:
        yield state.config
    finally:
        if artifacts and os.environ.get("ZOO_ARTIFACTS") == artifacts:
            del os.environ["ZOO_ARTIFACTS"]
        state.config = None


def registry_location() -> str:
    """--registry, else ZOO_REGISTRY, else zoo.toml's registry, else ./registry.db."""
    location = state.registry or os.environ.get("ZOO_REGISTRY") or config().registry or DEFAULT_REGISTRY
    from zoo.store.registry import in_memory

    if in_memory(location):
        raise ZooError(f"Registry {location} is an in-memory database: everything recorded would be lost when the "
                       f"command ends. Give a file path (registry.db) or a server URL.")
    return location


def open_registry(*, readonly: bool = False, create: bool = True):
    """The run registry at the location the user chose (imports no torch)."""
    from zoo.store import Registry

    return Registry.open(registry_location(), readonly=readonly, create=create)


def _version(value: bool) -> None:
    if value:
        from zoo import __version__

        typer.echo(f"zoo {__version__}")
        raise typer.Exit()


@app.callback()
def main_options(
    registry: Optional[str] = typer.Option(
        None, "--registry", envvar="ZOO_REGISTRY", metavar="PATH_OR_URL",
        help="Run registry: a SQLite file path or a SQLAlchemy URL (default: zoo.toml's registry, else "
             "./registry.db). May also follow the command.",
    ),
    version: bool = typer.Option(
        False, "--version", callback=_version, is_eager=True, help="Show zoo's version and exit."
    ),
) -> None:
    state.registry = registry
