"""One error base class: the CLI prints any ZooError as one red line and exits 1 (ZOO_DEBUG=1: traceback too)."""

from __future__ import annotations

import os
import sys
import traceback

import click


def debug_enabled() -> bool:
    return os.environ.get("ZOO_DEBUG", "").strip().lower() not in ("", "0", "false", "no")


def print_error(message: str) -> None:
    from rich.console import Console
    from rich.markup import escape

    Console(stderr=True, soft_wrap=True, highlight=False).print(f"[bold red]Error:[/] [red]{escape(message)}[/]")


def print_warning(message: str) -> None:
    from rich.console import Console
    from rich.markup import escape

    Console(stderr=True, soft_wrap=True, highlight=False).print(f"[bold yellow]Warning:[/] {escape(message)}")


class ZooError(click.ClickException):
    """A problem the user can fix; its message says what is wrong and what to do.

    It derives from click's exception so that Typer (and CliRunner in tests) print it the zoo way and exit 1.
    """

    exit_code = 1

    def show(self, file=None) -> None:  # called by click when the exception reaches the command line
        if debug_enabled():
            traceback.print_exception(type(self), self, self.__traceback__, file=sys.stderr)
        print_error(" ".join(self.format_message().split()))


class UnknownName(ZooError):
    """A model, dataset, run or metric name that does not exist."""


class DuplicateName(ZooError):
    """Two plugins registered the same name."""


class PluginError(ZooError):
    """A plugin broke a rule of the hook it implements."""
