"""Commands that annotate runs after the fact (tag, untag, rename, note) and set two runs side by side (diff).

Notes are kept as the tag ``zoo.note`` (as MLflow keeps ``mlflow.note.content``), so no schema change; the user's
own tags may not start with ``zoo.``. ``diff`` only reads, like list-runs: registry read-only, no torch.
"""

from __future__ import annotations

from typing import List

import typer

from zoo.cli.app import app, check_choice, open_registry, parse_tags
from zoo.errors import ZooError, print_warning, printable
from zoo.vocab import SYSTEM_TAG_PREFIX

RUN_HELP = "Run id (from list-runs), its name or a uuid prefix."
MAX_NAME = 200  # the width of runs.name


def _user_key(key: str) -> str:
    if key.startswith(SYSTEM_TAG_PREFIX):
        raise ZooError(f"Tag '{key}': keys starting with '{SYSTEM_TAG_PREFIX}' are zoo's own; pick another key "
                       "(zoo note RUN TEXT sets the note).")
    return key


def _label(view) -> str:
    return f"Run {view.id} ({view.model}{', ' + printable(view.name) if view.name else ''})"


@app.command("tag")
def tag(
    run: str = typer.Argument(..., help=RUN_HELP, metavar="RUN"),
    pairs: List[str] = typer.Argument(..., help="Tags to set, key=value (a key it has gets the new value).",
                                      metavar="KEY=VALUE"),
) -> None:
    """Tag a run after the fact: zoo tag 3 experiment=baseline."""
    from zoo.spec import check_tags

    tags = dict(parse_tags(pairs))
    for key in tags:
        _user_key(key)
    check_tags(tags.items())
    with open_registry(create=False) as reg:
        view = reg.get_run(run)
        reg.set_tags(view.id, tags)
    typer.echo(f"{_label(view)}: tagged {printable(', '.join(f'{k}={v}' for k, v in tags.items()))}.")


@app.command("untag")
def untag(
    run: str = typer.Argument(..., help=RUN_HELP, metavar="RUN"),
    keys: List[str] = typer.Argument(..., help="Tag keys to remove.", metavar="KEY"),
) -> None:
    """Remove tags from a run: zoo untag 3 experiment."""
    keys = [_user_key(k.strip()) for k in keys]
    with open_registry(create=False) as reg:
        view = reg.get_run(run)
        missing = [k for k in keys if k not in view.tags]
        if len(missing) == len(keys):
            have = ", ".join(sorted(view.tags)) or "none"
            raise ZooError(f"{_label(view)} has no tag {printable(', '.join(missing))} (its tags: {printable(have)}).")
        removed = reg.remove_tags(view.id, [k for k in keys if k not in missing])
    for key in missing:
        print_warning(f"{_label(view)} has no tag '{printable(key)}'.")
    typer.echo(f"{_label(view)}: removed tag{'s' if len(removed) != 1 else ''} {printable(', '.join(removed))}.")


@app.command("rename")
def rename(
    run: str = typer.Argument(..., help=RUN_HELP, metavar="RUN"),
    name: str = typer.Argument(..., help="The new name ('' removes the name).", metavar="NAME"),
) -> None:
    """Name (or rename) a run: zoo rename 3 baseline-sgd."""
    name = name.strip()
    if len(name) > MAX_NAME:
        raise ZooError(f"A run name has at most {MAX_NAME} characters (this one has {len(name)}).")
    with open_registry(create=False) as reg:
        view = reg.get_run(run)
        reg.update_run(view.id, name=name or None)
    before = f"'{printable(view.name)}'" if view.name else "no name"
    after = f"'{printable(name)}'" if name else "no name"
    typer.echo(f"Run {view.id} ({view.model}): {before} -> {after}.")


@app.command("note")
def note(
    run: str = typer.Argument(..., help=RUN_HELP, metavar="RUN"),
    text: str = typer.Argument(..., help="The note, shown by zoo show ('' removes it).", metavar="TEXT"),
) -> None:
    """Write a note on a run (replacing any earlier one): zoo note 3 "lr too high, diverged at epoch 4"."""
    from zoo.vocab import NOTE_TAG

    text = text.strip()
    with open_registry(create=False) as reg:
        view = reg.get_run(run)
        if text:
            reg.set_tags(view.id, {NOTE_TAG: text})
        else:
            reg.remove_tags(view.id, [NOTE_TAG])
    typer.echo(f"{_label(view)}: {'note saved' if text else 'note removed'}.")


@app.command("diff")
def diff(
    runs: List[str] = typer.Argument(..., help="Two runs (or more): ids, names or uuid prefixes.", metavar="RUN"),
    only_differences: bool = typer.Option(False, "--only-differences", "-d", help="Show only what differs."),
    fmt: str = typer.Option("table", "--format", "-f", help="Output format: table, json."),
) -> None:
    """Two runs side by side: params, dataset and split, test metrics; what differs is marked."""
    from zoo.cli.runs import plain_console, plain_echo, short_lived

    fmt = check_choice("--format", fmt, ("table", "json"))
    if len(runs) < 2:
        raise ZooError("zoo diff compares runs: give at least two, e.g. zoo diff 3 5.")
    from zoo import render
    from zoo.store import queries

    with short_lived(), open_registry(readonly=True) as reg:
        with reg.connect() as conn:
            ids = list(dict.fromkeys(reg.resolve(ref, conn) for ref in runs))
            if len(ids) < 2:
                raise ZooError(f"'{' '.join(runs)}' names one run only; give two different runs.")
            views = queries.run_views(conn, ids, host=reg.host, full=True)
        if fmt == "json":
            plain_echo(render.to_json(render.diff_json(views)))
        else:
            plain_console().print(render.diff_table(views, only_differences=only_differences))
