"""One error base class: the CLI prints any ZooError as one red line and exits 1 (ZOO_DEBUG=1: traceback too)."""

from __future__ import annotations

import functools
import os
import re
import sys
import traceback

# C0 and C1 control characters (ESC, BEL, CR, ...), DEL, and the lone surrogates that stand for the bytes of a
# file name that is not valid UTF-8: user text never reaches the terminal with them (clear screen, set the
# window title, or a UnicodeEncodeError on printing).
_UNPRINTABLE = re.compile("[\x00-\x1f\x7f-\x9f\ud800-\udfff]")
_UNPRINTABLE_KEEP_LINES = re.compile("[\x00-\x08\x0b-\x1f\x7f-\x9f\ud800-\udfff]")


def _escape(match: "re.Match[str]") -> str:
    code = ord(match.group())
    if 0xDC80 <= code <= 0xDCFF:  # os.fsdecode's stand-in for one undecodable byte: show that byte
        return f"\\x{code - 0xDC00:02x}"
    return f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}"


def printable(text: object, *, keep_lines: bool = False) -> str:
    """User text safe for a terminal: control characters and undecodable bytes shown escaped (ESC as \\x1b).

    ``keep_lines`` leaves newlines and tabs alone (layout text of zoo's own, such as two-line table headers)."""
    text = str(text)
    pattern = _UNPRINTABLE_KEEP_LINES if keep_lines else _UNPRINTABLE
    return pattern.sub(_escape, text) if pattern.search(text) else text


def debug_enabled() -> bool:
    return os.environ.get("ZOO_DEBUG", "").strip().lower() not in ("", "0", "false", "no")


@functools.lru_cache(maxsize=1)
def _safe_console_class():
    """rich's Console with every printed string passed through ``printable`` (rich is imported only on first use:
    commands that print JSON never load it)."""
    from rich.console import Console

    class SafeConsole(Console):
        def render_str(self, text: str, **kwargs):  # every str: printed text, table cells, titles, captions
            return super().render_str(printable(text, keep_lines=True), **kwargs)

    return SafeConsole


def console(*, stderr: bool = False, soft_wrap: bool = True):
    """A rich Console that shows text exactly as given: no markup, no emoji codes, no highlighting, and control
    characters escaped in every string it prints (table cells, titles and captions included).

    Run names, paths, class names and error messages are user text; style them with rich Text, never markup,
    and pass user text in a Text through ``printable`` (a Text is printed as it is)."""
    return _safe_console_class()(stderr=stderr, markup=False, emoji=False, highlight=False, soft_wrap=soft_wrap)


def _print_line(label: str, style: str, message: str, message_style: str = "") -> None:
    from rich.text import Text

    console(stderr=True).print(Text.assemble((label, style), (printable(message), message_style)))


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


class LoaderStopped(RuntimeError):
    """A data-loader worker process ended by a stop signal (SIGTERM or SIGINT sent to the whole process group, as
    timeout, Slurm and Kubernetes do): raised by ``zoo.data`` from the workers' exit codes, so the session records
    an interruption, not a failure. ``signum``: the signal that ended the worker."""

    def __init__(self, signum: int) -> None:
        super().__init__(f"a data-loader worker was stopped by signal {signum}")
        self.signum = signum

