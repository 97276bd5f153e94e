"""One error base class: the CLI prints any ZooError as one red line and exits 1 (ZOO_DEBUG=1: traceback too)."""

from __future__ import annotations

import os
import sys
import traceback


def debug_enabled() -> bool:
    return os.environ.get("ZOO_DEBUG", "").strip().lower() not in ("", "0", "false", "no")


def console(*, stderr: bool = False):
    """A rich Console that shows text exactly as given: no markup, no emoji codes, no highlighting.

    Run names, paths, class names and error messages are user text; style them with rich Text, never markup."""
    from rich.console import Console

    return Console(stderr=stderr, markup=False, emoji=False, highlight=False, soft_wrap=True)


def _print_line(label: str, style: str, message: str, message_style: str = "") -> None:
    from rich.text import Text

    console(stderr=True).print(Text.assemble((label, style), (message, message_style)))


def print_error(message: str) -> None:
    _print_line("Error: ", "bold red", message, "red")


def print_warning(message: str) -> None:
    _print_line("Warning: ", "bold yellow", message)


class ZooError(Exception):
    """A problem the user can fix; its message says what is wrong and what to do.

    The CLI's command group (zoo.cli.app.ZooGroup) and zoo.cli.main() print it with ``show()`` and exit 1.
    Typer 0.29 vendors its own click, so zoo does not depend on click's exception classes.
    """

    exit_code = 1

    def __init__(self, message: str):
        super().__init__(message)
        self.message = message

    def format_message(self) -> str:
        return self.message

    def show(self, file=None) -> None:
        if debug_enabled():
            traceback.print_exception(type(self), self, self.__traceback__, file=sys.stderr)
        print_error(" ".join(self.format_message().split()))


class UnknownName(ZooError):
    """A model, dataset, run or metric name that does not exist."""


class DuplicateName(ZooError):
    """Two plugins registered the same name."""


class PluginError(ZooError):
    """A plugin broke a rule of the hook it implements."""
