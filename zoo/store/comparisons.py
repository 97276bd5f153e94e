"""Read queries behind honest comparisons: runs grouped by model or param with every member (not the best one),
their seeds, splits and recorded test predictions (zoo.comparing does the statistics)."""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any, Optional, Sequence

from sqlalchemy import Connection, inspect, select

from zoo.comparing import GroupSummary, Member, rank_groups
from zoo.errors import UnknownName
from zoo.predictions import FORMAT, Predictions
from zoo.spec import default
from zoo.store import queries, tables
from zoo.store.views import RunView, decode_param

ACCURACY_KEY = "test_accuracy"


def predictions(conn: Connection, ids: Sequence[int]) -> dict[int, Predictions]:
    """Run id -> its recorded test predictions, for the runs that have them (none in a registry older than the
    predictions table, read-only opens leave it as it is)."""
    ids = [int(i) for i in ids]
    if not ids or not inspect(conn).has_table("predictions"):
        return {}
    t = tables.predictions
    out = {}
    for run_id, fmt, count, data in conn.execute(
            select(t.c.run_id, t.c.format, t.c.count, t.c.data).where(t.c.run_id.in_(ids))):
        if fmt == FORMAT:  # a newer layout is left out, not misread
            out[run_id] = Predictions.unpack(data, count)
    return out


def members(conn: Connection, views: Sequence[RunView], key: str) -> dict[int, Member]:
    """Each run as a Member: its value of ``key``, seed, split fingerprint and predictions."""
    ids = [v.id for v in views]
    p = tables.params
    seeds = {run_id: decode_param(value) for run_id, value in
             conn.execute(select(p.c.run_id, p.c.value).where(p.c.run_id.in_(ids), p.c.key == "seed"))}
    preds = predictions(conn, ids)
    return {v.id: Member(v.id, v.metrics[key], seeds.get(v.id), v.split_fingerprint, preds.get(v.id), v.test_size)
            for v in views}


@dataclass
class Grouped:
    """compare --by, aggregated: the plain comparison of every run (for its warnings) and the ranked groups."""

    comparison: queries.Comparison
    by: str  # 'model' or the params key
    groups: list[GroupSummary]


def group_label(value: Any) -> str:
    return "none" if value is None else str(value).lower() if isinstance(value, bool) else str(value)


def grouped(conn: Connection, metric: str, flt: queries.RunFilter, *, by: str, host: str,
            top: Optional[int] = None) -> Grouped:
    """Every run with ``metric`` that passes ``flt``, grouped by model or by a param's value, each group summarised
    (n, mean, std, min, max, 95% interval), best mean first; ``top`` keeps the best groups."""
    cmp = queries.compare(conn, metric, flt, top=None, host=host)
    key = "model" if by == "model" else queries.resolve_param(conn, by)
    views = cmp.runs
    if key == "model":
        labels = {v.id: v.model for v in views}
    else:
        p = tables.params
        values = dict(conn.execute(select(p.c.run_id, p.c.value).where(p.c.run_id.in_([v.id for v in views]),
                                                                       p.c.key == key)).all())
        if key == "split_seed":  # runs recorded before --split-seed: their split came from --seed
            seeds = dict(conn.execute(select(p.c.run_id, p.c.value).where(
                p.c.run_id.in_([v.id for v in views]), p.c.key == "seed")).all())
            values = {i: values.get(i, seeds.get(i)) for i in {v.id for v in views}}
            values = {i: v if v is not None else str(default("split_seed")) for i, v in values.items()}
        labels = {i: group_label(decode_param(v)) for i, v in values.items()}
    found = members(conn, [v for v in views if v.id in labels], cmp.metric)
    groups: dict[str, list[Member]] = {}
    for v in views:
        if v.id in labels:
            groups.setdefault(labels[v.id], []).append(found[v.id])
    ranked = rank_groups(groups, lower_is_better=cmp.lower_is_better, accuracy=cmp.metric == ACCURACY_KEY)
    if top:
        ranked = ranked[:top]
    return Grouped(replace(cmp, total=len(views)), key, ranked)


def side(conn: Connection, ref: Any, metric: str, flt: queries.RunFilter, *, host: str,
         resolve_run) -> tuple[str, list[Member]]:
    """One side of ``zoo compare A B``: a recorded model name (its runs), PARAM=VALUE (the runs with that value),
    or a run. Returns its label and members."""
    text = str(ref).strip()
    key = queries.resolve_metric(conn, metric)
    r, p = tables.runs, tables.params
    models = {m.lower(): m for m in conn.scalars(select(r.c.model).distinct())}
    if text.lower() in models:
        ids = list(conn.scalars(select(r.c.id).where(r.c.model == models[text.lower()], *flt.where(conn))))
        label = models[text.lower()]
    elif "=" in text and not text.startswith("#"):
        name, _, wanted = text.partition("=")
        pkey = queries.resolve_param(conn, name.strip())
        ids = [i for i, value in conn.execute(select(p.c.run_id, p.c.value).join(r, r.c.id == p.c.run_id)
                                              .where(p.c.key == pkey, *flt.where(conn)))
               if group_label(decode_param(value)) == wanted.strip()]
        label = f"{pkey}={wanted.strip()}"
    else:
        try:
            ids = [resolve_run(text, conn)]
        except UnknownName:
            raise UnknownName(f"'{text}' is neither a recorded model ({', '.join(sorted(models.values())[:8])}), "
                              f"PARAM=VALUE nor a run id.") from None
        label = f"run {ids[0]}"
    views = [v for v in queries.run_views(conn, ids, host=host) if v.metrics.get(key) is not None]
    found = members(conn, views, key)
    return label, [found[v.id] for v in views]


@dataclass
class ModelSummary:
    """The runs of a report or a ui page, per model: the groups ranked by mean and the leader's paired verdict
    against each other model."""

    metric: str
    groups: list[GroupSummary]
    verdicts: list[Any]  # zoo.comparing.Verdict, leader first


def by_model(conn: Connection, views: Sequence[RunView], metric: str = ACCURACY_KEY) -> Optional[ModelSummary]:
    """Per-model summary of ``views`` (None when fewer than two models have ``metric``)."""
    from zoo.comparing import verdict
    from zoo.vocab import lower_is_better

    views = [v for v in views if v.metrics.get(metric) is not None]
    if len({v.model for v in views}) < 2:
        return None
    found = members(conn, views, metric)
    groups: dict[str, list[Member]] = {}
    for v in views:
        groups.setdefault(v.model, []).append(found[v.id])
    ranked = rank_groups(groups, lower_is_better=lower_is_better(metric), accuracy=metric == ACCURACY_KEY)
    leader = ranked[0]
    verdicts = [verdict(leader.label, leader.members, g.label, g.members) for g in ranked[1:]]
    return ModelSummary(metric, ranked, verdicts if metric == ACCURACY_KEY else [])
