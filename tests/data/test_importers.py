"""Importers: MovieLens-1M + Satori graph, and RecBole atomic files, on tiny hand-made files."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest

from peace.data.contract import OPTIONAL_TABLES, REQUIRED_TABLES, DataContractError, read_table
from peace.data.importers import ImportReport, PhiRule, import_movielens, import_recbole, load_cut
from peace.data.importers.cut import DEFAULT_CUT
from peace.data.importers.movielens import rarest_genre

# --------------------------------------------------------------------------------------------
# MovieLens fixtures

MOVIES = [
    "1::Alpha (1990)::Horror|Drama",  # Horror (2 movies) is rarer than Drama (3)
    "2::Beta (1991)::Drama",
    "3::Gamma (1992)::Comedy|Horror",  # Horror
    "4::Delta (1993)::Comedy",
    "5::Epsilon (1994)::Drama|Comedy",  # tie 3/3 -> Comedy by name
    "6::Zeta (1995)::Drama",  # no graph node
]
LINKS = ["1\t100", "2\t101", "3\t102", "4\t103", "5\t104"]
KG = [
    "100\tgenre\tG1",
    "101\tgenre\tG1",
    "102\tgenre\tG1",
    "102\tgenre\tG2",
    "103\tgenre\tG2",
    "104\tgenre\tG2",
    "100\tdirector\tD1",
    "102\tdirector\tD1",
    "101\tdirector\tD9",  # a leaf: degree 1, never chosen
    "100\tlang\tL",
    "101\tlang\tL",
    "102\tlang\tL",
    "103\tlang\tL",
    "104\tlang\tL",
]
RATINGS = [
    "1::1::5::100",
    "1::2::3::101",
    "1::4::4::102",
    "2::1::2::103",
    "2::3::5::104",
    "2::5::1::105",
    "3::2::4::106",
    "3::4::3::107",
    "3::5::5::108",
    "3::6::5::109",  # movie without a graph node
    "3::99::5::110",  # movie not in movies.dat
    "3::5::5::108",  # exact repeat
]
USERS = ["1::F::1::10::48067", "2::M::56::16::70072", "3::M::25::15::E2A4H"]
CUT = """
[domains.Horror]
role = "target"
genres = ["Horror"]

[domains.Drama]
role = "source"
genres = ["Drama"]

[domains.Comedy]
role = "source"
genres = ["Comedy"]

[phi]
include_item_node = true
neighbours = 2
max_per_relation = 1
max_item_share = 1.0
min_degree = 2
relation_priority = ["genre", "director", "lang"]
"""


def _write(path: Path, lines: list[str], encoding: str = "utf-8") -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(("\n".join(lines) + "\n").encode(encoding))
    return path


@pytest.fixture
def ml(tmp_path: Path) -> tuple[Path, Path, Path]:
    """A tiny ML-1M folder, a Satori-like graph folder and a cut TOML."""
    movielens, kg = tmp_path / "ml-1m", tmp_path / "kg"
    _write(movielens / "movies.dat", MOVIES)
    _write(movielens / "ratings.dat", RATINGS)
    _write(movielens / "users.dat", USERS)
    _write(kg / "item_index2entity_id.txt", LINKS)
    _write(kg / "kg.txt", KG)
    cut = tmp_path / "cut.toml"
    cut.write_text(CUT)
    return movielens, kg, cut


def _tables(out: Path) -> dict[str, pd.DataFrame]:
    names = [*REQUIRED_TABLES, *OPTIONAL_TABLES]
    return {n: t for n in names if (t := read_table(out, n, required=False)) is not None}


def _phi(tables: dict[str, pd.DataFrame]) -> dict[str, list[str]]:
    phi = tables["item_entities"].sort_values(["item", "rank"])
    return {item: list(group["entity"]) for item, group in phi.groupby("item")}


# --------------------------------------------------------------------------------------------
# MovieLens: happy path


def test_movielens_writes_the_contract_tables(ml, tmp_path):
    movielens, kg, cut = ml
    out = tmp_path / "out"
    report = import_movielens(movielens, kg, out, cut=cut)
    tables = _tables(out)
    assert set(tables) == {
        "interactions",
        "domains",
        "item_entities",
        "triplets",
        "user_profiles",
        "item_profiles",
    }
    for name in REQUIRED_TABLES:
        assert list(tables[name].columns) == list(REQUIRED_TABLES[name])
    inter = tables["interactions"]
    assert (inter["label"] == 1).all()
    assert inter["timestamp"].dtype.kind == "i"
    assert dict(zip(tables["domains"]["domain"], tables["domains"]["role"], strict=True)) == {
        "Horror": "target",
        "Drama": "source",
        "Comedy": "source",
    }
    assert len(tables["triplets"]) == len(KG)
    assert isinstance(report, ImportReport)


def test_movielens_rarest_genre_and_ties(ml, tmp_path):
    movielens, kg, cut = ml
    import_movielens(movielens, kg, tmp_path / "out", cut=cut)
    inter = read_table(tmp_path / "out", "interactions")
    domain = dict(zip(inter["item"], inter["domain"], strict=True))
    assert domain == {"1": "Horror", "2": "Drama", "3": "Horror", "4": "Comedy", "5": "Comedy"}
    assert rarest_genre(["Drama", "Comedy"], {"Drama": 3, "Comedy": 3}) == "Comedy"
    assert rarest_genre(["Western"], {"Drama": 3}) is None


def test_movielens_phi_rule(ml, tmp_path):
    movielens, kg, cut = ml
    import_movielens(movielens, kg, tmp_path / "out", cut=cut)
    tables = _tables(tmp_path / "out")
    phi = _phi(tables)
    assert phi == {
        "1": ["100", "G1", "D1"],  # genre, then director (shared), not the lang hub
        "2": ["101", "G1", "L"],  # D9 is a leaf (degree 1), so lang fills the slot
        "3": ["102", "G1", "D1"],  # G1/G2 tie on degree -> G1 by id; one genre per pass
        "4": ["103", "G2", "L"],
        "5": ["104", "G2", "L"],
    }
    graph = set(tables["triplets"]["head"]) | set(tables["triplets"]["tail"])
    assert set(tables["item_entities"]["entity"]) <= graph
    assert tables["item_entities"].groupby("item").size().max() <= 3


def test_movielens_phi_is_configurable(ml, tmp_path):
    movielens, kg, cut = ml
    cut.write_text(
        CUT.replace('["genre", "director", "lang"]', '["director", "genre"]').replace(
            "max_per_relation = 1", "max_per_relation = 2"
        )
    )
    import_movielens(movielens, kg, tmp_path / "out", cut=cut)
    phi = _phi(_tables(tmp_path / "out"))
    assert phi["1"] == ["100", "D1", "G1"]
    assert phi["3"] == ["102", "D1", "G1"]
    assert phi["4"] == ["103", "G2", "L"]  # unlisted relations come last


def test_movielens_notes_unknown_relations(ml, tmp_path):
    movielens, kg, cut = ml
    cut.write_text(CUT.replace('"lang"]', '"langauge"]'))
    report = import_movielens(movielens, kg, tmp_path / "out", cut=cut)
    assert any("langauge" in note for note in report.notes)


def test_movielens_report_counts_drops(ml, tmp_path):
    movielens, kg, cut = ml
    report = import_movielens(movielens, kg, tmp_path / "out", cut=cut)
    assert report.rows_read == len(RATINGS)
    assert report.rows_kept == 9
    assert report.rows_dropped == {
        "movie without a graph node in item_index2entity_id.txt": 1,
        "rating of a movie not in movies.dat": 1,
        "repeated (user, movie, timestamp)": 1,
    }
    assert report.rows_read == report.rows_kept + sum(report.rows_dropped.values())
    assert report.items_read == 6 and report.items_kept == 5
    assert report.items_dropped == {"movie without a graph node in item_index2entity_id.txt": 1}
    horror = report.domain("Horror")
    assert (horror.role, horror.items, horror.rows, horror.users) == ("target", 2, 3, 2)
    assert report.domain("Comedy").rows == 4
    assert report.entities_per_item == {3: 5}
    text = report.format()
    assert "Horror" in text and "graph node" in text
    assert report.to_dict()["rows_kept"] == 9


def test_movielens_profiles(ml, tmp_path):
    movielens, kg, cut = ml
    import_movielens(movielens, kg, tmp_path / "out", cut=cut)
    tables = _tables(tmp_path / "out")
    users = tables["user_profiles"].set_index("user")
    assert list(users.columns) == ["gender", "age", "occupation", "zip1"]
    assert users.loc["1"].tolist() == ["F", "Under 18", "K-12 student", "4"]
    assert users.loc["3", "zip1"] == "other"
    items = tables["item_profiles"].set_index("item")
    assert list(items.columns) == ["year", "n_genres"]
    assert items.loc["1", "year"] == 1990 and items.loc["1", "n_genres"] == 2
    assert "6" not in items.index


def test_movielens_latin1_fallback(ml, tmp_path):
    movielens, kg, cut = ml
    _write(movielens / "movies.dat", [*MOVIES[:1], "2::Café (1991)::Drama", *MOVIES[2:]], "latin-1")
    report = import_movielens(movielens, kg, tmp_path / "out", cut=cut)
    assert any("latin-1" in note for note in report.notes)
    assert report.rows_kept == 9


def test_movielens_output_loads(ml, tmp_path):
    from peace.data.dataset import load_dataset

    movielens, kg, cut = ml
    import_movielens(movielens, kg, tmp_path / "out", cut=cut)
    # Every table passes the contract; only the 3-row target domains are too small to split
    # (the contract's last check), which a full MovieLens import never meets.
    with pytest.raises(DataContractError, match="target domain 'Horror' has 3 rows"):
        load_dataset(tmp_path / "out")


def test_movielens_replaces_stale_tables(ml, tmp_path):
    movielens, kg, cut = ml
    out = tmp_path / "out"
    out.mkdir()
    (out / "entity_features.csv").write_text("entity,f0\nX,1\n")
    report = import_movielens(movielens, kg, out, cut=cut)
    assert not (out / "entity_features.csv").exists()
    assert any("stale" in note for note in report.notes)


def test_default_cut():
    cut = load_cut()
    roles = {d.name: d.role for d in cut.domains}
    assert sorted(n for n, r in roles.items() if r == "target") == sorted(
        ["Horror", "Crime", "War", "Children's", "Documentary", "Animation"]
    )
    assert sorted(n for n, r in roles.items() if r == "source") == ["Action", "Comedy", "Drama"]
    assert len(cut.domain_of_genre()) == 18
    assert cut.phi.include_item_node and cut.phi.neighbours == 2
    assert cut.phi.relation_priority[0] == "film.film.genre"


# --------------------------------------------------------------------------------------------
# MovieLens: errors


def _expect(match: str, func, *args, **kwargs) -> str:
    with pytest.raises(DataContractError, match=match) as info:
        func(*args, **kwargs)
    return str(info.value)


def test_movielens_missing_file(ml, tmp_path):
    movielens, kg, cut = ml
    (movielens / "ratings.dat").unlink()
    message = _expect("missing file", import_movielens, movielens, kg, tmp_path / "o", cut=cut)
    assert "ratings.dat" in message


@pytest.mark.parametrize(("sep", "name"), [(",", "comma"), ("\t", "tab")])
def test_movielens_wrong_separator(ml, tmp_path, sep, name):
    movielens, kg, cut = ml
    _write(movielens / "ratings.dat", [line.replace("::", sep) for line in RATINGS])
    message = _expect(name, import_movielens, movielens, kg, tmp_path / "o", cut=cut)
    assert "ratings.dat, line 1" in message and "'::'" in message


def test_movielens_wrong_field_count(ml, tmp_path):
    movielens, kg, cut = ml
    _write(movielens / "ratings.dat", [*RATINGS[:2], "1::3::5", *RATINGS[3:]])
    message = _expect("line 3", import_movielens, movielens, kg, tmp_path / "o", cut=cut)
    assert "3 fields where 4 are expected" in message


def test_movielens_blank_lines_keep_line_numbers(ml, tmp_path):
    movielens, kg, cut = ml
    _write(movielens / "ratings.dat", [RATINGS[0], "", RATINGS[1], "x::3::5::1"])
    _expect(r"line 4: UserID 'x'", import_movielens, movielens, kg, tmp_path / "o", cut=cut)


@pytest.mark.parametrize(
    ("line", "match"),
    [("u1::3::5::104", "UserID 'u1'"), ("2::3::5::10.5", "Timestamp '10.5'"), ("2::x::5::1", "Mo")],
)
def test_movielens_non_integer(ml, tmp_path, line, match):
    movielens, kg, cut = ml
    _write(movielens / "ratings.dat", [*RATINGS[:4], line, *RATINGS[5:]])
    message = _expect(match, import_movielens, movielens, kg, tmp_path / "o", cut=cut)
    assert "line 5" in message and "not an integer" in message


def test_movielens_kg_field_count(ml, tmp_path):
    movielens, kg, cut = ml
    _write(kg / "kg.txt", [*KG[:3], "102\tgenre", *KG[4:]])
    _expect(r"kg.txt, line 4: 2 fields", import_movielens, movielens, kg, tmp_path / "o", cut=cut)


def test_movielens_unknown_genre_in_cut(ml, tmp_path):
    movielens, kg, cut = ml
    cut.write_text(CUT.replace('genres = ["Comedy"]', 'genres = ["Comedy", "Western"]'))
    message = _expect("'Western'", import_movielens, movielens, kg, tmp_path / "o", cut=cut)
    assert "cut.toml" in message and "[domains.Comedy]" in message


def test_movielens_empty_domain_after_cut(ml, tmp_path):
    movielens, kg, cut = ml
    _write(movielens / "movies.dat", [*MOVIES[:5], "6::Zeta (1995)::Musical"])
    cut.write_text(CUT + '\n[domains.Musical]\nrole = "source"\ngenres = ["Musical"]\n')
    message = _expect("no rating left", import_movielens, movielens, kg, tmp_path / "o", cut=cut)
    assert "[domains.Musical]" in message


@pytest.mark.parametrize(
    ("edit", "match"),
    [
        (('role = "target"', 'role = "tgt"'), r"\[domains.Horror\] role = 'tgt'"),
        (('genres = ["Drama"]', 'genres = ["Drama", "Horror"]'), "listed by both"),
        (('role = "target"', 'role = "source"'), 'no domain has role = "target"'),
        (('genres = ["Comedy"]', "genres = []"), r"\[domains.Comedy\] genres"),
        (("min_degree = 2", "min_degre = 2"), r"\[phi\] has unknown key"),
        (("neighbours = 2", 'neighbours = "two"'), r"\[phi\] neighbours"),
        (("[domains.Drama]", "[domain.Drama]"), "unknown top-level key"),
        (("[domains.Drama]", "[domains.Drama"), "not valid TOML"),
    ],
)
def test_movielens_bad_cut(ml, tmp_path, edit, match):
    movielens, kg, cut = ml
    cut.write_text(CUT.replace(*edit))
    message = _expect(match, import_movielens, movielens, kg, tmp_path / "o", cut=cut)
    assert str(cut) in message


def test_movielens_missing_cut(ml, tmp_path):
    movielens, kg, _ = ml
    _expect("missing file", import_movielens, movielens, kg, tmp_path / "o", cut=tmp_path / "x")


# --------------------------------------------------------------------------------------------
# RecBole fixtures

INTER = [
    "user_id:token\titem_id:token\trating:float\ttimestamp:float",
    "u1\ti1\t5\t100",
    "u1\ti3\t4\t101",
    "u2\ti2\t3\t102",
    "u2\ti4\t5\t103",
    "u3\ti1\t2\t104",
    "u3\ti3\t1\t105",
    "u3\ti5\t4\t106",  # i5 has no link
    "u1\ti6\t4\t107",  # i6 links to an entity outside the graph
    "u3\ti3\t1\t105",  # exact repeat
]
ITEM = [
    "item_id:token\tclass:token_seq\tprice:float\tbrand:token\ttags:token_seq",
    "i1\tbooks fiction\t9.5\tacme\ta b",
    "i2\tbooks\t12\tacme\tb",
    "i3\tmusic\t3\tzeta\ta",
    "i4\tmusic jazz\t7.25\tzeta\tc",
    "i5\tbooks\t1\tacme\ta",
    "i6\tmusic\t2\tzeta\ta",
]
USER = ["user_id:token\tage:float\tgender:token", "u1\t31\tF", "u2\t45\tM", "u3\t22\tF"]
LINK = ["item_id:token\tentity_id:token", "i1\te1", "i2\te2", "i3\te3", "i4\te4", "i6\te99"]
RKG = [
    "head_id:token\trelation_id:token\ttail_id:token",
    "e1\tauthor\tp1",
    "e2\tauthor\tp1",
    "e1\ttopic\tt1",
    "e3\ttopic\tt1",
    "e4\ttopic\tt1",
    "e3\tartist\tp2",
    "e4\tartist\tp2",
    "e2\tartist\tp9",  # leaf
]


@pytest.fixture
def rb(tmp_path: Path) -> Path:
    """A tiny RecBole atomic folder ``toy/``."""
    folder = tmp_path / "toy"
    for suffix, lines in [
        ("inter", INTER),
        ("item", ITEM),
        ("user", USER),
        ("link", LINK),
        ("kg", RKG),
    ]:
        _write(folder / f"toy.{suffix}", lines)
    return folder


def test_recbole_happy_path(rb, tmp_path):
    out = tmp_path / "out"
    report = import_recbole(rb, out, domain_field="class", targets=["music"])
    tables = _tables(out)
    for name in REQUIRED_TABLES:
        assert list(tables[name].columns) == list(REQUIRED_TABLES[name])
    assert dict(zip(tables["domains"]["domain"], tables["domains"]["role"], strict=True)) == {
        "books": "source",
        "music": "target",
    }
    inter = tables["interactions"]
    assert dict(zip(inter["item"], inter["domain"], strict=True)) == {
        "i1": "books",
        "i2": "books",
        "i3": "music",
        "i4": "music",
    }
    assert (inter["label"] == 1).all() and inter["timestamp"].dtype.kind == "i"
    phi = _phi(tables)
    assert phi["i1"] == ["e1", "t1", "p1"]  # no priority: higher degree first
    assert phi["i2"] == ["e2", "p1"]  # p9 is a leaf
    assert all(len(v) <= 3 for v in phi.values())
    assert report.rows_dropped == {
        "item without an entity in .link": 1,
        "item whose linked entities are in no triplet of .kg": 1,
        "repeated (user, item, timestamp)": 1,
    }
    assert report.rows_kept == 6 and report.items_read == 6 and report.items_kept == 4
    assert report.domain("music").rows == 3
    items = tables["item_profiles"].set_index("item")
    assert list(items.columns) == ["price", "brand"]  # no domain field, no token_seq
    assert items.loc["i4", "price"] == 7.25
    assert list(tables["user_profiles"].columns) == ["user", "age", "gender"]
    assert any("label 1" in note for note in report.notes)


def test_recbole_domain_map_with_roles(rb, tmp_path):
    dmap = tmp_path / "map.csv"
    dmap.write_text(
        "item,domain,role\ni1,A,source\ni2,A,source\ni3,B,target\ni4,B,target\ni9,C,source\n"
    )
    report = import_recbole(rb, tmp_path / "out", domain_map=dmap)
    assert [(d.domain, d.role, d.rows) for d in report.domains] == [
        ("A", "source", 3),
        ("B", "target", 3),
    ]
    assert report.rows_dropped["item without a domain"] == 2  # i5, i6


def test_recbole_domain_map_with_targets(rb, tmp_path):
    dmap = tmp_path / "map.csv"
    dmap.write_text("item,domain\ni1,A\ni2,A\ni3,B\ni4,B\n")
    report = import_recbole(rb, tmp_path / "out", domain_map=dmap, targets=["A"])
    assert {d.domain: d.role for d in report.domains} == {"A": "target", "B": "source"}


@pytest.mark.parametrize("sep", [",", "\t"])
def test_recbole_domain_map_comma_or_tab(rb, tmp_path, sep):
    dmap = tmp_path / "map.txt"
    dmap.write_text(
        "".join(
            sep.join(row) + "\n"
            for row in [
                ("item", "domain", "role"),
                ("i1", "A", "source"),
                ("i2", "A", "source"),
                ("i3", "B", "target"),
                ("i4", "B", "target"),
            ]
        )
    )
    report = import_recbole(rb, tmp_path / "out", domain_map=dmap)
    assert {d.domain: d.role for d in report.domains} == {"A": "source", "B": "target"}


def test_recbole_label_field(rb, tmp_path):
    _write(
        rb / "toy.inter",
        ["user_id:token\titem_id:token\ttimestamp:float\tlabel:float"]
        + ["u1\ti1\t1\t1", "u1\ti3\t2\t0", "u2\ti2\t3\t1", "u2\ti4\t4\t1"],
    )
    import_recbole(rb, tmp_path / "out", domain_field="class", targets=["music"])
    inter = read_table(tmp_path / "out", "interactions")
    assert sorted(inter["label"].tolist()) == [0, 1, 1, 1]


def test_recbole_phi_rule(rb, tmp_path):
    rule = PhiRule(neighbours=1, relation_priority=("topic",))
    import_recbole(rb, tmp_path / "out", domain_field="class", targets=["music"], phi=rule)
    phi = _phi(_tables(tmp_path / "out"))
    assert phi["i1"] == ["e1", "t1"] and phi["i2"] == ["e2", "p1"]
    toml = tmp_path / "phi.toml"
    toml.write_text("[phi]\ninclude_item_node = false\nneighbours = 3\n")
    import_recbole(rb, tmp_path / "out2", domain_field="class", targets=["music"], phi=toml)
    assert _phi(_tables(tmp_path / "out2"))["i1"] == ["t1", "p1"]


# --------------------------------------------------------------------------------------------
# RecBole: errors


def test_recbole_header_without_type(rb, tmp_path):
    _write(rb / "toy.inter", ["user_id\titem_id:token\ttimestamp:float", "u1\ti1\t1"])
    message = _expect(":type", import_recbole, rb, tmp_path / "o", "class", targets=["music"])
    assert "toy.inter, line 1" in message and "'user_id'" in message


def test_recbole_unknown_type(rb, tmp_path):
    _write(rb / "toy.inter", ["user_id:token\titem_id:int\ttimestamp:float", "u1\ti1\t1"])
    _expect("type 'int'", import_recbole, rb, tmp_path / "o", "class", targets=["music"])


def test_recbole_missing_required_field(rb, tmp_path):
    _write(rb / "toy.inter", ["user_id:token\titem_id:token\trating:float", "u1\ti1\t1"])
    message = _expect("timestamp", import_recbole, rb, tmp_path / "o", "class", targets=["music"])
    assert "missing required field" in message


def test_recbole_missing_domain_field(rb, tmp_path):
    _expect("'genre'", import_recbole, rb, tmp_path / "o", "genre", targets=["music"])


def test_recbole_missing_file(rb, tmp_path):
    (rb / "toy.link").unlink()
    message = _expect(
        "missing file", import_recbole, rb, tmp_path / "o", "class", targets=["music"]
    )
    assert "toy.link" in message


def test_recbole_wrong_field_count(rb, tmp_path):
    _write(rb / "toy.inter", [*INTER[:3], "u2\ti2\t3", *INTER[4:]])
    message = _expect("line 4", import_recbole, rb, tmp_path / "o", "class", targets=["music"])
    assert "3 fields where 4 are expected" in message


def test_recbole_comma_separated(rb, tmp_path):
    _write(rb / "toy.inter", [line.replace("\t", ",") for line in INTER])
    _expect("comma", import_recbole, rb, tmp_path / "o", "class", targets=["music"])


def test_recbole_bad_timestamp(rb, tmp_path):
    _write(rb / "toy.inter", [*INTER[:2], "u1\ti3\t4\tyesterday", *INTER[3:]])
    message = _expect("line 3", import_recbole, rb, tmp_path / "o", "class", targets=["music"])
    assert "'yesterday'" in message


def test_recbole_bad_label(rb, tmp_path):
    _write(
        rb / "toy.inter",
        ["user_id:token\titem_id:token\ttimestamp:float\tlabel:float", "u1\ti1\t1\t4"],
    )
    _expect("line 2: label", import_recbole, rb, tmp_path / "o", "class", targets=["music"])


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({}, "exactly one of domain_field"),
        ({"domain_field": "class", "domain_map": Path("x.csv")}, "got both"),
        ({"domain_field": "class"}, "no roles given"),
        ({"domain_field": "class", "targets": ["books", "music"]}, "no source domain"),
        ({"domain_field": "class", "targets": ["film"]}, r"\['film'\] are not domains"),
        ({"domain_field": "price", "targets": ["music"]}, "must be token or token_seq"),
    ],
)
def test_recbole_domain_errors(rb, tmp_path, kwargs, match):
    _expect(match, import_recbole, rb, tmp_path / "o", **kwargs)


def test_recbole_domain_map_errors(rb, tmp_path):
    dmap = tmp_path / "map.csv"
    dmap.write_text("item;domain\ni1;A\n")
    _expect("semicolon", import_recbole, rb, tmp_path / "o", domain_map=dmap, targets=["A"])
    dmap.write_text("item,domain\ni1,A\ni1,B\n")
    _expect("line 3", import_recbole, rb, tmp_path / "o", domain_map=dmap, targets=["A"])
    dmap.write_text("item,domain,role\ni1,A,target\ni3,B,maybe\n")
    _expect("role 'maybe'", import_recbole, rb, tmp_path / "o", domain_map=dmap)


def test_recbole_empty_domain(rb, tmp_path):
    dmap = tmp_path / "map.csv"
    dmap.write_text("item,domain\ni1,A\ni2,A\ni3,B\ni4,B\ni5,C\n")  # i5 has no link
    message = _expect(
        "'C' has no interaction left",
        import_recbole,
        rb,
        tmp_path / "o",
        domain_map=dmap,
        targets=["B"],
    )
    assert "map.csv" in message


def test_movielens_phi_skips_hubs(ml, tmp_path):
    """Entities linked to more than max_item_share of the items are never picked, and the
    import report says which they were."""
    movielens, kg, cut = ml
    cut.write_text(CUT.replace("max_item_share = 1.0", "max_item_share = 0.5\nhub_min_items = 2"))
    report = import_movielens(movielens, kg, tmp_path / "out", cut=cut)
    phi = _phi(_tables(tmp_path / "out"))
    hubs = set(report.phi_hubs)
    assert hubs == {"G1", "G2", "L"}
    assert all(share > 0.5 for share in report.phi_hubs.values())
    assert not hubs & {e for ents in phi.values() for e in ents}
    assert phi["1"] == ["100", "D1"]  # the shared director stays
    assert any("hub" in note for note in report.notes)


@pytest.mark.parametrize(
    ("file", "moved"),
    [
        ("ml1m_validation_cut.toml", ("Sci-Fi", "Romance", "Adventure")),
        (
            "ml1m_validation_small_cut.toml",
            ("Film-Noir", "Fantasy", "Western", "Mystery", "Musical"),
        ),
    ],
)
def test_validation_cuts_move_source_genres_to_validation_domains(file, moved) -> None:
    default = load_cut()
    validation = load_cut(DEFAULT_CUT.parent / file)
    benchmark = {s.name: s.genres for s in default.domains if s.role == "target"}
    targets = {s.name: list(s.genres) for s in validation.domains if s.role == "target"}
    assert set(targets) - set(benchmark) == set(moved)
    assert all(targets[name] == [name] for name in moved)
    assert {s.name: s.genres for s in validation.domains if s.name in benchmark} == benchmark
    assert validation.phi == default.phi
    genres = {g for s in default.domains for g in s.genres}
    assert {g for s in validation.domains for g in s.genres} == genres
