"""The Typer application object, its global options, and helpers every command module shares."""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Optional

import typer
from typer.core import TyperGroup

from zoo.errors import ZooError, print_error

try:  # typer >= 0.29 vendors its own click
    from typer._click.exceptions import UsageError
except ImportError:  # pragma: no cover - older typer on real click
    from click.exceptions import UsageError


class ZooGroup(TyperGroup):
    """Prints a ZooError, or a mistyped command line, as one red line and exits 1, also under CliRunner.

    Recent typer (0.29 here) vendors its own click, whose handler knows nothing of ZooError; and click's own
    usage errors (a bad option value, a missing argument) would otherwise be a boxed message with exit code 2."""

    def make_context(self, *args, **kwargs):  # the global options: zoo --bogus
        try:
            return super().make_context(*args, **kwargs)
        except UsageError as exc:
            self._usage_error(exc)

    def invoke(self, ctx):  # the command and its options
        try:
            return super().invoke(ctx)
        except ZooError as exc:
            exc.show()
            raise typer.Exit(exc.exit_code) from None
        except UsageError as exc:
            self._usage_error(exc)

    @staticmethod
    def _usage_error(exc: UsageError):
        if type(exc).__name__ == "NoArgsIsHelpError" or exc.ctx is None:
            raise exc  # 'zoo train' alone prints its help, as asked
        print_error(f"{' '.join(exc.format_message().split())} (see '{exc.ctx.command_path} --help')")
        raise typer.Exit(1) from None


app = typer.Typer(
    name="zoo",
    cls=ZooGroup,
    help="A model zoo for image classification: train architectures the same way, remember every run, compare.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    context_settings={"help_option_names": ["-h", "--help"]},
)

DEFAULT_REGISTRY = "registry.db"


@dataclass
class State:
    registry: Optional[str] = None  # path or SQLAlchemy URL given with --registry / ZOO_REGISTRY


state = State()


def registry_location() -> str:
    return state.registry or os.environ.get("ZOO_REGISTRY") or DEFAULT_REGISTRY


def open_registry(*, readonly: bool = False, create: bool = True):
    """The run registry at the location the user chose (imports no torch)."""
    from zoo.store import Registry

    return Registry.open(registry_location(), readonly=readonly, create=create)


def check_choice(option: str, value: Optional[str], choices: tuple[str, ...]) -> Optional[str]:
    """``value`` lower-cased when it is one of ``choices``; otherwise a one-line error naming them."""
    if value is None:
        return None
    if value.lower() not in choices:
        raise ZooError(f"Unknown {option} '{value}': choose one of {', '.join(choices)}.")
    return value.lower()


def parse_tags(values: Optional[list[str]]) -> list[tuple[str, str]]:
    """Repeated ``--tag key=value`` options as (key, value) pairs, in order (to label runs and to filter them)."""
    tags = []
    for value in values or []:
        key, sep, tag_value = value.partition("=")
        if not sep or not key.strip():
            raise ZooError(f"Bad --tag '{value}': write it as key=value, e.g. --tag experiment=baseline.")
        tags.append((key.strip(), tag_value.strip()))
    return tags


def _version(value: bool) -> None:
    if value:
        from zoo import __version__

        typer.echo(f"zoo {__version__}")
        raise typer.Exit()


@app.callback()
def main_options(
    registry: Optional[str] = typer.Option(
        None, "--registry", envvar="ZOO_REGISTRY", metavar="PATH_OR_URL",
        help="Run registry: a SQLite file path or a SQLAlchemy URL (default: ./registry.db).",
    ),
    version: bool = typer.Option(
        False, "--version", callback=_version, is_eager=True, help="Show zoo's version and exit."
    ),
) -> None:
    state.registry = registry
