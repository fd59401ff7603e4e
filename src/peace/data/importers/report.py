"""What an importer did: rows read, kept and dropped (with reasons), and per-domain counts."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import pandas as pd


@dataclass
class DomainCount:
    """Counts of one domain after the import."""

    domain: str
    role: str
    items: int
    rows: int
    users: int


@dataclass
class ImportReport:
    """The outcome of one import: print it with :meth:`format`, serialise it with :meth:`to_dict`.

    ``rows_*`` count interaction rows (ratings, ``.inter`` lines); ``items_*`` count items of the
    catalogue file (``movies.dat``, or the items met in ``.inter``). Every row or item left out is
    counted under the reason it was left out, so ``read == kept + sum(dropped.values())``.
    """

    source: str
    out: str
    rows_read: int = 0
    rows_kept: int = 0
    rows_dropped: dict[str, int] = field(default_factory=dict)
    items_read: int = 0
    items_kept: int = 0
    items_dropped: dict[str, int] = field(default_factory=dict)
    users: int = 0
    entities: int = 0
    relations: int = 0
    triplets: int = 0
    entities_per_item: dict[int, int] = field(default_factory=dict)
    """How many items map to 1, 2, 3 entities."""
    domains: list[DomainCount] = field(default_factory=list)
    tables: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    phi_hubs: dict[str, float] = field(default_factory=dict)
    """Entities phi left out as hubs, with the share of items each is linked to."""
    seconds: float = 0.0

    def drop_rows(self, reason: str, count: int) -> None:
        """Count ``count`` interaction rows left out for ``reason`` (zero counts are not kept)."""
        if count:
            self.rows_dropped[reason] = self.rows_dropped.get(reason, 0) + int(count)

    def drop_items(self, reason: str, count: int) -> None:
        """Count ``count`` catalogue items left out for ``reason`` (zero counts are not kept)."""
        if count:
            self.items_dropped[reason] = self.items_dropped.get(reason, 0) + int(count)

    def keep_rows(self, rows: pd.DataFrame, reasons: pd.Series, key: Sequence[str]) -> pd.DataFrame:
        """``rows`` without those that have a reason (``reasons``, aligned; NaN: none) and without
        repeats of ``key``; every row left out is counted under its reason."""
        keep = reasons.isna().to_numpy()
        for reason, count in reasons[~keep].value_counts().items():
            self.drop_rows(str(reason), int(count))
        rows = rows[keep]
        dup = rows.duplicated(list(key)).to_numpy()
        self.drop_rows(f"repeated ({', '.join(key)})", int(dup.sum()))
        return rows[~dup]

    def domain(self, name: str) -> DomainCount:
        """The counts of domain ``name``; KeyError if the import has no such domain."""
        for entry in self.domains:
            if entry.domain == name:
                return entry
        raise KeyError(name)

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dictionary of every field."""
        data = asdict(self)
        data["entities_per_item"] = {str(k): v for k, v in self.entities_per_item.items()}
        return data

    def format(self) -> str:
        """A plain-text summary for a terminal or a log."""
        lines = [f"import of {self.source}", f"  written to {self.out} in {self.seconds:.1f} s"]
        lines.append(
            f"  rows: {self.rows_read:,} read, {self.rows_kept:,} kept, "
            f"{self.rows_read - self.rows_kept:,} dropped"
        )
        for reason, count in sorted(self.rows_dropped.items(), key=lambda kv: -kv[1]):
            lines.append(f"    - {count:,} {reason}")
        lines.append(
            f"  items: {self.items_read:,} read, {self.items_kept:,} kept, "
            f"{self.items_read - self.items_kept:,} left out"
        )
        for reason, count in sorted(self.items_dropped.items(), key=lambda kv: -kv[1]):
            lines.append(f"    - {count:,} {reason}")
        sizes = ", ".join(f"{n}: {c:,}" for n, c in sorted(self.entities_per_item.items()))
        lines.append(
            f"  users: {self.users:,}; graph: {self.entities:,} entities, "
            f"{self.relations:,} relations, {self.triplets:,} triplets"
        )
        lines.append(f"  entities per item (count: items): {sizes or '-'}")
        if self.domains:
            width = max(6, *(len(d.domain) for d in self.domains))
            lines.append(f"  {'domain':<{width}}  role    {'items':>7} {'rows':>9} {'users':>7}")
            for d in self.domains:
                lines.append(
                    f"  {d.domain:<{width}}  {d.role:<6}  {d.items:>7,} {d.rows:>9,} {d.users:>7,}"
                )
        if self.tables:
            lines.append(f"  tables: {', '.join(self.tables)}")
        for note in self.notes:
            lines.append(f"  note: {note}")
        return "\n".join(lines)


def count_domains(
    inter: pd.DataFrame, domains: Sequence[tuple[str, str]], report: ImportReport
) -> None:
    """Fill the per-domain counts of ``report`` from the final interactions."""
    grouped = inter.groupby("domain", sort=False)
    items = grouped["item"].nunique()
    users = grouped["user"].nunique()
    rows = grouped.size()
    report.domains = [
        DomainCount(
            domain=name,
            role=role,
            items=int(items.get(name, 0)),
            rows=int(rows.get(name, 0)),
            users=int(users.get(name, 0)),
        )
        for name, role in domains
    ]
    report.rows_kept = len(inter)
    report.users = int(inter["user"].nunique())
