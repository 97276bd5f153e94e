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
SORTS = ("name", "params")
WILDCARDS = set("*?[")
COUNT_UNITS = {"": 1, "K": 10**3, "M": 10**6, "G": 10**9}


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


def parse_count(text: str, option: str = "--max-params") -> int:
    """'5M' -> 5000000, '500k' -> 500000, '1.5G', '1200000'; anything else is a one-line error."""
    raw = text.strip().upper()
    unit = raw[-1:] if raw[-1:] in COUNT_UNITS else ""
    try:
        value = float(raw[:len(raw) - len(unit)]) * COUNT_UNITS[unit]
    except ValueError:
        value = -1
    if not value >= 0:
        raise ZooError(f"{option} '{text}' is not a count; use e.g. 5M, 500K or 1200000.")
    return int(value)


def model_record(info: ModelInfo) -> dict[str, Any]:
    return {
        "name": info.name, "family": info.family, "params": info.params, "min_size": info.min_size,
        "default_size": info.default_size, "pretrained": info.pretrained, "plugin": info.plugin,
        "description": info.description, "source": info.source,
    }


def model_detail(info: ModelInfo) -> dict[str, Any]:
    """Everything zoo knows of one architecture: the list's fields, its preprocessing, its pretrained tags."""
    return {**model_record(info), **info.preprocess.params(), "tags": list(info.tags)}


def detail_table(info: ModelInfo) -> Table:
    table = Table(box=box.SIMPLE_HEAD, show_header=False, title=info.name, title_style="bold cyan")
    table.add_column("field", style="bold", no_wrap=True)
    table.add_column("value", overflow="fold")
    p = info.preprocess
    rows = [("family", info.family), ("source", f"{info.source} (plugin {info.plugin})"),
            ("params", f"{human_count(info.params)} at 1000 classes" if info.params else "unknown"),
            ("input size", f"{info.default_size} px (min {info.min_size})"),
            ("mean", ", ".join(f"{m:.4g}" for m in p.mean)), ("std", ", ".join(f"{s:.4g}" for s in p.std)),
            ("eval resize", f"{p.interpolation}, centre crop {p.crop_fraction:g} of the resized side"),
            ("pretrained", ", ".join(info.tags) if info.tags else ("yes" if info.pretrained else "no")),
            ("description", info.description)]
    for field, value in rows:
        table.add_row(field, value)
    return table


def select_models(registry, pattern: Optional[str], *, source: Optional[str] = None,
                  max_params: Optional[int] = None, sort: str = "name",
                  counted: Optional[dict[str, int]] = None) -> tuple[list[ModelInfo], int]:
    """The models ``zoo models`` lists and how many of the matching ones were left out for an unknown size. A
    pattern without wildcards matches as a substring; ``source`` is a model's source or plugin; ``counted``:
    parameter counts found since the registry was filled."""
    from dataclasses import replace

    names = registry.names(pattern if not pattern or WILDCARDS & set(pattern) else f"*{pattern}*")
    infos = [registry.get(n) for n in names]
    if source:
        infos = [i for i in infos if source.lower() in (i.source.lower(), i.plugin.lower())]
    if counted:
        infos = [replace(i, params=counted[i.name]) if i.params is None and i.name in counted else i for i in infos]
    unknown = 0
    if max_params is not None:
        unknown = sum(1 for i in infos if i.params is None)
        infos = [i for i in infos if i.params is not None and i.params <= max_params]
    if sort == "params":  # smallest first, unknown sizes last, natural order among equals
        infos = sorted(infos, key=lambda i: (i.params is None, i.params or 0))
    return infos, unknown


def models_table(infos: Iterable[ModelInfo]) -> Table:
    infos = list(infos)
    table = Table(caption=f"{plural(len(infos), 'model')}; min/default: square input size in pixels",
                  box=box.SIMPLE_HEAD, pad_edge=False)
    # At 80 columns a long timm name folds onto a second line; the figures and their headers stay whole.
    table.add_column("name", style="bold cyan", overflow="fold", min_width=22)
    table.add_column("family", overflow="ellipsis", max_width=8)
    table.add_column("params", justify="right", no_wrap=True, min_width=6)
    table.add_column("min", justify="right", no_wrap=True, min_width=3)
    table.add_column("default", justify="right", no_wrap=True, min_width=7)
    table.add_column("weights", no_wrap=True, min_width=7)
    table.add_column("source", overflow="ellipsis", max_width=11)  # shorter than the plugin's name
    for info in infos:
        table.add_row(info.name, info.family, human_count(info.params), str(info.min_size), str(info.default_size),
                      "yes" if info.pretrained else "no", info.source)
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
    # one hook a line; what the terminal cannot hold folds onto the next line, never cut (a minimum width here
    # would make rich crop the last column instead)
    table.add_column("hooks", overflow="fold", ratio=1)
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
    source: Optional[str] = typer.Option(None, "--source", "-s",
                                         help="Only models from this source or plugin: timm, torchvision, tinycnn..."),
    max_params: Optional[str] = typer.Option(None, "--max-params", help="Only models this small, e.g. 5M or 500K."),
    sort: str = typer.Option("name", "--sort", help="name (natural order) or params (smallest first)."),
    count: bool = typer.Option(False, "--count", help="Count the parameters timm models do not declare (builds "
                               "each once on torch's meta device, in a child process; cached)."),
) -> None:
    """List the architectures the loaded plugins register (natural order: resnet18 before resnet101).

    A pattern without wildcards matches anywhere in the name ('convnext'); an exact model name shows that
    model's details (input size, normalisation, eval resize, pretrained weights). A pattern that matches
    nothing is an error (exit code 1), so scripts can tell.
    """
    from zoo.plugins import get_plugins

    fmt = check_choice("--format", fmt, FORMATS)
    sort = check_choice("--sort", sort, SORTS)
    limit = parse_count(max_params) if max_params is not None else None
    registry = get_plugins().models()
    exact = registry.find(pattern) if pattern and not WILDCARDS & set(pattern) else None
    if exact is not None and source is None and limit is None:
        exact = with_counted_params(exact)
        _emit(fmt, [model_detail(exact)], detail_table(exact))
        return
    sources = sorted({i for n in registry.names() for i in (registry.get(n).source, registry.get(n).plugin)})
    if source is not None and source.lower() not in {s.lower() for s in sources}:
        raise ZooError(f"Unknown --source '{source}': choose one of {', '.join(sources)}.")
    counted = count_unknown_sizes(select_models(registry, pattern, source=source)[0]) if count else None
    infos, unknown = select_models(registry, pattern, source=source, max_params=limit, sort=sort, counted=counted)
    if not infos:
        matched = select_models(registry, pattern)[0]
        if not matched:
            hint = ""
            if pattern and not WILDCARDS & set(pattern):
                close = suggest(pattern, registry.names())
                hint = f" Did you mean: {', '.join(close)}?" if close else f" Try '{pattern}*'."
            raise ZooError(f"No model matches '{pattern}'.{hint} Run 'zoo models' to see them all.")
        filters = ([f"--source {source}"] if source else []) + ([f"--max-params {max_params}"] if limit is not None
                                                                 else [])
        left = f"; {plural(unknown, 'model')} of unknown size left out" if unknown else ""
        raise ZooError(f"None of the {plural(len(matched), 'model')} matching '{pattern or '*'}' passes "
                       f"{' and '.join(filters)}{left}. Loosen the filters.")
    table = models_table(infos)
    if unknown:
        table.caption += f"\n{plural(unknown, 'model')} of unknown size left out by --max-params (--count counts them)"
    _emit(fmt, [model_record(i) for i in infos], table)


def count_unknown_sizes(infos: list[ModelInfo]) -> dict[str, int]:
    """Parameter counts of the timm models among ``infos`` whose size is not known yet (counted once, cached)."""
    names = [i.name for i in infos if i.params is None and i.source == "timm"]
    if not names:
        return {}
    from zoo_builtin_plugins.timm_models import count_params

    if len(names) > 20:
        console(stderr=True).print(f"Counting the parameters of {len(names)} timm models (once; cached)...")
    return count_params(names)


def with_counted_params(info: ModelInfo) -> ModelInfo:
    """A timm model whose size is not known yet is counted once (a child process, cached) for its details."""
    from dataclasses import replace

    counted = count_unknown_sizes([info])
    return replace(info, params=counted[info.name]) if info.name in counted else info


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
