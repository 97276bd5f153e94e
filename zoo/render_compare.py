"""Rendering of aggregated comparisons (``compare --by``) and paired verdicts (``compare A B``): pure functions
returning rich Tables, records, rows and markdown, like zoo.render's."""

from __future__ import annotations

from typing import Any, Optional

from rich.table import Table

from zoo.render import fmt_num, short_metric, to_markdown

TIE = "tied"  # the mark of a group whose interval overlaps the leader's
BY_MODEL_NOTE = ("Mean ± standard deviation over each model's runs; 95% interval: Student's t over the runs "
                 "(boot: one run, bootstrap over its test images); tied: the interval overlaps the leader's. "
                 "Verdicts: the paired accuracy gap and McNemar's exact test on the same test images.")


def tie_mark(group: Any, rank: int) -> str:
    if rank == 1:
        return "leader"
    return {True: TIE, False: "", None: "?"}[group.tied]


def group_columns(grouped: Any) -> list[str]:
    metric = short_metric(grouped.comparison.metric)
    return ["rank", grouped.by, "n", f"mean_{metric}", "std", "min", "max", "ci_low", "ci_high", "interval",
            "vs_leader", "runs"]


def group_records(grouped: Any) -> list[dict[str, Any]]:
    out = []
    for rank, g in enumerate(grouped.groups, 1):
        out.append({
            "rank": rank, "by": grouped.by, "group": g.label, "metric": grouped.comparison.metric, "n": g.n,
            "mean": g.mean, "std": g.std, "min": g.minimum, "max": g.maximum,
            "ci_low": g.interval[0] if g.interval else None, "ci_high": g.interval[1] if g.interval else None,
            "interval": g.interval_kind, "vs_leader": tie_mark(g, rank), "runs": g.run_ids,
        })
    return out


def group_rows(grouped: Any, *, numbers: bool) -> list[list[Any]]:
    def num(value: Optional[float]) -> Any:
        if numbers:
            return value
        return "—" if value is None else fmt_num(value)

    rows = []
    for rank, g in enumerate(grouped.groups, 1):
        lo, hi = g.interval if g.interval else (None, None)
        rows.append([rank, g.label, g.n, num(g.mean), num(g.std), num(g.minimum), num(g.maximum), num(lo), num(hi),
                     g.interval_kind or ("" if not numbers else None), tie_mark(g, rank),
                     " ".join(str(i) for i in g.run_ids)])
    return rows


def group_markdown(grouped: Any) -> str:
    headers = group_columns(grouped)
    numeric = [True, False, True, True, True, True, True, True, True, False, False, False]
    return to_markdown(headers, group_rows(grouped, numbers=False), numeric)


def interval_text(g: Any) -> str:
    if not g.interval:
        return "—"
    return f"{fmt_num(g.interval[0])} – {fmt_num(g.interval[1])}" + (" (boot)" if g.interval_kind == "bootstrap"
                                                                       else "")


def group_table(grouped: Any, width: Optional[int] = None) -> Table:
    """Groups ranked by mean: n, mean ± std, min, max, the 95% interval and whether it overlaps the leader's. A
    terminal narrower than 110 columns loses the run ids, then min and max (json and csv keep them)."""
    cmp = grouped.comparison
    arrow = "lower is better" if cmp.lower_is_better else "higher is better"
    table = Table(title=f"{short_metric(cmp.metric)} by {grouped.by}, mean over runs ({arrow})",
                  caption="95% interval: Student's t over the runs; (boot): one run, bootstrap over its test images. "
                          "tied: the interval overlaps the leader's.")
    width = width or 200
    columns = [("#", True), (grouped.by, False), ("n", True), ("mean ± std", True), ("min", True), ("max", True),
               ("95% interval", True), ("vs leader", False), ("runs", False)]
    hidden = set() if width >= 110 else {"runs"} if width >= 90 else {"runs", "min", "max"}
    for name, right in columns:
        if name not in hidden:
            table.add_column(name, justify="right" if right else "left", no_wrap=name != "runs")
    for rank, g in enumerate(grouped.groups, 1):
        spread = f"{fmt_num(g.mean)} ± {fmt_num(g.std)}" if g.std is not None else fmt_num(g.mean)
        cells = dict(zip([c for c, _ in columns], [str(rank), g.label, str(g.n), spread, fmt_num(g.minimum),
                                                   fmt_num(g.maximum), interval_text(g), tie_mark(g, rank),
                                                   " ".join(str(i) for i in g.run_ids)]))
        table.add_row(*[cells[c] for c, _ in columns if c not in hidden])
    return table


def verdict_records(verdicts: list[Any]) -> list[dict[str, Any]]:
    return [v.record() for v in verdicts]


SUMMARY_HEAD = ["model", "n", "mean ± std", "95% interval", "vs leader"]


def summary_rows(groups: list[Any]) -> list[list[str]]:
    """Rows of a per-model summary (zoo report, the ui's compare page)."""
    return [[g.label, str(g.n), f"{fmt_num(g.mean)} ± {fmt_num(g.std)}" if g.std is not None else fmt_num(g.mean),
             interval_text(g), tie_mark(g, rank)] for rank, g in enumerate(groups, 1)]
