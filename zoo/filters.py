"""Which runs a read shows: the options `zoo list-runs`, `compare`, `plot`, `report` and the pages of `zoo ui`
share (--status, --tag, --since, --data, --group, --where), checked and turned into the store's ``RunFilter`` with
the same one-line messages wherever they come from. No Typer, no torch: the web app imports it as the CLI does.
"""

from __future__ import annotations

import re
from datetime import datetime, timedelta, timezone
from typing import Optional

from zoo.errors import ZooError
from zoo.vocab import DISPLAY_STATUSES

STATUS_CHOICES = DISPLAY_STATUSES
UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}
MAX_AGE_S = 36500 * 86400  # --since as an age: 100 years
MAX_TAG_FILTERS = 50  # --tag filters (and tag= in zoo ui) in one query: SQLite's expression depth is limited


def check_choice(option: str, value: Optional[str], choices: tuple[str, ...]) -> Optional[str]:
    """``value`` lower-cased when it is one of ``choices``; otherwise a one-line error naming them."""
    if value is None:
        return None
    if value.lower() not in choices:
        raise ZooError(f"Unknown {option} '{value}': choose one of {', '.join(choices)}.")
    return value.lower()


def parse_tags(values: Optional[list[str]]) -> list[tuple[str, str]]:
    """Repeated ``--tag key=value`` options as (key, value) pairs, in order (to label runs and to filter them)."""
    tags = []
    for value in values or []:
        key, sep, tag_value = value.partition("=")
        if not sep or not key.strip():
            raise ZooError(f"Bad --tag '{value}': write it as key=value, e.g. --tag experiment=baseline.")
        tags.append((key.strip(), tag_value.strip()))
    return tags


def parse_since(text: str) -> datetime:
    """'2h', '3d', '1w', '30m' ago, or an ISO date/time (local unless it says otherwise) -> naive UTC."""
    match = re.fullmatch(r"(\d+(?:\.\d+)?)\s*([smhdw])", text.strip().lower())
    if match:
        seconds = float(match.group(1)) * UNITS[match.group(2)]
        if seconds > MAX_AGE_S:
            raise ZooError(f"Bad --since '{text}': at most {MAX_AGE_S // UNITS['d'] // 365} years back (36500d); "
                           f"leave --since out for every run.")
        return datetime.now(timezone.utc).replace(tzinfo=None) - timedelta(seconds=seconds)
    try:
        when = datetime.fromisoformat(text.strip())
        if when.tzinfo is None:
            when = when.astimezone()  # local time
        return when.astimezone(timezone.utc).replace(tzinfo=None)
    except (ValueError, OverflowError):
        raise ZooError(
            f"Bad --since '{text}': give an ISO date or time (2024-05-01, 2024-05-01T14:30) or an age such as "
            "30m, 2h, 3d, 1w."
        ) from None


def run_filter(*, model=None, status=None, tag=None, since=None, ids=None, group=None, data=None, where=None):
    """The store's ``RunFilter`` for these options (as typed on the command line or in a page's query string)."""
    from zoo.store.queries import RunFilter

    if data is not None and not data.strip():
        raise ZooError("--data is empty: give a dataset name, a folder or a dataset fingerprint (zoo show lists it).")
    if tag and len(tag) > MAX_TAG_FILTERS:
        raise ZooError(f"{len(tag)} --tag filters given: at most {MAX_TAG_FILTERS} at once.")
    return RunFilter(
        model=model, status=check_choice("--status", status, STATUS_CHOICES), tags=parse_tags(tag),
        since=parse_since(since) if since else None, ids=ids, group=group, data=data, query=where,
    )
