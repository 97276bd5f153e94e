"""Honest comparisons of recorded runs: groups of runs (a model's seeds) summarised with their uncertainty, ties
with the leader, and the paired verdict between two sides (``zoo compare A B``).

Pure: plain values in (metric values, seeds, split fingerprints, zoo.predictions.Predictions), dataclasses out;
the store reads them, zoo.render_compare prints them. Standard library only.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Optional, Sequence

from zoo import stats
from zoo.predictions import Predictions


@dataclass(frozen=True)
class Member:
    """One run as a comparison sees it."""

    run_id: int
    value: float  # the metric ranked on
    seed: Optional[int] = None
    split: Optional[str] = None  # split fingerprint: runs with the same one share their test images
    predictions: Optional[Predictions] = None
    test_size: Optional[int] = None  # test images: with an accuracy, enough for a one-run interval


@dataclass
class GroupSummary:
    """One group (a model, or a value of a param): n runs, mean, std, min, max and a 95% interval of the metric."""

    label: str
    members: list[Member]
    mean: float
    std: Optional[float]
    minimum: float
    maximum: float
    interval: Optional[tuple[float, float]]
    interval_kind: Optional[str]  # 't' (over runs), 'bootstrap' (one run, over its test images) or None
    tied: Optional[bool] = None  # with the leader: intervals overlap (None: the leader, or unknown)

    @property
    def n(self) -> int:
        return len(self.members)

    @property
    def run_ids(self) -> list[int]:
        return [m.run_id for m in self.members]


def summarize(label: str, members: Sequence[Member], *, accuracy: bool, bounded: bool = False) -> GroupSummary:
    """A group's figures. The interval: Student's t over its runs when n >= 2 (kept within 0..1 for a
    ``bounded`` metric: accuracy, F1...); for one run of an accuracy with recorded predictions, a bootstrap over
    its test images (exact: the same every time); otherwise none."""
    values = [m.value for m in members]
    interval, kind = stats.mean_interval(values), "t"
    if interval is not None and bounded:
        interval = (max(0.0, interval[0]), min(1.0, interval[1]))
    if interval is None:
        kind = None
        one = members[0]
        if accuracy and one.predictions is not None and len(one.predictions):
            interval, kind = stats.bootstrap_interval(list(one.predictions.correct().values())), "bootstrap"
        elif accuracy and one.test_size:  # a run recorded before predictions: its accuracy and test size suffice
            interval = stats.accuracy_bootstrap(round(one.value * one.test_size), one.test_size)
            kind = "bootstrap" if interval else None
    return GroupSummary(label, list(members), stats.mean(values), stats.stdev(values), min(values), max(values),
                        interval, kind)


def rank_groups(groups: dict[str, Sequence[Member]], *, lower_is_better: bool,
                accuracy: bool) -> list[GroupSummary]:
    """Every group summarised, best mean first; each marked tied when its interval overlaps the leader's. A metric
    where higher is better (accuracy, F1, precision, recall) is taken to lie within 0..1."""
    out = [summarize(label, members, accuracy=accuracy, bounded=not lower_is_better)
           for label, members in groups.items() if members]
    out.sort(key=lambda g: (g.mean if lower_is_better else -g.mean, g.label))
    if out:
        leader = out[0]
        for g in out[1:]:
            g.tied = stats.overlaps(g.interval, leader.interval)
    return out


# ------------------------------------------------------------------------------------------------- A vs B


@dataclass
class Verdict:
    """``zoo compare A B``: the paired gap of A over B and its one-sentence reading."""

    first: str
    second: str
    gap: Optional[stats.PairedGap]  # None when nothing could be paired
    seeds: int = 0  # matched pairs of runs pooled
    reason: str = ""  # why nothing could be paired
    pairs: list[tuple[int, int]] = field(default_factory=list)  # (run of A, run of B) pooled

    @property
    def significant(self) -> bool:
        return self.gap is not None and self.gap.p < 0.05

    def sentence(self) -> str:
        if self.gap is None:
            return f"{self.first} vs {self.second}: cannot pair their test predictions ({self.reason})."
        g = self.gap
        detail = (f"{_points(g.gap)} points (95% CI {_points(g.low)} to {_points(g.high)}), {format_p(g.p)} "
                  f"(McNemar's exact test on {g.pairs} paired test predictions"
                  f"{f', {self.seeds} seeds pooled' if self.seeds > 1 else ''}).")
        if not self.significant:
            return f"No detectable difference between {self.first} and {self.second} on this data: {detail}"
        if g.gap >= 0:
            return f"{self.first} beats {self.second} on this data: {detail}"
        flipped = f"{_points(-g.gap)} points (95% CI {_points(-g.high)} to {_points(-g.low)}), " + detail.split(
            "), ", 1)[1]
        return f"{self.second} beats {self.first} on this data: {flipped}"

    def record(self) -> dict:
        g = self.gap
        return {"first": self.first, "second": self.second, "verdict": self.sentence(),
                "significant": self.significant, "seeds": self.seeds, "pairs": [list(p) for p in self.pairs],
                "paired_predictions": g.pairs if g else 0, "first_only_right": g.first_only if g else None,
                "second_only_right": g.second_only if g else None, "gap": g.gap if g else None,
                "gap_low": g.low if g else None, "gap_high": g.high if g else None, "p_value": g.p if g else None}


def _points(fraction: float) -> str:
    return f"{100 * fraction:+.1f}"


def format_p(p: float) -> str:
    if p < 0.001:
        return "p < 0.001"
    return f"p = {p:.3f}" if p < 0.01 else f"p = {p:.2f}"


def match_runs(first: Sequence[Member], second: Sequence[Member]) -> list[tuple[Member, Member]]:
    """The runs to pair: those of one split and one seed on both sides; when each side is a single run on the
    same split, those two whatever their seeds."""
    a = [m for m in first if m.predictions is not None and m.split]
    b = [m for m in second if m.predictions is not None and m.split]
    by_key = {(m.split, m.seed): m for m in reversed(b)}  # the first run of a (split, seed) wins
    pairs, used = [], set()
    for m in a:
        other = by_key.get((m.split, m.seed))
        if other is not None and (m.split, m.seed) not in used and other.run_id != m.run_id:
            used.add((m.split, m.seed))
            pairs.append((m, other))
    if not pairs and len(a) == 1 and len(b) == 1 and a[0].split == b[0].split and a[0].run_id != b[0].run_id:
        pairs.append((a[0], b[0]))
    return pairs


def verdict(first_label: str, first: Sequence[Member], second_label: str, second: Sequence[Member]) -> Verdict:
    """The paired verdict of ``first`` against ``second``: every matched pair's test images, pooled."""
    pairs = match_runs(first, second)
    if not pairs:
        return Verdict(first_label, second_label, None, reason=_why_unpaired(first, second))
    right_a: list[bool] = []
    right_b: list[bool] = []
    for a, b in pairs:
        ca, cb = a.predictions.correct(), b.predictions.correct()
        shared = [i for i in ca if i in cb]
        right_a += [ca[i] for i in shared]
        right_b += [cb[i] for i in shared]
    if not right_a:
        return Verdict(first_label, second_label, None, reason="no test image in common")
    return Verdict(first_label, second_label, stats.paired_gap(right_a, right_b), seeds=len(pairs),
                   pairs=[(a.run_id, b.run_id) for a, b in pairs])


def _why_unpaired(first: Sequence[Member], second: Sequence[Member]) -> str:
    if not any(m.predictions for m in first) or not any(m.predictions for m in second):
        return "runs recorded before zoo kept test predictions; train them again to pair them"
    splits_a = {m.split for m in first if m.predictions}
    splits_b = {m.split for m in second if m.predictions}
    if not splits_a & splits_b:
        return "their test sets differ: train both with the same --split-seed"
    return "no seed trained on both sides: train both with the same --seed values"
