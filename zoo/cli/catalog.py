"""Commands ``zoo models`` and ``zoo plugins``: what the loaded plugins offer. Neither builds a model or imports torch."""

from __future__ import annotations

import json
from typing import Any, Iterable, Optional

import typer
from rich import box
from rich.table import Table
from rich.text import Text

from zoo.cli.app import app, check_choice
from zoo.errors import ZooError, console, print_warning
from zoo.models import ModelInfo
from zoo.naming import suggest

FORMATS = ("table", "json")
WILDCARDS = set("*?[")


def plural(n: int, word: str) -> str:
    return f"{n} {word}{'' if n == 1 else 's'}"


def human_count(n: Optional[int]) -> str:
    """11689512 -> '11.7M'; unknown -> '?'."""
    if n is None:
        return "?"
    for unit, size in (("G", 1e9), ("M", 1e6), ("K", 1e3)):
        if n >= size:
            return f"{n / size:.1f}{unit}"
    return str(n)


def model_record(info: ModelInfo) -> dict[str, Any]:
    return {
        "name": info.name, "family": info.family, "params": info.params, "min_size": info.min_size,
        "default_size": info.default_size, "pretrained": info.pretrained, "plugin": info.plugin,
        "description": info.description,
    }


def models_table(infos: Iterable[ModelInfo]) -> Table:
    infos = list(infos)
    table = Table(caption=f"{plural(len(infos), 'model')}; min/default: square input size in pixels", box=box.SIMPLE_HEAD)
    table.add_column("name", style="bold cyan", no_wrap=True)
    table.add_column("family", overflow="ellipsis")
    table.add_column("params", justify="right", no_wrap=True)
    table.add_column("min", justify="right", no_wrap=True)
    table.add_column("default", justify="right", no_wrap=True)
    table.add_column("weights", no_wrap=True)
    table.add_column("plugin", overflow="ellipsis")
    for info in infos:
        table.add_row(info.name, info.family, human_count(info.params), str(info.min_size), str(info.default_size),
                      "yes" if info.pretrained else "no", info.plugin)
    return table


def plugin_record(record, registered: Optional[dict] = None) -> dict[str, Any]:
    return {
        "name": record.name, "version": record.version, "source": record.source, "location": record.location,
        "hooks": list(record.hooks), "registers": dict((registered or {}).get(record.name, {})),
        "error": record.error,
        "import_s": None if record.import_s is None else round(record.import_s, 4), "slow": record.slow,
        "imports": list(record.heavy), "unknown_hooks": list(record.unknown_hooks),
    }


def import_cell(record) -> Text:
    if record.import_s is None:
        return Text("-")
    text = f"{record.import_s:.3f} s"
    return Text(f"{text} slow", style="bold yellow") if record.slow else Text(text)


def slow_note(records: list) -> str:
    """Why slow plugins matter and, when their import brought in torch (or the like), the usual fix."""
    from zoo.plugins import SLOW_IMPORT_S

    slow = [r for r in records if r.slow]
    if not slow:
        return ""
    parts = [f"slow: {', '.join(r.name for r in slow)} took over {SLOW_IMPORT_S:g} s to import, which every zoo "
             f"command pays (even --help)"]
    for r in slow:
        if r.heavy:
            parts.append(f"'{r.name}' imports {', '.join(r.heavy)} at module level: import it inside the builder "
                         f"or command instead")
    return "; ".join(parts) + "."


def hook_line(hook: str, names: list[str], most: int = 8) -> str:
    """'register_models: resnet18, resnet34, ... (+12)': what one plugin registers under one hook."""
    shown = ", ".join(names[:most]) + (f", ... (+{len(names) - most})" if len(names) > most else "")
    return f"{hook}: {shown}" if names else hook


def plugins_table(records: Iterable, registered: Optional[dict] = None) -> Table:
    records = list(records)
    registered = registered or {}
    failed = sum(1 for r in records if r.error)
    caption = plural(len(records), "plugin") + (f", {failed} failed to load" if failed else "")
    note = slow_note(records)
    caption += f"\n{note}" if note else ""
    table = Table(caption=caption, box=box.SIMPLE_HEAD, pad_edge=False)
    table.add_column("name", style="bold cyan", no_wrap=True)
    table.add_column("version", no_wrap=True)
    longest = max((len(h) for r in records for h in r.hooks + r.unknown_hooks), default=5)
    # one hook a line, each whole; a name longer than the terminal allows folds onto the next line, never cut
    table.add_column("hooks", overflow="fold", min_width=longest)
    table.add_column("import", justify="right", no_wrap=True)
    table.add_column("source", overflow="fold", ratio=1)  # its kind, then where: a module, a distribution, a file
    for r in records:
        if r.error:
            hooks = Text(f"failed: {r.error}", style="red")
        else:
            names = registered.get(r.name, {})
            hooks = Text("\n".join(hook_line(h, names.get(h, [])) for h in r.hooks) or "-")
            for h in r.unknown_hooks:
                hooks.append(f"\n{h} (not a zoo hook)", style="yellow")
        table.add_row(r.name, r.version or "-", hooks, import_cell(r), Text(f"{r.source}\n{r.location}"))
    return table


def _emit(fmt: str, records: list[dict[str, Any]], table: Table) -> None:
    if fmt == "json":
        typer.echo(json.dumps(records, indent=2))
    else:
        console(soft_wrap=False).print(table)  # fitted to the terminal: long cells wrap, identifying ones stay


@app.command("models")
def models(
    pattern: Optional[str] = typer.Argument(
        None, help="Shell-style pattern, case-insensitive, e.g. 'resnet*' or '*vit*' (default: all)."
    ),
    fmt: str = typer.Option("table", "--format", "-f", help="table or json (a list of objects with 'name')."),
) -> None:
    """List the architectures the loaded plugins register (natural order: resnet18 before resnet101).

    A pattern that matches nothing is an error (exit code 1), so scripts can tell.
    """
    from zoo.plugins import get_plugins

    fmt = check_choice("--format", fmt, FORMATS)
    registry = get_plugins().models()
    names = registry.names(pattern)
    if not names:
        hint = ""
        if pattern and not WILDCARDS & set(pattern):
            close = suggest(pattern, registry.names())
            hint = f" Did you mean: {', '.join(close)}?" if close else f" Try '{pattern}*'."
        raise ZooError(f"No model matches '{pattern}'.{hint} Run 'zoo models' to see them all.")
    infos = [registry.get(n) for n in names]
    _emit(fmt, [model_record(i) for i in infos], models_table(infos))


@app.command("plugins")
def plugins(
    fmt: str = typer.Option("table", "--format", "-f", help="table or json (a list of objects with 'name')."),
) -> None:
    """List the loaded plugins: version, hooks, import time, and where each came from (built-in, entry point,
    directory).

    A plugin that failed to load is listed with its error; one that takes over 0.1 s to import is flagged slow.

    Every command pays a slow import: import torch inside the builder, not at the top of the module.
    """
    from zoo.plugins import get_plugins

    fmt = check_choice("--format", fmt, FORMATS)
    plugins_ = get_plugins()
    records = plugins_.records
    try:
        registered = plugins_.registrations()
    except ZooError as exc:  # a plugin broken in a register hook: list the plugins all the same, and say which
        print_warning(exc.format_message())
        registered = {}
    _emit(fmt, [plugin_record(r, registered) for r in records], plugins_table(records, registered))
