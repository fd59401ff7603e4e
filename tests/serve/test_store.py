"""The offline inference flow and the embedding store: atomic versions, checksums, parity."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pyarrow as pa
import pytest
import torch
from conftest import TINY_OVERRIDES, toy_tables

from peace.config import PeaceConfig
from peace.data.contract import write_dataset
from peace.data.dataset import Dataset, load_dataset
from peace.flows import offline_inference
from peace.flows.offline_inference import export
from peace.flows.pretrain import pretrain
from peace.flows.pretrained import load_pretrained
from peace.flows.publish import finetune_and_publish
from peace.flows.rankers import TargetDomain, ZeroShotRanker, item_vectors
from peace.serve import rankers
from peace.serve.rankers import (
    InnerProductIndex,
    ItemKeys,
    NormalRanker,
    ZeroShotScorer,
    faiss_available,
    mean_entity_vectors,
)
from peace.store import (
    POINTER,
    STALE_TEMP_SECONDS,
    USER_PARTS,
    VERSIONS,
    StoreError,
    StoreVersion,
    current_rankers,
    current_version,
    list_rankers,
    list_versions,
    published_versions,
    remove_stale_temp,
    set_current,
    set_current_ranker,
)

TINY = [*TINY_OVERRIDES, "pretrain.epochs=1", "pretrain.max_steps=6", "finetune.epochs=2"]


@pytest.fixture(scope="module")
def run(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Dataset]:
    root = tmp_path_factory.mktemp("deploy")
    data = write_dataset(toy_tables(), root / "toy")
    ds = load_dataset(data)
    pretrain(ds, PeaceConfig().override(TINY), out=root / "run", show_progress=False)
    return root / "run", ds


@pytest.fixture(scope="module")
def published(run: tuple[Path, Dataset], tmp_path_factory: pytest.TempPathFactory) -> Path:
    store = tmp_path_factory.mktemp("store")
    export(run[0], run[1], store)
    return store


def _offline_zero_shot(
    run: Path, ds: Dataset, domain: str, users: np.ndarray, mode: str = "inner"
) -> tuple[torch.Tensor, TargetDomain]:
    pre = load_pretrained(run, ds)
    target = TargetDomain(ds, ds.domain_index(domain))
    ranker = ZeroShotRanker(pre, target, mode)
    states = ranker.states(users, np.full(len(users), np.inf))
    items = torch.arange(len(target.catalogue)).expand(len(users), -1)
    return ranker(torch.as_tensor(users), states, items), target


# --------------------------------------------------------------------------- publication
def test_export_publishes_a_complete_checksummed_version(
    published: Path, run: tuple[Path, Dataset]
) -> None:
    _, ds = run
    version = current_version(published)
    assert version is not None and published_versions(published) == [version]
    folder = published / VERSIONS / version
    manifest = json.loads((folder / "manifest.json").read_text())
    assert manifest["version"] == version and manifest["as_of"] is None
    assert manifest["model_hash"] == offline_inference.model_hash(run[0])
    assert manifest["rows"]["users"] == ds.num_users
    assert manifest["rows"]["entities"] == ds.num_entities
    assert set(manifest["domains"]) == {"t1", "t2"}
    for name in (
        "users.arrow",
        "entities.arrow",
        "items.arrow",
        "prototypes.arrow",
        "scorer.safetensors",
        "catalogues/t1.arrow",
        "catalogues/t2.arrow",
    ):
        assert name in manifest["files"], name
        assert len(manifest["files"][name]["sha256"]) == 64
    loaded = StoreVersion.open(published)
    assert loaded.interests.shape == (ds.num_users, 3, 16)
    assert loaded.universal.shape == (ds.num_users, 16)
    assert len(loaded.catalogues["t1"].items) == 12
    assert not any(p.name.startswith(".tmp-") for p in (published / VERSIONS).iterdir())


def test_item_vectors_are_entity_means(published: Path, run: tuple[Path, Dataset]) -> None:
    _, ds = run
    v = StoreVersion.open(published)
    pre = load_pretrained(run[0], ds)
    table = pre.entity_table()
    offline = item_vectors(table, torch.as_tensor(ds.item_entities))
    assert torch.allclose(v.item_vectors, offline, atol=1e-6)
    assert torch.allclose(v.entity_vectors, table[: ds.num_entities], atol=1e-6)
    # An item described at run time by the same entities gets the same vector.
    rows = torch.as_tensor(ds.item_entities[:5])
    assert torch.allclose(mean_entity_vectors(v.entity_vectors, rows), offline[:5], atol=1e-6)


def test_tampered_file_is_refused(run: tuple[Path, Dataset], tmp_path: Path) -> None:
    vid = export(run[0], run[1], tmp_path)
    target = tmp_path / VERSIONS / vid / "prototypes.arrow"
    data = bytearray(target.read_bytes())
    data[-10] ^= 0xFF
    os.chmod(target, 0o644)
    target.write_bytes(bytes(data))
    with pytest.raises(StoreError, match="checksum"):
        StoreVersion.open(tmp_path)


def test_failure_mid_write_leaves_no_visible_version(
    run: tuple[Path, Dataset], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    first = export(run[0], run[1], tmp_path)
    calls = {"n": 0}
    real = offline_inference._write_arrow

    def failing(path: Path, table: object) -> None:
        calls["n"] += 1
        if calls["n"] == 3:
            raise OSError("disk full (simulated)")
        real(path, table)

    monkeypatch.setattr(offline_inference, "_write_arrow", failing)
    with pytest.raises(OSError, match="simulated"):
        export(run[0], run[1], tmp_path)
    assert published_versions(tmp_path) == [first]
    assert current_version(tmp_path) == first
    assert [p.name for p in (tmp_path / VERSIONS).iterdir()] == [first]
    StoreVersion.open(tmp_path)  # still serves


KILL_SCRIPT = """
import sys, time
from pathlib import Path
from peace.data.dataset import load_dataset
from peace.flows import offline_inference
real = offline_inference._write_arrow
n = {"calls": 0}
def slow(path, table):
    real(path, table)
    n["calls"] += 1
    if n["calls"] == 2:
        Path(sys.argv[3]).write_text("mid-write")
        time.sleep(600)
offline_inference._write_arrow = slow
offline_inference.export(sys.argv[1], load_dataset(sys.argv[4]), sys.argv[2])
"""


def test_killed_export_is_invisible(run: tuple[Path, Dataset], tmp_path: Path) -> None:
    store = tmp_path / "store"
    first = export(run[0], run[1], store)
    marker = tmp_path / "marker"
    proc = subprocess.Popen(
        [sys.executable, "-c", KILL_SCRIPT, str(run[0]), str(store), str(marker), str(run[1].root)]
    )
    try:
        for _ in range(1200):  # bounded wait: at most 120 s
            if marker.exists() or proc.poll() is not None:
                break
            time.sleep(0.1)
        assert marker.exists(), "the export never reached the middle of its writes"
        os.kill(proc.pid, signal.SIGKILL)
    finally:
        proc.kill()
        proc.wait(timeout=30)
    leftovers = [p for p in (store / VERSIONS).iterdir() if p.name != first]
    assert len(leftovers) == 1 and leftovers[0].name.startswith(".tmp-")
    assert published_versions(store) == [first] and current_version(store) == first
    assert [v["version"] for v in list_versions(store)] == [first]
    StoreVersion.open(store)
    # A later export sweeps the left-over once it is old enough.
    old = time.time() - 2 * STALE_TEMP_SECONDS
    os.utime(leftovers[0], (old, old))
    assert remove_stale_temp(store / VERSIONS) == leftovers
    assert not leftovers[0].exists()


def test_list_versions_and_roll_back(run: tuple[Path, Dataset], tmp_path: Path) -> None:
    a = export(run[0], run[1], tmp_path)
    b = export(run[0], run[1], tmp_path, as_of=700.0)
    assert a != b and current_version(tmp_path) == b
    listed = list_versions(tmp_path)
    assert [v["version"] for v in listed] == [a, b]
    assert [v["current"] for v in listed] == [False, True]
    set_current(tmp_path, a)
    assert current_version(tmp_path) == a
    assert (tmp_path / POINTER).read_text().strip() == a
    with pytest.raises(StoreError, match="no such version"):
        set_current(tmp_path, "nope")
    with pytest.raises(StoreError):
        set_current(tmp_path, "../x")


def test_as_of_cuts_histories_and_popularity(run: tuple[Path, Dataset], tmp_path: Path) -> None:
    path, ds = run
    vid = export(path, ds, tmp_path, as_of=700.0)
    v = StoreVersion.open(tmp_path, vid)
    assert v.manifest["as_of"] == 700.0
    pre = load_pretrained(path, ds)
    users = np.arange(ds.num_users)
    expected = pre.interests(users, np.full(len(users), 700.0))
    assert torch.allclose(v.interests, expected, atol=1e-6)
    inter = ds.interactions
    d = ds.domain_index("t1")
    cat = ds.domain_items(d)
    rows = inter[(inter["domain"] == d) & (inter["timestamp"] < 700.0) & (inter["label"] == 1)]
    counts = np.bincount(rows["item"], minlength=ds.num_items)[cat]
    assert np.array_equal(v.catalogues["t1"].popularity, counts)
    # Before any target row, the fallback is uniform.
    early = StoreVersion.open(tmp_path, export(path, ds, tmp_path, as_of=100.0))
    assert early.catalogues["t1"].popularity.sum() == 0
    assert early.manifest["domains"]["t1"]["popularity"] == "uniform"


# --------------------------------------------------------------------------- parity
@pytest.mark.parametrize(
    ("mode", "ties", "chunk"),
    [
        ("inner", "none", 256),
        ("inner-enhanced", "none", 256),
        ("inner-enhanced", "half", 256),
        ("inner-enhanced", "all", 256),
        ("inner-enhanced", "half", 5),
        ("decoder", "half", 256),
    ],
)
def test_zero_shot_parity(
    published: Path,
    run: tuple[Path, Dataset],
    mode: str,
    ties: str,
    chunk: int,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Online scores equal the offline ZeroShotRanker's for every zero-shot scorer, whichever
    path scores an item: the K-prototype gather, the dense code for (near) ties, in one chunk
    or several."""
    monkeypatch.setattr(rankers, "CHUNK", chunk)
    path, ds = run
    v = StoreVersion.open(published)
    assert v.manifest["zero_shot_scorer"] == "inner"
    scorer = ZeroShotScorer.from_version(v, mode)
    users = np.arange(0, ds.num_users, 3)
    offline, target = _offline_zero_shot(path, ds, "t1", users, mode)
    cat = v.catalogues["t1"]
    assert list(cat.items) == list(ds.items[target.catalogue])
    vectors = torch.from_numpy(cat.vectors)
    keys = scorer.item_keys(vectors)
    if ties != "none":  # flag items as tied: they take the dense path (the offline code)
        flags = torch.ones_like(keys.ties) if ties == "all" else torch.arange(len(vectors)) % 2 == 0
        keys = ItemKeys(keys.top, flags)
    for k, u in enumerate(users):
        row = v.user_row[str(ds.users[u])]
        online = scorer.scores(v.interests[row], vectors, keys)
        assert torch.allclose(online, offline[k], atol=1e-5), (u, online, offline[k])
        stored = scorer.scores(v.interests[row], vectors, keys, v.universal[row])
        assert torch.allclose(stored, offline[k], atol=1e-5)


def test_zero_shot_parity_without_pea(published: Path, run: tuple[Path, Dataset]) -> None:
    path, ds = run
    v = StoreVersion.open(published)
    scorer = ZeroShotScorer.from_version(v, "inner-enhanced")
    scorer.use_pea = False
    pre = load_pretrained(path, ds)
    pre.model.config.use_pea = False
    target = TargetDomain(ds, ds.domain_index("t2"))
    ranker = ZeroShotRanker(pre, target, "inner-enhanced")
    users = np.arange(5)
    offline = ranker(
        torch.as_tensor(users),
        ranker.states(users, np.full(5, np.inf)),
        torch.arange(len(target.catalogue)).expand(5, -1),
    )
    vectors = torch.from_numpy(v.catalogues["t2"].vectors)
    for u in users:
        online = scorer.scores(v.interests[v.user_row[str(ds.users[u])]], vectors, None)
        assert torch.allclose(online, offline[u], atol=1e-5)


def test_normal_ranker_parity_and_publication(
    run: tuple[Path, Dataset], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path, ds = run
    export(path, ds, tmp_path)
    result = finetune_and_publish(path, ds, tmp_path, "t1")
    assert current_rankers(tmp_path) == {"t1": result.version}
    assert [r["current"] for r in list_rankers(tmp_path, "t1")] == [True]

    def no_pickle(*args: object, **kwargs: object) -> None:
        raise AssertionError("torch.load must not be used to read published files")

    monkeypatch.setattr(torch, "load", no_pickle)
    v = StoreVersion.open(tmp_path)
    normal = NormalRanker.load(result.path)
    assert normal.manifest["store_version"] == v.version
    assert normal.manifest["model_hash"] == v.model_hash
    scorer = ZeroShotScorer.from_version(v)
    cat = v.catalogues["t1"]
    vectors = torch.from_numpy(cat.vectors)
    keys = scorer.item_keys(vectors)
    rows = normal.code_rows(list(cat.items))
    users = np.arange(0, ds.num_users, 4)
    offline = result.ranker(
        torch.as_tensor(users),
        result.ranker.states(users, np.full(len(users), np.inf)),
        torch.arange(len(cat.items)).expand(len(users), -1),
    )
    for k, u in enumerate(users):
        uid = str(ds.users[u])
        interests = v.interests[v.user_row[uid]]
        online = normal.scores(uid, scorer.user_vectors(interests, vectors, keys), vectors, rows)
        assert torch.allclose(online, offline[k].detach(), atol=1e-5)
    set_current_ranker(tmp_path, "t1", None)
    assert current_rankers(tmp_path) == {}


def test_finetune_refuses_a_store_of_another_checkpoint(
    run: tuple[Path, Dataset], tmp_path: Path
) -> None:
    with pytest.raises(StoreError, match="no published version"):
        finetune_and_publish(run[0], run[1], tmp_path, "t1")
    export(run[0], run[1], tmp_path)
    manifest_path = tmp_path / VERSIONS / current_version(tmp_path) / "manifest.json"
    manifest = json.loads(manifest_path.read_text())
    manifest["model_hash"] = "0" * 64
    os.chmod(manifest_path, 0o644)
    manifest_path.write_text(json.dumps(manifest))
    with pytest.raises(StoreError, match="another checkpoint"):
        finetune_and_publish(run[0], run[1], tmp_path, "t1")


def test_finetune_refuses_a_head_the_service_cannot_feed(
    run: tuple[Path, Dataset], tmp_path: Path
) -> None:
    """The service keeps no per-user target history, so such a head is not published."""
    export(run[0], run[1], tmp_path)
    with pytest.raises(ValueError, match="finetune.target_history = 5"):
        finetune_and_publish(
            run[0], run[1], tmp_path, "t1", overrides=["finetune.target_history=5"]
        )
    assert current_rankers(tmp_path) == {}


def test_tuned_user_parts_are_published_and_served(
    run: tuple[Path, Dataset], tmp_path: Path
) -> None:
    """``finetune.tune_user_mlp``: the ranker publishes its own Eq. 9 MLP and Eq. 2 attention,
    and the service's normal scores (the domain state of a snapshot) equal the offline
    ranker's; the store version's parts would give other scores."""
    from peace.serve.domains import attach_normal, catalogue_state
    from peace.serve.rankers import UserVectors
    from peace.serve.state import load_ranker

    path, ds = run
    export(path, ds, tmp_path)
    result = finetune_and_publish(
        path, ds, tmp_path, "t1", overrides=["finetune.tune_user_mlp=true"]
    )
    assert (result.path / USER_PARTS).is_file()
    v = StoreVersion.open(tmp_path)
    scorer = ZeroShotScorer.from_version(v)
    normal, note = load_ranker(tmp_path, v, scorer, "t1", result.version, verify=True)
    assert note is None and normal is not None and normal.manifest["head"]["user_parts"]
    assert normal.user_scorer is not scorer
    state = attach_normal(catalogue_state(v, "t1", scorer), normal)
    rows = torch.arange(state.size)
    users = np.arange(0, ds.num_users, 4)
    offline = result.ranker(
        torch.as_tensor(users),
        result.ranker.states(users, np.full(len(users), np.inf)),
        torch.arange(len(v.catalogues["t1"].items)).expand(len(users), -1),
    ).detach()
    store_parts = NormalRanker.load(result.path)
    store_parts.user_parts = None  # the store version's Eq. 9 MLP and Eq. 2 attention
    moved = 0.0
    for k, u in enumerate(users):
        uid = str(ds.users[u])
        user = UserVectors.of(v, uid, v.user_row[uid])
        online, ranker = state.score_rows(scorer, user, rows)
        assert ranker == "normal"
        torch.testing.assert_close(online, offline[k], atol=1e-5, rtol=1e-5)
        items = state.vectors
        plain = store_parts.scores(
            uid,
            store_parts.user_vectors(scorer, user.interests, items, state.keys),
            items,
            state.normal_rows,
            user.universal,
            state.bias if state.head_bias is None else state.head_bias,
        )
        moved = max(moved, float((plain - offline[k]).abs().max()))
    assert moved > 1e-4
    # a ranker with its own parts is not scored unbound
    with pytest.raises(StoreError, match="bind"):
        NormalRanker.load(result.path).user_vectors(scorer, user.interests, items, state.keys)
    # nor bound to a store version whose prototypes P are not the ones it was trained with
    other = NormalRanker.load(result.path)
    assert other.user_parts is not None
    other.user_parts["prototypes.weight"] = other.user_parts["prototypes.weight"] + 0.5
    with pytest.raises(StoreError, match="prototypes P differ"):
        other.bind(scorer)


# --------------------------------------------------------------------------- ANN index
@pytest.mark.parametrize("backend", ["numpy", "faiss"])
def test_inner_product_index(backend: str) -> None:
    if backend == "faiss" and not faiss_available():
        pytest.skip("faiss-cpu is not installed")
    rng = np.random.default_rng(0)
    x = rng.normal(size=(3000, 16)).astype(np.float32)
    exhaustive = InnerProductIndex(x, n_lists=20, n_probe=20, backend=backend)
    q = rng.normal(size=16).astype(np.float32)
    exact = np.argsort(-(x @ q))[:10]
    assert list(exhaustive.search(q, 10)) == list(exact)
    partial = InnerProductIndex(x, n_lists=40, n_probe=10, backend=backend)
    recall = np.mean(
        [
            len(set(partial.search(qq, 10)) & set(np.argsort(-(x @ qq))[:10])) / 10
            for qq in rng.normal(size=(20, 16)).astype(np.float32)
        ]
    )
    assert recall >= 0.6


def test_parity_with_served_score_switches(tmp_path: Path) -> None:
    """With the user prior of Eq. 2, the recency bias of Eq. 1 and the head's interaction
    features on, the stored vectors and the published head still give the offline scores
    (zero-shot and normal)."""
    data = write_dataset(toy_tables(), tmp_path / "toy")
    ds = load_dataset(data)
    cfg = PeaceConfig().override(
        [
            *TINY,
            "model.user_prior=true",
            "model.recency=true",
            'pretrain.served_loss="softmax"',
            "finetune.interaction_features=true",
        ]
    )
    pretrain(ds, cfg, out=tmp_path / "run", show_progress=False)
    store = tmp_path / "store"
    export(tmp_path / "run", ds, store)
    result = finetune_and_publish(tmp_path / "run", ds, store, "t1")
    v = StoreVersion.open(store)
    scorer = ZeroShotScorer.from_version(v)
    assert scorer.fusion.prior is not None
    normal = NormalRanker.load(result.path)
    assert normal.head.interactions
    cat = v.catalogues["t1"]
    vectors = torch.from_numpy(cat.vectors)
    keys = scorer.item_keys(vectors)
    rows = normal.code_rows(list(cat.items))
    users = np.arange(0, ds.num_users, 5)
    items = torch.arange(len(cat.items)).expand(len(users), -1)
    offline = result.ranker(
        torch.as_tensor(users), result.ranker.states(users, np.full(len(users), np.inf)), items
    )
    pre = load_pretrained(tmp_path / "run", ds)
    assert pre.model.interests.recency.abs().sum() > 0  # trained: the stored interests use it
    zero = ZeroShotRanker(pre, TargetDomain(ds, ds.domain_index("t1")))
    offline_zero = zero(
        torch.as_tensor(users), zero.states(users, np.full(len(users), np.inf)), items
    )
    for k, u in enumerate(users):
        uid = str(ds.users[u])
        row = v.user_row[uid]
        interests, universal = v.interests[row], v.universal[row]
        online = normal.scores(
            uid, scorer.user_vectors(interests, vectors, keys), vectors, rows, universal
        )
        assert torch.allclose(online, offline[k].detach(), atol=1e-5)
        online_zero = scorer.scores(interests, vectors, keys, universal)
        assert torch.allclose(online_zero, offline_zero[k], atol=1e-5)


def test_mapped_vectors_equal_a_copy_and_writes_stay_private(tmp_path: Path) -> None:
    from peace.store import column_array, mapped_array, read_arrow, vector_column, write_arrow

    rng = np.random.default_rng(0)
    values = rng.normal(size=(37, 3, 4)).astype(np.float32)
    path = tmp_path / "t.arrow"
    write_arrow(path, pa.table({"id": pa.array(range(37)), "v": vector_column(values)}))
    mapped = mapped_array(path, "v", (3, 4), np.float32)
    assert isinstance(mapped, np.memmap) and mapped.shape == (37, 3, 4)
    assert np.array_equal(mapped, values)
    mapped[5] = 0.0  # copy-on-write: this process's page only
    assert np.array_equal(mapped_array(path, "v", (3, 4), np.float32), values)
    assert np.array_equal(column_array(read_arrow(path), "v", (3, 4), np.float32), values)
    # Where the column is not one run in the file (several record batches), or has no rows, the
    # values are read into memory instead.
    table = pa.concat_tables([pa.table({"v": vector_column(values[:10])})] * 2)
    write_arrow(path, table)
    copied = mapped_array(path, "v", (3, 4), np.float32)
    assert not isinstance(copied, np.memmap)
    assert np.array_equal(copied, np.concatenate([values[:10], values[:10]]))
    write_arrow(path, pa.table({"v": vector_column(values[:0])}))
    assert mapped_array(path, "v", (3, 4), np.float32).shape == (0, 3, 4)


def test_decoder_parity_with_interactions(tmp_path: Path) -> None:
    """A run whose Eq. 3 reads z_u * h_e and z_u . h_e (model.decoder_interactions) is served
    with the same decoder: the store records the switch and the online scores match."""
    data = write_dataset(toy_tables(), tmp_path / "toy")
    ds = load_dataset(data)
    cfg = PeaceConfig().override([*TINY, "model.decoder_interactions=true"])
    pretrain(ds, cfg, out=tmp_path / "run", show_progress=False)
    store = tmp_path / "store"
    v = StoreVersion.open(store, export(tmp_path / "run", ds, store))
    assert v.manifest["dims"]["decoder_interactions"] is True
    scorer = ZeroShotScorer.from_version(v, "decoder")
    users = np.arange(0, ds.num_users, 5)
    offline, _ = _offline_zero_shot(tmp_path / "run", ds, "t1", users, "decoder")
    vectors = torch.from_numpy(v.catalogues["t1"].vectors)
    keys = scorer.item_keys(vectors)
    for k, u in enumerate(users):
        online = scorer.scores(v.interests[v.user_row[str(ds.users[u])]], vectors, keys)
        assert torch.allclose(online, offline[k], atol=1e-5), (u, online, offline[k])
