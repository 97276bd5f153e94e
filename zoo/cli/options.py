"""The command-line options of run parameters, made from ``zoo.spec.RunSpec``'s field metadata.

A parameter is declared once, as a RunSpec field (its type, default, limits, help, whether grids may vary it, a
metavar): the field becomes an option of ``zoo train`` (a --NAME/--no-NAME flag pair for a bool, a comma list or
repeat for what grids vary, one value otherwise) and of ``zoo tune`` (a search dimension, or one fixed value). A
field added to RunSpec with metadata is an option of both commands with no change here.
"""

from __future__ import annotations

import inspect
from typing import Any, Callable, Iterable, List, Mapping, Optional, Sequence

import typer

from zoo import spec as specs

KEYWORD = inspect.Parameter.KEYWORD_ONLY


def option_help(name: str, grid: bool = True) -> str:
    """The spec's help of option ``name``, then its default (the recipe's when a recipe sets it) and, for an option
    that takes a list, how to give several values."""
    text = specs.help_of(name)
    default = specs.default(name)
    if default is None and name in specs.RECIPES["seed"]:
        text += f" \\[default: from the recipe: seed {specs.RECIPES['seed'][name]}, scratch {specs.RECIPES['scratch'][name]}]"
    elif default is not None:
        text += f" \\[default: {str(default).lower() if isinstance(default, bool) else default}]"
    return text + (" Grid: comma list or repeat." if grid else "")


def takes_list(name: str) -> bool:
    """Whether ``zoo train --NAME`` takes comma lists or repeats (a grid axis): what grids may vary, bools aside."""
    return bool(specs.metadata(name).get("grid")) and specs.kind(name) is not bool


def train_option(name: str) -> inspect.Parameter:
    """Option ``name`` of ``zoo train``: a flag pair for a bool, a list for what grids vary, else one value."""
    if specs.kind(name) is bool:
        return flag_option(name)
    if takes_list(name):
        one = specs.metadata(name).get("metavar")
        return _parameter(name, Optional[List[str]], typer.Option(
            None, specs.option_flag(name), metavar=f"{one}[,{one}...]" if one else "VALUE[,VALUE...]",
            show_default=False, help=option_help(name)))
    return single_option(name)


def flag_option(name: str) -> inspect.Parameter:
    """A bool option as --NAME/--no-NAME; not given: None (the spec's default, or the recipe's)."""
    flag = specs.option_flag(name)
    return _parameter(name, Optional[bool], typer.Option(None, f"{flag}/--no-{flag[2:]}", show_default=False,
                                                         help=option_help(name, grid=False)))


def single_option(name: str) -> inspect.Parameter:
    """An option that takes one value (typed as the field, its lower bound checked by the parser for numbers)."""
    meta, want = specs.metadata(name), specs.kind(name)
    flags = [specs.option_flag(name)] + ([meta["short"]] if meta.get("short") else [])
    extra: dict[str, Any] = {"metavar": meta["metavar"]} if meta.get("metavar") else {}
    if want in (int, float) and meta.get("min") is not None:
        extra["min"] = meta["min"]
    return _parameter(name, Optional[want], typer.Option(None, *flags, show_default=False,
                                                         help=option_help(name, grid=False), **extra))


def search_option(name: str) -> inspect.Parameter:
    """Option ``name`` of ``zoo tune``: one value (fixed), a list A,B (categorical) or, for a number, a range
    LOW..HIGH (on a log scale where the spec says so)."""
    number = specs.kind(name) in (int, float)
    how = ("a range LOW..HIGH" + (" (log scale)" if specs.log_scale(name) else "") + ", a list A,B or one value"
           if number else "a list A,B or one value")
    return _parameter(name, Optional[List[str]], typer.Option(
        None, specs.option_flag(name), metavar="LOW..HIGH|A,B" if number else "A,B", show_default=False,
        help=f"{specs.help_of(name)} Search: {how}."))


def spec_parameters(make: Callable[[str], inspect.Parameter], names: Iterable[str], *,
                    custom: Optional[Mapping[str, inspect.Parameter]] = None,
                    after: Optional[Mapping[str, Sequence[inspect.Parameter]]] = None) -> list[inspect.Parameter]:
    """One parameter per option in ``names``, in command-line order, made by ``make`` unless ``custom`` gives the
    command's own for it; the parameters of ``after[name]`` (a command's own options) follow option ``name``."""
    custom, after = custom or {}, after or {}
    out = []
    for name in command_order(names):
        out.append(custom[name] if name in custom else make(name))
        out.extend(after.get(name, ()))
    return out


def command_order(names: Iterable[str]) -> list[str]:
    """``names`` in field order, except that an option whose metadata names another as ``after`` follows it
    (--split-seed beside --seed, while its params row stays last). The order of the help, and of a grid's axes."""
    names = list(names)
    follows: dict[str, list[str]] = {}
    for name in names:
        lead = specs.metadata(name).get("after")
        if lead in names:
            follows.setdefault(lead, []).append(name)
    moved = {name for group in follows.values() for name in group}
    out: list[str] = []

    def place(name: str) -> None:
        out.append(name)
        for other in follows.get(name, ()):
            place(other)

    for name in names:
        if name not in moved:
            place(name)
    return out


def with_parameters(function: Callable, parameters: Sequence[inspect.Parameter]) -> Callable:
    """``function`` with the signature (and annotations) Typer reads its options from."""
    function.__signature__ = inspect.Signature(parameters)  # type: ignore[attr-defined]
    function.__annotations__ = {p.name: p.annotation for p in parameters}
    return function


def _parameter(name: str, annotation: Any, default: Any) -> inspect.Parameter:
    return inspect.Parameter(name, KEYWORD, annotation=annotation, default=default)
