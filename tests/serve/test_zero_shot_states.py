"""A run that kept its evaluated states (``eval.zero_shot_states = "evaluated"``) served: the
zero-shot score is the mean of the states' inner products, stored as one inner product of the
states' vectors side by side, for catalogue items, items added at run time, through the index,
and in the head of a published normal ranker."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pyarrow as pa
import pytest
import torch
from conftest import TINY_OVERRIDES, toy_tables

from peace.config import PeaceConfig
from peace.data.contract import write_dataset
from peace.data.dataset import Dataset, load_dataset
from peace.flows.offline_inference import export
from peace.flows.pretrain import pretrain
from peace.flows.pretrained import load_pretrained
from peace.flows.publish import finetune_and_publish
from peace.flows.rankers import TargetDomain, ZeroShotRanker, zero_shot_prior
from peace.serve.schemas import ItemSpec
from peace.serve.service import Service
from peace.store import StoreError, StoreVersion, current_version, read_arrow
from peace.store.versions import version_path

WEIGHT = 3.0
CONFIG = [
    *TINY_OVERRIDES,
    "pretrain.epochs=2",
    'eval.zero_shot_states="evaluated"',
    f"eval.zero_shot_prior={WEIGHT}",
    "finetune.epochs=2",
    "finetune.interaction_features=true",
    'finetune.affinity="zero-shot"',
]


@pytest.fixture(scope="module")
def run(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Dataset]:
    root = tmp_path_factory.mktemp("states")
    ds = load_dataset(write_dataset(toy_tables(), root / "toy"))
    pretrain(ds, PeaceConfig().override(CONFIG), out=root / "run", show_progress=False)
    return root / "run", ds


@pytest.fixture
def store(run: tuple[Path, Dataset], tmp_path: Path) -> Path:
    """A store version exported from ``run`` (private: the tests edit it)."""
    export(*run, tmp_path / "store")
    return tmp_path / "store"


def _offline(run: Path, ds: Dataset, users: np.ndarray, states: bool = True) -> torch.Tensor:
    """The zero-shot ranker's scores of t1's catalogue (the states' mean, or the kept state)."""
    pre = load_pretrained(run, ds)
    assert len(pre.states) == 2
    if not states:
        pre.states = []
    ranker = ZeroShotRanker(
        pre, TargetDomain(ds, ds.domain_index("t1")), "inner", *zero_shot_prior(ds, pre, pre.config)
    )
    items = torch.arange(len(ranker.target.catalogue)).expand(len(users), -1)
    return ranker(torch.as_tensor(users), ranker.states(users, np.full(len(users), np.inf)), items)


def test_served_zero_shot_score_is_the_mean_over_the_states(
    run: tuple[Path, Dataset], store: Path
) -> None:
    path, ds = run
    version = StoreVersion.open(store)
    assert version.zero_shot_states == 2
    assert version.user_zero_shot is not None and version.user_zero_shot.shape[1] == 2 * version.dim
    users = np.arange(6)
    offline, kept = _offline(path, ds, users), _offline(path, ds, users, states=False)
    assert not torch.allclose(offline, kept, atol=1e-4)
    target = TargetDomain(ds, ds.domain_index("t1"))
    items = [str(i) for i in ds.items[target.catalogue]]
    # the index holds the kept state's vectors; a pool of the whole catalogue makes the states'
    # scores of its candidates decide the top k exactly
    index_args = {"n_lists": 1, "backend": "numpy"}
    service = Service(store, exact_threshold=0, ann_pool=len(items), index_args=index_args)
    assert service.snapshot().domains["t1"].index is not None
    assert service.describe()["zero_shot_states"] == 2
    for u in users:
        body = service.rank("t1", str(ds.users[u]), items)
        assert body["ranker"] == "zero-shot"
        assert np.allclose(body["scores"], offline[u].numpy(), atol=1e-5)
        top = service.recommend("t1", str(ds.users[u]), 3)
        assert top["items"] == [items[i] for i in torch.topk(offline[u], 3).indices.tolist()]

    # an item added at run time with a catalogue item's entities scores as that item
    entities = [str(ds.entities[e]) for e in ds.item_entities[target.catalogue[1]] if e >= 0]
    service.put_item("t1", "t1_new", entities)
    service.launch("pets", [ItemSpec(item="p0", entities=entities)])
    user = str(ds.users[0])
    want = service.rank("t1", user, [items[1]])["scores"][0]
    assert want == pytest.approx(float(offline[0, 1]), abs=1e-5)
    assert service.rank("t1", user, ["t1_new"])["scores"][0] == pytest.approx(want, abs=1e-5)
    assert service.rank("pets", user, ["p0"])["scores"][0] == pytest.approx(want, abs=1e-5)


@pytest.mark.parametrize(("affinity", "states"), [("zero-shot", 2), ("inner-prior", 1)])
def test_published_head_serves_its_zero_shot_score(
    run: tuple[Path, Dataset], store: Path, affinity: str, states: int
) -> None:
    """A head reading the states' mean (``zero-shot``) or the kept state's score plus the prior
    (``inner-prior``) is served from a version that keeps the states, as it was trained."""
    path, ds = run
    result = finetune_and_publish(
        path, ds, store, "t1", overrides=[f'finetune.affinity="{affinity}"']
    )
    head = json.loads((result.path / "manifest.json").read_text())["head"]
    assert head["affinity_states"] == states and head["affinity_prior"] == WEIGHT
    users = np.arange(4)
    ranker = result.ranker
    assert ranker.zero_shot is not None and ranker.zero_shot.n_states == states
    items = [str(i) for i in ds.items[result.target.catalogue]]
    with torch.no_grad():
        offline = ranker(
            torch.as_tensor(users),
            ranker.states(users, np.full(len(users), np.inf)),
            torch.arange(len(items)).expand(len(users), -1),
        )
    service = Service(store)
    for u in users:
        body = service.rank("t1", str(ds.users[u]), items)
        assert body["ranker"] == "normal"
        assert np.allclose(body["scores"], offline[u].numpy(), atol=1e-5)


def test_a_head_of_another_number_of_states_is_not_served(
    run: tuple[Path, Dataset], store: Path
) -> None:
    path, ds = run
    result = finetune_and_publish(path, ds, store, "t1")
    manifest_file = result.path / "manifest.json"
    manifest = json.loads(manifest_file.read_text())
    assert manifest["head"]["affinity_states"] == 2

    # a head that read another number of states is not served with these vectors
    manifest["head"]["affinity_states"] = 3
    manifest_file.write_text(json.dumps(manifest))
    snap = Service(store, verify=False).snapshot()
    assert snap.domains["t1"].normal is None
    assert any("mean of 3 states" in note for note in snap.notes)


def test_a_version_without_the_states_vectors_is_refused(
    run: tuple[Path, Dataset], store: Path
) -> None:
    file = version_path(store, current_version(store)) / "users.arrow"
    older = read_arrow(file).drop_columns(["zero_shot"])
    other = file.with_suffix(".tmp")  # the file is mapped: write beside it, then replace it
    with pa.OSFile(str(other), "wb") as sink, pa.ipc.new_file(sink, older.schema) as writer:
        writer.write_table(older)
    other.replace(file)
    with pytest.raises(StoreError, match="no 'zero_shot' column.*export the version again"):
        StoreVersion.open(store, verify=False)


def test_kept_only_serves_the_kept_state(run: tuple[Path, Dataset], tmp_path: Path) -> None:
    """``export(kept_only=True)``: vectors of width d, the kept state's zero-shot score; a head
    trained on the states' mean is refused there before it trains."""
    path, ds = run
    store = tmp_path / "kept"
    export(path, ds, store, kept_only=True)
    version = StoreVersion.open(store)
    assert version.zero_shot_states == 1 and version.user_zero_shot is None
    users = np.arange(4)
    kept = _offline(path, ds, users, states=False)
    target = TargetDomain(ds, ds.domain_index("t1"))
    items = [str(i) for i in ds.items[target.catalogue]]
    service = Service(store)
    assert service.describe()["zero_shot_states"] == 1
    for u in users:
        body = service.rank("t1", str(ds.users[u]), items)
        assert np.allclose(body["scores"], kept[u].numpy(), atol=1e-5)
    with pytest.raises(StoreError, match="kept-only"):
        finetune_and_publish(path, ds, store, "t1")
    inner = finetune_and_publish(path, ds, store, "t1", overrides=['finetune.affinity="inner"'])
    assert json.loads((inner.path / "manifest.json").read_text())["head"]["affinity_states"] == 1
