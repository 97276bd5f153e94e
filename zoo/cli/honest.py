"""compare's honest views: ``--by`` as groups with mean, spread and interval (one table per dataset), and
``compare A B`` as the paired verdict. Called by zoo.cli.runs.compare; the statistics are zoo.comparing's."""

from __future__ import annotations

from dataclasses import replace
from typing import Any, Optional

from zoo.errors import ZooError


def is_side(conn: Any, text: str) -> bool:
    """Whether ``text`` names a group (a recorded model, or PARAM=VALUE) rather than a run."""
    from sqlalchemy import select

    from zoo.store import tables

    text = str(text).strip()
    if "=" in text:
        return True
    models = {m.lower() for m in conn.scalars(select(tables.runs.c.model).distinct())}
    return text.lower() in models


def wants_verdict(reg: Any, refs: Optional[list[str]]) -> bool:
    """``compare A B`` with a model or PARAM=VALUE among its arguments (two runs get the verdict as well, under
    their ranking)."""
    if not refs:
        return False
    with reg.connect() as conn:
        sides = [is_side(conn, ref) for ref in refs]
    if any(sides) and len(refs) != 2:
        raise ZooError(f"compare A B takes two sides (models, PARAM=VALUE or runs), not {len(refs)}: "
                       f"e.g. zoo compare resnet18 resnet50.")
    return any(sides)


def versus(reg: Any, refs: list[str], metric: str, flt: Any) -> tuple[Any, Any]:
    """(Grouped of the two sides, Verdict of the first against the second)."""
    from zoo.comparing import rank_groups, verdict
    from zoo.store import comparisons, queries

    with reg.connect() as conn:
        key = queries.resolve_metric(conn, metric)
        sides = [comparisons.side(conn, ref, key, flt, host=reg.host, resolve_run=reg.resolve) for ref in refs]
        cmp = queries.compare(conn, key, replace(flt, ids=[m.run_id for _, ms in sides for m in ms]), top=None,
                              host=reg.host)
    if sides[0][0] == sides[1][0]:
        raise ZooError(f"compare A B: both sides are {sides[0][0]}; name two different models, values or runs.")
    for label, members in sides:
        if not members:
            raise ZooError(f"compare A B: {label} has no run with {key} among these filters.")
    groups = rank_groups(dict(sides), lower_is_better=cmp.lower_is_better, accuracy=key == comparisons.ACCURACY_KEY)
    grouped = comparisons.Grouped(cmp, "side", groups)
    return grouped, verdict(sides[0][0], sides[0][1], sides[1][0], sides[1][1])


def run_pair_verdict(reg: Any, ids: list[int]) -> Any:
    """The verdict between two runs given by id (None when they cannot be read)."""
    from zoo.comparing import verdict
    from zoo.store import comparisons, queries

    with reg.connect() as conn:
        views = queries.run_views(conn, ids, host=reg.host)
        key = comparisons.ACCURACY_KEY
        views = [v for v in views if v.metrics.get(key) is not None]
        if len(views) != 2:
            return None
        found = comparisons.members(conn, views, key)
    a, b = views
    return verdict(f"run {a.id} ({a.model})", [found[a.id]], f"run {b.id} ({b.model})", [found[b.id]])


def grouped_sections(reg: Any, metric: str, flt: Any, by: str, top: Optional[int]) -> list[tuple[Any, Any]]:
    """[(DatasetGroup or None, Grouped)]: one aggregated ranking per dataset, never one mixed."""
    from zoo.store import comparisons, queries

    with reg.connect() as conn:
        groups = queries.dataset_groups(conn, metric, flt)
        if len(groups) < 2:
            return [(None, comparisons.grouped(conn, metric, flt, by=by, host=reg.host, top=top))]
        return [(g, comparisons.grouped(conn, metric, replace(flt, fingerprint=g.fingerprint or ""), by=by,
                                        host=reg.host, top=top)) for g in groups]


def print_grouped(sections: list[tuple[Any, Any]], fmt: str, echo, console_factory, label) -> None:
    """Every section in ``fmt``: json records (with dataset_fingerprint when several), csv, markdown or tables."""
    from zoo import render, render_compare
    from zoo.errors import print_warning

    several = len(sections) > 1
    if several:
        print_warning(f"These runs were trained on {len(sections)} different datasets: each is ranked on its own "
                      "(--data NAME|PATH|FINGERPRINT picks one).")
    for g, grouped in sections:
        for line in render.compare_warnings(replace(grouped.comparison, dataset_fingerprints=[])):
            print_warning(f"Dataset {label(g)}: {line}" if several else line)
    if fmt == "json":
        records = [{**rec, **({"dataset_fingerprint": g.fingerprint} if several else {})}
                   for g, grouped in sections for rec in render_compare.group_records(grouped)]
        echo(render.to_json(records))
        return
    if fmt == "csv":
        columns = (["dataset_fingerprint"] if several else []) + render_compare.group_columns(sections[0][1])
        rows = [([g.fingerprint] if several else []) + row
                for g, grouped in sections for row in render_compare.group_rows(grouped, numbers=True)]
        echo(render.to_csv(columns, rows))
        return
    console = console_factory() if fmt == "table" else None
    for index, (g, grouped) in enumerate(sections):
        title = f"Dataset {label(g)}" if several else ""
        if fmt == "markdown":
            echo(("\n" if index else "") + (f"### {title}\n\n" if title else "")
                 + render_compare.group_markdown(grouped))
            continue
        if not grouped.groups:
            echo(f"No runs with {grouped.comparison.metric} match these filters.")
            continue
        if title:
            from rich.text import Text

            console.print(Text(("\n" if index else "") + title, style="bold"))
        console.print(render_compare.group_table(grouped, width=console.width))


def print_versus(grouped: Any, found: Any, fmt: str, echo, console_factory) -> None:
    from zoo import render, render_compare
    from zoo.errors import print_warning

    for line in render.compare_warnings(grouped.comparison):
        print_warning(line)
    if fmt == "json":
        echo(render.to_json({"groups": render_compare.group_records(grouped), "verdict": found.record()}))
    elif fmt == "csv":
        echo(render.to_csv(render_compare.group_columns(grouped), render_compare.group_rows(grouped, numbers=True)))
    elif fmt == "markdown":
        echo(render_compare.group_markdown(grouped) + "\n\n" + found.sentence())
    else:
        console = console_factory()
        console.print(render_compare.group_table(grouped, width=console.width))
        console.print(found.sentence())
