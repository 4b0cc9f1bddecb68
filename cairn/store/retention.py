"""Which points a retention policy keeps (grandfather-father-son), as a pure function.

Each rule looks at the points newest first and keeps the newest point of each of its
periods (hour, day, ISO week, month, year) until it has kept its count of periods; rules
are independent and a point kept by any rule stays (restic's semantics). A count of ``0``
means *every* period: ``--keep-monthly 0`` keeps one point per month forever, which is how
long-term (infinite) cloud retention is written. A rule not given keeps nothing.
``--keep-last 0`` is refused: borg and restic read it as "none", a period rule's 0 reads
"all", and either reading would surprise someone.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass, fields

from cairn.errors import UsageError
from cairn.store.catalog import RecoveryPoint

_PERIODS = {
    "hourly": "%Y-%m-%d %H",
    "daily": "%Y-%m-%d",
    "weekly": "%G-W%V",
    "monthly": "%Y-%m",
    "yearly": "%Y",
}


@dataclass(frozen=True)
class Policy:
    last: int | None = None
    hourly: int | None = None
    daily: int | None = None
    weekly: int | None = None
    monthly: int | None = None
    yearly: int | None = None

    def __post_init__(self) -> None:
        for f in fields(self):
            value = getattr(self, f.name)
            if value is not None and value < 0:
                raise UsageError(f"--keep-{f.name} must be 0 (keep all) or more, not {value}")
        if self.last == 0:
            raise UsageError("--keep-last 0 (last=0) is refused: borg and restic read it as "
                             "keep none, a period rule's 0 as keep every period; give the "
                             "number of newest points to keep, or leave the rule out")

    @property
    def empty(self) -> bool:
        return all(getattr(self, f.name) is None for f in fields(self))

    @classmethod
    def parse(cls, text: str) -> Policy:
        """``"hourly=24,daily=14,last=3"`` as in a schedule or a config file."""
        values: dict[str, int] = {}
        names = {f.name for f in fields(cls)}
        for part in filter(None, (p.strip() for p in text.split(","))):
            name, _, count = part.partition("=")
            if name not in names or not count.strip().isdigit():
                raise UsageError(f"retention rule {part!r} is not NAME=COUNT with NAME one of "
                                 f"{', '.join(sorted(names))}")
            values[name] = int(count)
        return cls(**values)


def select(points: Sequence[RecoveryPoint], policy: Policy) -> dict[str, list[str]]:
    """Map the id of each point to keep to the rules that keep it."""
    if policy.empty:
        raise UsageError("no retention rule given: pass at least one --keep-* option "
                         "(a prune with no rule would delete every point)")
    newest_first = sorted(points, key=lambda p: (p.created, p.seq), reverse=True)
    keep: dict[str, list[str]] = {}
    if policy.last is not None:
        for p in newest_first[: policy.last]:
            keep.setdefault(p.id, []).append("last")
    for rule, fmt in _PERIODS.items():
        count = getattr(policy, rule)
        if count is None:
            continue
        seen: set[str] = set()
        for p in newest_first:
            period = time.strftime(fmt, time.localtime(p.created))
            if period in seen:
                continue
            if count and len(seen) >= count:
                break
            seen.add(period)
            keep.setdefault(p.id, []).append(rule)
    return keep
