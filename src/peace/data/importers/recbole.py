"""Import RecBole atomic files into a peace dataset folder.

A RecBole dataset is one folder ``<name>/`` holding ``<name>.inter`` (interactions), ``<name>.kg``
(triplets), ``<name>.link`` (item -> entity) and optionally ``<name>.item`` and ``<name>.user``.
Each file is tab-separated and starts with a header of ``field:type`` entries, type being one of
``token``, ``token_seq`` (space-separated tokens), ``float`` or ``float_seq``. The fields read are
RecBole's defaults: ``user_id``, ``item_id``, ``timestamp`` and (optional) ``label`` in ``.inter``;
``head_id``, ``relation_id``, ``tail_id`` in ``.kg``; ``item_id``, ``entity_id`` in ``.link``.

Domains come either from a field of ``.item`` (``domain_field``; for a ``token_seq`` field the
first token) or from a domain map (CSV or TSV with columns ``item``, ``domain`` and optionally ``role``).
See ``docs/importing.md``.
"""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import pandas as pd

from peace.data.contract import ROLES, DataContractError
from peace.data.importers.atomic import (
    AtomicFile,
    check_unique,
    read_atomic,
    read_labels,
    read_profiles,
    read_timestamps,
    read_triplets,
    token_ids,
)
from peace.data.importers.files import guess_separator, require_file, write_tables
from peace.data.importers.phi import DropReasons, PhiRule, phi_graph, phi_table, select_phi
from peace.data.importers.report import ImportReport, count_domains

DROP_REASONS = DropReasons(
    no_domain="item without a domain",
    no_nodes="item without an entity in .link",
    unlinked="item whose linked entities are in no triplet of .kg",
    empty="item with no entity under the phi rule",
)
"""Why an item of ``.inter`` is left out, as the import report says."""


def import_recbole(
    atomic: Path,
    out: Path,
    domain_field: str | None = None,
    domain_map: Path | None = None,
    targets: list[str] | None = None,
    phi: PhiRule | str | Path | None = None,
) -> ImportReport:
    """Import the RecBole atomic folder ``atomic`` into the dataset folder ``out``.

    Args:
        atomic: folder with ``<name>.inter``, ``.kg``, ``.link`` (optionally ``.item``, ``.user``).
        out: dataset folder to write (created; contract tables already there are replaced).
        domain_field: a ``token`` or ``token_seq`` field of ``.item`` holding each item's domain
            (first token of a ``token_seq``).
        domain_map: a comma- or tab-separated file with columns ``item``, ``domain`` and
            optionally ``role``.
        targets: the target domains; the others are sources. May be left out when the domain map
            has a ``role`` column.
        phi: the rule mapping an item to entities: a :class:`PhiRule`, or a TOML file with a
            ``[phi]`` table; None is ``PhiRule()`` (linked entities, then up to 2 neighbours by
            degree, one per relation first).

    Exactly one of ``domain_field`` and ``domain_map`` must be given. Without a ``label`` field in
    ``.inter`` every row is a positive (label 1).

    Raises:
        DataContractError: naming the file, the line or value and the fix.
    """
    start = time.perf_counter()
    atomic, out = Path(atomic), Path(out)
    if (domain_field is None) == (domain_map is None):
        raise DataContractError(
            f"{atomic}: give exactly one of domain_field (a field of the .item file, e.g. "
            "'class') and domain_map (a CSV of item,domain[,role]); "
            f"got {'both' if domain_field is not None else 'neither'}."
        )
    rule = _phi_rule(phi)
    name = _dataset_name(atomic)
    report = ImportReport(source=f"RecBole atomic files {atomic / name}.*", out=str(out))

    inter = read_atomic(
        atomic / f"{name}.inter",
        ("user_id", "item_id", "timestamp"),
        "user_id:token\titem_id:token\trating:float\ttimestamp:float",
    )
    item_file = None
    if domain_field is not None or (atomic / f"{name}.item").is_file():
        item_file = read_atomic(
            atomic / f"{name}.item",
            ("item_id",) + ((domain_field,) if domain_field is not None else ()),
            "item_id:token\ttitle:token_seq\tclass:token_seq",
        )
        check_unique(item_file, "item_id")

    # -- interactions
    frame = inter.frame
    report.rows_read = len(frame)
    users = token_ids(inter, "user_id")
    items = token_ids(inter, "item_id")
    stamps = read_timestamps(inter)
    if "label" in inter.types:
        labels = read_labels(inter)
    else:
        labels = np.ones(len(frame), dtype=np.int64)
        report.notes.append("no label field in .inter: every row is a positive (label 1)")
    rows = pd.DataFrame({"user": users, "item": items, "timestamp": stamps, "label": labels})

    # -- domains and roles
    if domain_field is not None:
        assert item_file is not None
        domain_of, declared_roles, where = _domains_from_field(item_file, domain_field)
    else:
        assert domain_map is not None
        domain_of, declared_roles, where = _domains_from_map(Path(domain_map))
    seen_items = pd.unique(rows["item"])
    report.items_read = len(seen_items)
    names = list(dict.fromkeys(domain_of[i] for i in seen_items if i in domain_of))
    roles = _roles(names, declared_roles, targets, where)
    unused = sorted(set(domain_of.values()) - set(names))
    if unused:
        report.notes.append(f"domain(s) of {where} without any interaction (ignored): {unused}")

    # -- the graph and phi
    link = read_atomic(
        atomic / f"{name}.link", ("item_id", "entity_id"), "item_id:token\tentity_id:token"
    )
    kg = read_atomic(
        atomic / f"{name}.kg",
        ("head_id", "relation_id", "tail_id"),
        "head_id:token\trelation_id:token\ttail_id:token",
    )
    triplets = read_triplets(kg, report)
    links: dict[str, list[str]] = {}
    for item, entity, number in zip(
        link.frame["item_id"].tolist(), link.frame["entity_id"].tolist(), link.numbers, strict=True
    ):
        item, entity = item.strip(), entity.strip()
        if not item or not entity:
            raise DataContractError(
                f"{link.path}, line {number}: empty item_id or entity_id; fill or remove the line."
            )
        links.setdefault(item, []).append(entity)
    graph = phi_graph(triplets, (e for ents in links.values() for e in ents), rule, report)

    entities_of, reason_of = select_phi(
        graph, rule, seen_items.tolist(), domain_of, links, DROP_REASONS
    )
    for reason, count in pd.Series(reason_of, dtype=object).value_counts().items():
        report.drop_items(str(reason), int(count))

    reasons = rows["item"].map(pd.Series(reason_of, dtype=object))
    rows = report.keep_rows(rows, reasons, ("user", "item", "timestamp")).reset_index(drop=True)
    report.items_kept = len(entities_of)

    interactions = pd.DataFrame(
        {
            "user": rows["user"].to_numpy(),
            "item": rows["item"].to_numpy(),
            "domain": rows["item"].map(domain_of).to_numpy(),
            "timestamp": rows["timestamp"].to_numpy(),
            "label": rows["label"].to_numpy(np.int64),
        }
    )
    present = set(interactions["domain"].unique())
    for dom in names:
        if dom not in present:
            raise DataContractError(
                f"{where}: domain {dom!r} has no interaction left after the import (its items "
                "have no entity link, or no linked entity in the .kg file); link its items to "
                "entities of the graph, or give its items another domain."
            )
    count_domains(interactions, [(d, roles[d]) for d in names], report)
    sizes: dict[int, int] = {}
    for chosen in entities_of.values():
        sizes[len(chosen)] = sizes.get(len(chosen), 0) + 1
    report.entities_per_item = dict(sorted(sizes.items()))

    tables: dict[str, pd.DataFrame] = {
        "interactions": interactions,
        "domains": pd.DataFrame({"domain": names, "role": [roles[d] for d in names]}),
        "item_entities": phi_table(entities_of),
        "triplets": triplets,
    }
    if item_file is not None:
        skip = {"item_id"} | ({domain_field} if domain_field else set())
        profiles = read_profiles(item_file, "item_id", "item", skip, set(entities_of), report)
        if profiles is not None:
            tables["item_profiles"] = profiles
    user_path = atomic / f"{name}.user"
    if user_path.is_file():
        user_file = read_atomic(user_path, ("user_id",), "user_id:token\tage:float\tgender:token")
        check_unique(user_file, "user_id")
        kept_users = set(interactions["user"].unique())
        profiles = read_profiles(user_file, "user_id", "user", {"user_id"}, kept_users, report)
        if profiles is not None:
            tables["user_profiles"] = profiles

    report.entities = len(graph.degree)
    report.relations = int(triplets["relation"].nunique())
    report.triplets = len(triplets)
    write_tables(tables, out, report)
    report.seconds = time.perf_counter() - start
    return report


# --------------------------------------------------------------------------------------------
# helpers


def _phi_rule(phi: PhiRule | str | Path | None) -> PhiRule:
    if phi is None:
        return PhiRule()
    if isinstance(phi, PhiRule):
        return phi
    return PhiRule.from_toml(phi)


def _dataset_name(atomic: Path) -> str:
    """The ``<name>`` of the atomic files in folder ``atomic``."""
    if not atomic.is_dir():
        raise DataContractError(
            f"{atomic}: no such folder; give the folder holding <name>.inter, <name>.kg and "
            "<name>.link."
        )
    if (atomic / f"{atomic.name}.inter").is_file():
        return atomic.name
    found = sorted(p.stem for p in atomic.glob("*.inter"))
    if len(found) == 1:
        return found[0]
    if not found:
        raise DataContractError(
            f"{atomic / (atomic.name + '.inter')}: missing file (RecBole interactions); the folder "
            "needs <name>.inter, <name>.kg and <name>.link."
        )
    raise DataContractError(
        f"{atomic}: several .inter files {found}; keep one dataset per folder, named "
        f"{atomic.name}.inter."
    )


def _domains_from_field(
    item_file: AtomicFile, field: str
) -> tuple[dict[str, str], dict[str, str], str]:
    """Item -> domain from a token/token_seq field of ``.item`` (first token of a sequence)."""
    kind = item_file.types[field]
    where = f"{item_file.path} field {field!r}"
    if kind not in ("token", "token_seq"):
        raise DataContractError(
            f"{item_file.path}: domain field {field!r} has type {kind!r}; a domain field must be "
            "token or token_seq. Pick another field or use a domain map."
        )
    values = item_file.frame[field].astype(str).str.strip()
    if kind == "token_seq":
        values = values.str.split(" ").str[0].fillna("")
    items = item_file.frame["item_id"].astype(str).str.strip()
    mapping = {i: d for i, d in zip(items.tolist(), values.tolist(), strict=True) if d and i}
    return mapping, {}, where


def _domains_from_map(path: Path) -> tuple[dict[str, str], dict[str, str], str]:
    """Item -> domain, and domain -> role, from a comma- or tab-separated file with columns
    item, domain[, role] (tab-separated when the header has a tab and no comma)."""
    require_file(path, "domain map, a CSV with columns item,domain[,role]", "check the path.")
    try:
        with open(path, encoding="utf-8") as fh:
            header = fh.readline()
        sep = "\t" if "\t" in header and "," not in header else ","
        frame = pd.read_csv(path, sep=sep, dtype=str, keep_default_na=False, skipinitialspace=True)
    except (ValueError, pd.errors.ParserError, UnicodeDecodeError) as exc:
        raise DataContractError(
            f"{path}: cannot be read as CSV or TSV ({exc}); write it as a comma- or tab-separated "
            "file with a header line 'item,domain' (optionally ',role')."
        ) from exc
    frame.columns = [str(c).strip() for c in frame.columns]
    missing = [c for c in ("item", "domain") if c not in frame.columns]
    if missing:
        hint = ""
        if len(frame.columns) == 1 and guess_separator(frame.columns[0]):
            hint = f" (it looks {guess_separator(frame.columns[0])}-separated; use commas or tabs)"
        raise DataContractError(
            f"{path}: missing column(s) {missing}; the header has {list(frame.columns)}{hint}. "
            "A domain map is a CSV with header 'item,domain' (optionally ',role')."
        )
    mapping: dict[str, str] = {}
    roles: dict[str, str] = {}
    has_role = "role" in frame.columns
    role_values = frame["role"].tolist() if has_role else [""] * len(frame)
    for row, (item, domain, role) in enumerate(
        zip(frame["item"].tolist(), frame["domain"].tolist(), role_values, strict=True)
    ):
        line = row + 2
        item, domain, role = item.strip(), domain.strip(), role.strip()
        if not item or not domain:
            raise DataContractError(
                f"{path}, line {line}: empty item or domain; fill or remove the line."
            )
        if item in mapping and mapping[item] != domain:
            raise DataContractError(
                f"{path}, line {line}: item {item!r} is given domain {domain!r} but already had "
                f"{mapping[item]!r}; an item belongs to one domain, keep one line."
            )
        mapping[item] = domain
        if has_role:
            if role not in ROLES:
                raise DataContractError(
                    f"{path}, line {line}: role {role!r}; write source or target."
                )
            if roles.get(domain, role) != role:
                raise DataContractError(
                    f"{path}, line {line}: domain {domain!r} is {role!r} here but "
                    f"{roles[domain]!r} on an earlier line; give each domain one role."
                )
            roles[domain] = role
    return mapping, roles, str(path)


def _roles(
    names: list[str], declared: dict[str, str], targets: list[str] | None, where: str
) -> dict[str, str]:
    """Domain -> role from ``targets`` or the domain map's roles; at least one of each."""
    if not names:
        raise DataContractError(
            f"{where}: no item of the interactions has a domain; check that the item ids of the "
            "domain source match those of the .inter file."
        )
    if targets is not None:
        unknown = [t for t in targets if t not in names]
        if unknown:
            raise DataContractError(
                f"{where}: target(s) {unknown} are not domains of the interactions; the domains "
                f"are {names}. Fix the target names."
            )
        roles = {d: "target" if d in targets else "source" for d in names}
        clash = [d for d, r in declared.items() if d in roles and roles[d] != r]
        if clash:
            raise DataContractError(
                f"{where}: the role column says {clash[0]!r} is {declared[clash[0]]!r} but the "
                "targets given say otherwise; give roles in one place only."
            )
    elif declared:
        roles = {d: declared[d] for d in names}
    else:
        raise DataContractError(
            f"{where}: no roles given; pass targets=[...] (the target domains, e.g. "
            f"{names[-1:]}) or add a role column (source/target) to the domain map."
        )
    for role in ROLES:
        if role not in roles.values():
            raise DataContractError(
                f"{where}: no {role} domain among {names}; peace needs at least one source and "
                "one target domain. Change the targets."
            )
    return roles
