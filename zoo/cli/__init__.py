"""The ``zoo`` command line. Command modules stay thin and import torch only inside commands that train."""

from __future__ import annotations

import sys

from zoo.cli.app import app
from zoo.errors import ZooError, debug_enabled, print_error, print_warning

# Each module adds its commands to ``app`` when imported.
from zoo.cli import annotate, catalog, imports, lrfind, runs, train, tune, use, web, worker  # noqa: E402,F401


def _add_plugin_commands() -> None:
    from zoo.plugins import get_plugins

    plugins = get_plugins()
    for failed in plugins.failures:
        print_warning(f"Plugin '{failed.name}' ({failed.location}) failed to load: {failed.error}")
    for record in plugins.records:
        if record.unknown_hooks:
            print_warning(record.unknown_hooks_warning())
    plugins.register_commands(app)


def _forget_the_caught_interrupt() -> None:
    """CPython marks a KeyboardInterrupt that leaves code run by exec() of a string as unhandled, even when it is
    caught further up, and `python -m zoo` (as torchrun and the tests start zoo; the `zoo` script is not affected)
    then ends by killing itself with SIGINT instead of exiting with zoo's code. dataclasses and namedtuples build
    their methods with exec(), so a Ctrl-C at start-up (while torch imports) could end a run recorded 'interrupted'
    with exit -2 instead of 130 (traced in test_chaos: 6 of 80). Every exec() of a string clears the mark, so zoo
    runs an empty one as it exits: a Ctrl-C that reaches zoo is handled by zoo."""
    exec("pass")


def main() -> None:
    try:
        _add_plugin_commands()
        app(prog_name="zoo")  # also under python -m zoo: usage lines and shell completion name zoo
    except ZooError as exc:
        exc.show()
        sys.exit(exc.exit_code)
    except KeyboardInterrupt:
        print_error("Interrupted.")
        sys.exit(130)
    except Exception as exc:  # a bug, not bad input: say so in one line unless debugging
        if debug_enabled():
            raise
        print_error(f"Unexpected {type(exc).__name__}: {exc} (run again with ZOO_DEBUG=1 for the traceback)")
        sys.exit(1)
    finally:
        _forget_the_caught_interrupt()
