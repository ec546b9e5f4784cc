"""ImageIndex: recall against exact search, filters, removal, persistence, and what it refuses.

Data are synthetic clustered unit vectors (each cluster a low-dimensional subspace plus noise,
as embeddings are); exact answers come from numpy. Only the CPU path runs here: the GPU one is
checked for its wiring with a fake faiss-gpu, not on a GPU.
"""

from __future__ import annotations

import json
from pathlib import Path

import faiss
import numpy as np
import numpy.typing as npt
import pytest

from medagent.errors import ConfigError, InputError
from medagent.imaging import Region
from medagent.retrieval._index import ImageIndex, IndexConfig, IndexKind
from medagent.retrieval.base import IndexRecord, Neighbour

Array = npt.NDArray[np.float32]
DOMAINS = ("radiology", "pathology", "ophthalmology")


def clustered(n: int, d: int, clusters: int, *, seed: int, intrinsic: int = 24) -> Array:
    """Unit vectors around ``clusters`` centres, each spread over its own random subspace."""
    shape_rng = np.random.default_rng(99)  # same clusters for data and queries
    centres = shape_rng.standard_normal((clusters, d)).astype(np.float32)
    centres /= np.linalg.norm(centres, axis=1, keepdims=True)
    bases = np.linalg.qr(shape_rng.standard_normal((clusters, d, intrinsic)))[0]
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, clusters, n)
    z = rng.standard_normal((n, intrinsic)) * (0.8 / np.sqrt(intrinsic))
    x = centres[labels] + np.einsum("ni,ndi->nd", z, bases[labels])
    x += rng.standard_normal((n, d)) * (0.3 / np.sqrt(d))
    return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)


def records(n: int, start: int = 0) -> list[IndexRecord]:
    """Records with every field used: a third per domain, ten labels, regions, JSON extras."""
    return [
        IndexRecord(
            id=f"img-{i}",
            source=f"/data/slide-{i % 7}.svs",
            region=Region(x=i, y=2 * i, width=256, height=256) if i % 2 else None,
            label=f"class-{i % 10}",
            domain=DOMAINS[i % 3],
            report=f"report {i}" if i % 5 else None,
            extra={"patient": i % 11, "stain": "H&E" if i % 4 else "IHC"},
        )
        for i in range(start, start + n)
    ]


def exact(queries: Array, data: Array, k: int, allowed: npt.NDArray[np.bool_] | None = None):
    """Ids (``img-i``) of the exact top ``k`` per query, optionally among ``allowed`` rows."""
    sims = queries @ data.T
    if allowed is not None:
        sims[:, ~allowed] = -np.inf
    top = np.argsort(-sims, axis=1, kind="stable")[:, :k]
    return [[f"img-{i}" for i in row if np.isfinite(sims[q, i])] for q, row in enumerate(top)]


def ids(results: list[list[Neighbour]]) -> list[list[str]]:
    return [[n.record.id for n in hits] for hits in results]


def recall(found: list[list[str]], truth: list[list[str]]) -> float:
    return float(
        np.mean([len(set(f) & set(t)) / len(t) for f, t in zip(found, truth, strict=True)])
    )


def build(data: Array, config: IndexConfig, batch: int = 5_000) -> ImageIndex:
    index = ImageIndex(data.shape[1], embedder="test-embedder", config=config)
    for start in range(0, len(data), batch):
        index.add(data[start : start + batch], records(len(data[start : start + batch]), start))
    return index


@pytest.fixture(scope="module")
def big() -> tuple[Array, Array]:
    """50k x 64 vectors in 100 clusters, and 300 queries drawn the same way."""
    return clustered(50_000, 64, 100, seed=0), clustered(300, 64, 100, seed=1)


@pytest.fixture(scope="module")
def small() -> tuple[Array, Array]:
    """3k x 32 vectors in 20 clusters, and 40 queries."""
    return clustered(3_000, 32, 20, seed=2), clustered(40, 32, 20, seed=3)


# Kinds that can be tested on ``small``: IVF with few lists so that it trains on 3k vectors.
SMALL_KINDS = {
    "flat": IndexConfig(kind="flat"),
    "hnsw": IndexConfig(kind="hnsw"),
    "ivf": IndexConfig(kind="ivf", nlist=16, nprobe=16),
    "ivfpq": IndexConfig(kind="ivfpq", nlist=8, pq_m=8, pq_bits=6, nprobe=8),
}


@pytest.mark.parametrize("kind", ["auto", "hnsw", "ivf", "ivfpq"])
def test_default_settings_reach_recall_at_10_of_095(big: tuple[Array, Array], kind: IndexKind):
    data, queries = big
    index = build(data, IndexConfig(kind=kind), batch=10_000)
    if kind == "auto":
        assert index.kind == "ivf"  # 50k is past flat_below
    assert recall(ids(index.search(queries, 10)), exact(queries, data, 10)) >= 0.95


def test_save_then_load_gives_the_same_index(small: tuple[Array, Array], tmp_path: Path):
    data, queries = small
    index = build(data, SMALL_KINDS["hnsw"], batch=1_000)
    before = index.search(queries, 10)
    folder = index.save(tmp_path / "index")

    loaded = ImageIndex.load(folder)
    assert loaded.search(queries, 10) == before
    assert loaded.get("img-7") == records(1, 7)[0]  # region, report and extra survive
    assert loaded.ids() == index.ids() and "img-0" in loaded and "img-x" not in loaded
    assert loaded.info() == index.info()
    manifest = json.loads((folder / "manifest.json").read_text())
    assert manifest["format_version"] == 1 and manifest["embedder"] == "test-embedder"
    assert (manifest["dim"], manifest["kind"], manifest["count"]) == (32, "hnsw", 3_000)
    assert sorted(p.name for p in folder.iterdir()) == [
        "index.faiss",
        "manifest.json",
        "metadata.sqlite",
        "vectors.npy",
    ]


@pytest.mark.parametrize("kind", SMALL_KINDS)
def test_loaded_index_keeps_growing_and_saves_over_itself(
    small: tuple[Array, Array], tmp_path: Path, kind: str
):
    data, queries = small
    index = build(data[:2_000], SMALL_KINDS[kind], batch=500)
    index.save(tmp_path / "index")
    loaded = ImageIndex.load(tmp_path / "index")
    loaded.add(data[2_000:], records(1_000, 2_000))
    loaded.save(tmp_path / "index")  # replaces the folder it is memory-mapped from

    again = ImageIndex.load(tmp_path / "index")
    assert len(again) == 3_000 and again.kind == kind
    never_saved = build(data[:2_000], SMALL_KINDS[kind], batch=500)
    never_saved.add(data[2_000:], records(1_000, 2_000))
    expected = ids(never_saved.search(queries, 5))
    if kind == "hnsw":  # parallel inserts make HNSW graphs differ a little from run to run
        assert recall(ids(again.search(queries, 5)), expected) >= 0.95
    else:
        assert ids(again.search(queries, 5)) == expected
    assert [p.name for p in tmp_path.iterdir()] == ["index"]  # no temporary or old copies


def test_ivf_waits_in_an_exact_buffer_until_it_can_train(small: tuple[Array, Array]):
    data, queries = small
    index = ImageIndex(32, config=IndexConfig(kind="ivf", nlist=16))  # trains at 39 x 16
    index.add(data[:600], records(600))
    assert not index.info().trained and index.faiss_index.ntotal == 0
    assert ids(index.search(queries, 10)) == exact(queries, data[:600], 10)
    index.add(data[600:700], records(100, 600))
    assert index.info().trained and index.faiss_index.ntotal == 700


def test_auto_goes_from_flat_to_ivf_and_retrains_as_it_grows():
    data, queries = (
        clustered(48_000, 16, 30, seed=4, intrinsic=8),
        clustered(50, 16, 30, seed=5, intrinsic=8),
    )
    index = build(data[:900], IndexConfig(flat_below=1_000), batch=300)
    assert index.kind == "flat"
    index.add(data[900:1_200], records(300, 900))
    assert index.kind == "ivf" and not index.info().trained  # exact buffer until 10k
    index.add(data[1_200:12_000], records(10_800, 1_200))
    assert index.info().trained and index.faiss_index.nlist == 307  # 12k / 39
    index.add(data[12_000:], records(36_000, 12_000))  # grew 4x: retrained with more lists
    assert index.faiss_index.nlist == 876 and index.faiss_index.ntotal == 48_000
    assert recall(ids(index.search(queries, 10)), exact(queries, data, 10)) >= 0.95


@pytest.mark.parametrize("kind", ["flat", "hnsw", "ivf"])
def test_domain_filter_returns_k_matching_records(small: tuple[Array, Array], kind: str):
    data, queries = small
    index = build(data, SMALL_KINDS[kind], batch=1_000)
    pathology = np.arange(len(data)) % 3 == 1
    found = index.search(queries, 10, where={"domain": "pathology"})
    assert all(len(hits) == 10 for hits in found)
    assert all(n.record.domain == "pathology" for hits in found for n in hits)
    assert recall(ids(found), exact(queries, data, 10, pathology)) >= 0.95

    gone = {n.record.id for hits in found for n in hits}  # the same filter after a change
    index.remove(gone)
    again = index.search(queries, 10, where={"domain": "pathology"})
    assert not {n.record.id for hits in again for n in hits} & gone


def test_rare_and_combined_filters_fall_back_to_exact_search(small: tuple[Array, Array]):
    data, queries = small
    index = build(data, SMALL_KINDS["hnsw"], batch=1_000)
    rows = np.arange(len(data))
    rare = (rows % 3 == 0) & (rows % 10 == 3) & (rows % 11 == 5)  # ~30 of 3,000
    where = {"domain": "radiology", "label": "class-3", "extra.patient": 5}
    assert ids(index.search(queries, 10, where=where)) == exact(queries, data, 10, rare)

    one = index.search(queries, 5, where={"id": "img-42"})
    assert all(ids([hits]) == [["img-42"]] for hits in one)
    either = index.search(queries, 10, where={"label": ["class-1", "class-2"]})
    assert all(n.record.label in ("class-1", "class-2") for hits in either for n in hits)
    no_report = index.search(queries, 10, where={"report": None})
    assert all(n.record.report is None for hits in no_report for n in hits)
    assert index.search(queries, 10, where={"domain": "other"}) == [[] for _ in queries]


def test_filters_on_a_sparsely_probed_ivf_still_return_k(small: tuple[Array, Array]):
    data, queries = small
    index = build(data[:400], IndexConfig(kind="ivf", nlist=8, nprobe=1), batch=400)
    class_3 = np.arange(400) % 10 == 3  # ~5 per probed list: FAISS alone runs short
    found = index.search(queries, 10, where={"label": "class-3"})
    assert all(len(hits) == 10 for hits in found)
    assert all(n.record.label == "class-3" for hits in found for n in hits)
    assert recall(ids(found), exact(queries, data[:400], 10, class_3)) >= 0.5


def test_callable_filter_matches_the_mapping_filter(small: tuple[Array, Array]):
    data, queries = small
    index = build(data, SMALL_KINDS["hnsw"], batch=1_000)
    by_mapping = index.search(queries, 10, where={"extra.stain": "IHC"})
    by_callable = index.search(queries, 10, where=lambda r: r.extra["stain"] == "IHC")
    assert ids(by_callable) == ids(by_mapping)
    rare = index.search(queries, 3, where=lambda r: r.id in ("img-5", "img-6"))
    assert all(sorted(ids([hits])[0]) == ["img-5", "img-6"] for hits in rare)


def test_unknown_filter_key_is_refused():
    index = ImageIndex(8)
    with pytest.raises(ConfigError, match="cannot filter on 'domian'"):
        index.search(np.eye(8, dtype=np.float32)[:1], where={"domian": "radiology"})


@pytest.mark.parametrize("kind", SMALL_KINDS)
def test_removed_ids_are_never_returned_even_after_reload(
    small: tuple[Array, Array], tmp_path: Path, kind: str
):
    data, queries = small
    index = build(data, SMALL_KINDS[kind], batch=1_000)
    first = {n.record.id for hits in index.search(queries, 10) for n in hits}
    assert index.remove([*first, "not-there"]) == len(first)
    assert len(index) == 3_000 - len(first) and not any(i in index for i in first)

    def returned(ix: ImageIndex) -> set[str]:
        return {n.record.id for hits in ix.search(queries, 10) for n in hits}

    assert not returned(index) & first
    assert all(len(hits) == 10 for hits in index.search(queries, 10))
    index.save(tmp_path / "index")
    loaded = ImageIndex.load(tmp_path / "index")
    assert not returned(loaded) & first and len(loaded) == len(index)

    back = int(min(first)[4:])  # a removed id may come back
    loaded.add(data[back : back + 1], records(1, back))
    assert f"img-{back}" in loaded


@pytest.mark.parametrize("cache", [0, 50, 100_000])
def test_cached_records_stay_true_to_their_vectors_through_removal_and_compaction(
    small: tuple[Array, Array], cache: int
):
    """Records are cached by row; compaction renumbers rows, so a stale cache would pair a
    hit's score with another vector's record. Each hit's score must be its own vector's."""
    data, queries = small
    index = build(data, SMALL_KINDS["flat"].model_copy(update={"record_cache": cache}), 1_000)

    def consistent() -> None:
        for q, hits in zip(queries, index.search(queries, 10), strict=True):
            for hit in hits:
                assert hit.score == pytest.approx(float(data[int(hit.record.id[4:])] @ q), abs=1e-5)
                assert hit.record == records(1, int(hit.record.id[4:]))[0]

    consistent()  # fills the cache
    assert len(index._records) <= cache
    index.remove([f"img-{i}" for i in range(0, 3_000, 3)])
    consistent()  # refills the cache after the removal
    index.compact()  # rows renumbered
    consistent()
    assert len(index._records) <= cache


def test_hnsw_keeps_removed_vectors_until_compaction(small: tuple[Array, Array], tmp_path: Path):
    data, queries = small
    index = build(data, SMALL_KINDS["hnsw"], batch=1_000)
    index.remove([f"img-{i}" for i in range(0, 3_000, 2)])  # half
    assert index.info().pending_removals == 1_500 and index.faiss_index.ntotal == 3_000
    assert all(int(n.record.id[4:]) % 2 for hits in index.search(queries, 10) for n in hits)

    index.save(tmp_path / "index")  # over 10% removed: compacts first
    assert index.info().pending_removals == 0 and index.faiss_index.ntotal == 1_500
    loaded = ImageIndex.load(tmp_path / "index")
    assert loaded.info().pending_removals == 0 and len(loaded) == 1_500
    odd = np.arange(3_000) % 2 == 1
    assert recall(ids(loaded.search(queries, 10)), exact(queries, data, 10, odd)) >= 0.95
    assert loaded.get("img-3") == records(1, 3)[0]


def test_rerank_returns_exact_inner_products_best_first(small: tuple[Array, Array]):
    data, queries = small
    index = build(data, SMALL_KINDS["ivfpq"], batch=1_000)
    truth = exact(queries, data, 10)
    coarse = index.search(queries, 10, rerank=False)
    fine = index.search(queries, 10, rerank=True)
    for query, hits in zip(queries, fine, strict=True):
        scores = [n.score for n in hits]
        assert scores == sorted(scores, reverse=True)
        expected = [float(data[int(n.record.id[4:])] @ query) for n in hits]
        np.testing.assert_allclose(scores, expected, rtol=1e-5)
    assert recall(ids(fine), truth) > recall(ids(coarse), truth)
    assert index.search(queries, 10) == fine  # IVF-PQ re-ranks by default


def test_ivfpq_pads_a_dimension_it_cannot_split(tmp_path: Path):
    data, queries = clustered(3_000, 30, 20, seed=6), clustered(40, 30, 20, seed=7)
    index = build(data, IndexConfig(kind="ivfpq", nlist=8, pq_bits=6), batch=1_000)
    assert index.faiss_index.d == 32 and index.faiss_index.pq.M == 8  # 4 dims per sub-vector
    assert recall(ids(index.search(queries, 10)), exact(queries, data, 10)) >= 0.9
    loaded = ImageIndex.load(index.save(tmp_path / "index"))
    assert ids(loaded.search(queries, 10)) == ids(index.search(queries, 10))
    assert ImageIndex.read_manifest(tmp_path / "index").dim == 30


@pytest.mark.parametrize("kind", ["flat", "hnsw", "ivf"])
def test_batch_search_equals_one_query_at_a_time(small: tuple[Array, Array], kind: str):
    data, queries = small
    index = build(data, SMALL_KINDS[kind], batch=1_000)
    for where in (None, {"domain": "ophthalmology"}):
        batch = index.search(queries, 7, where=where)
        single = [index.search_one(q, 7, where=where) for q in queries]
        assert ids(batch) == ids(single)
        np.testing.assert_allclose(
            [[n.score for n in hits] for hits in batch],
            [[n.score for n in hits] for hits in single],
            rtol=1e-5,
        )


def test_info_counts_records_per_domain_and_label(small: tuple[Array, Array]):
    data, _ = small
    info = build(data[:30], IndexConfig()).info()
    assert info.count == 30 and info.dim == 32 and info.embedder == "test-embedder"
    assert info.kind == "flat" and info.config.kind == "auto" and not info.on_gpu
    assert info.domains == {"ophthalmology": 10, "pathology": 10, "radiology": 10}
    assert sum(info.labels.values()) == 30 and info.labels["class-0"] == 3


def test_gpu_copy_is_searched_when_faiss_sees_a_gpu(
    small: tuple[Array, Array], monkeypatch: pytest.MonkeyPatch
):
    data, queries = small
    index = build(data[:500], SMALL_KINDS["flat"])
    expected = index.search(queries, 5)
    copies: list[object] = []

    def to_gpus(cpu_index: object) -> object:
        copies.append(cpu_index)
        return faiss.clone_index(cpu_index)  # stands in for the GPU copy

    monkeypatch.setattr(faiss, "get_num_gpus", lambda: 1, raising=False)
    monkeypatch.setattr(faiss, "index_cpu_to_all_gpus", to_gpus, raising=False)
    assert index.search(queries, 5) == expected and index.info().on_gpu
    index.add(
        data[500:510], records(10, 500)
    )  # a change drops the copy; the next search remakes it
    index.search(queries, 5)
    assert len(copies) == 2


# -- what is refused -----------------------------------------------------------------------


def test_vectors_of_another_dimension_are_a_config_error():
    index = ImageIndex(16, embedder="clip")
    with pytest.raises(ConfigError, match="dimension 8 but the index holds 16-d vectors"):
        index.add(np.eye(8, dtype=np.float32), records(8))
    with pytest.raises(ConfigError, match="dimension 8"):
        index.search_one(np.eye(8, dtype=np.float32)[0])


def test_vectors_that_are_not_unit_length_finite_floats_are_refused():
    index = ImageIndex(4)
    with pytest.raises(InputError, match=r"L2-normalized; rows 1 \(norm 2\)"):
        index.add(np.array([[1, 0, 0, 0], [2, 0, 0, 0]], np.float32), records(2))
    with pytest.raises(InputError, match="NaN"):
        index.add(np.array([[np.nan, 0, 0, 0]], np.float32), records(1))
    with pytest.raises(InputError, match="float32"):
        index.add(np.array([[1, 0, 0, 0]]), records(1))
    with pytest.raises(InputError, match="2 vectors but 3 records"):
        index.add(np.eye(4, dtype=np.float32)[:2], records(3))
    nearly = np.array([[1.0005, 0, 0, 0]], np.float32)  # within tolerance: renormalized
    index.add(nearly, records(1))
    assert index.search_one(np.eye(4, dtype=np.float32)[0], 1)[0].score == pytest.approx(1.0)
    assert len(index) == 1


def test_duplicate_ids_are_refused_and_named():
    index = ImageIndex(4)
    index.add(np.eye(4, dtype=np.float32)[:2], records(2))
    with pytest.raises(InputError, match=r"already in the index: 'img-1'; remove them first"):
        index.add(np.eye(4, dtype=np.float32)[2:], records(2, 1))
    twice = [*records(1, 5), *records(1, 5)]
    with pytest.raises(InputError, match="repeated within this batch: 'img-5'"):
        index.add(np.eye(4, dtype=np.float32)[2:], twice)
    assert index.ids() == ["img-0", "img-1"]


def test_load_of_a_bad_folder_is_a_one_line_input_error(small: tuple[Array, Array], tmp_path):
    data, _ = small
    good = build(data[:100], IndexConfig()).save(tmp_path / "good")

    def fails(folder: Path, match: str) -> None:
        with pytest.raises(InputError, match=match) as caught:
            ImageIndex.load(folder)
        assert "\n" not in str(caught.value)

    fails(tmp_path / "missing", "no image index at")
    (tmp_path / "empty").mkdir()
    fails(tmp_path / "empty", "manifest.json is missing")

    manifest = json.loads((good / "manifest.json").read_text())
    for name, change, match in [
        ("newer", {"format_version": 2}, "format version 2, this medagent reads version 1"),
        ("foreign", {"format": "other"}, "not a medagent image index manifest"),
        ("fields", {"count": "many"}, "invalid fields"),
        ("count", {"count": 99}, "files disagree"),
    ]:
        folder = tmp_path / name
        folder.mkdir()
        for part in good.iterdir():
            (folder / part.name).write_bytes(part.read_bytes())
        (folder / "manifest.json").write_text(json.dumps({**manifest, **change}))
        fails(folder, match)

    for part, match in [
        ("index.faiss", "unreadable index data"),
        ("vectors.npy", "unreadable index data"),
        ("metadata.sqlite", "not a readable metadata database"),
    ]:
        folder = tmp_path / f"broken-{part}"
        folder.mkdir()
        for other in good.iterdir():
            (folder / other.name).write_bytes(other.read_bytes())
        (folder / part).write_bytes(b"garbage")
        fails(folder, match)


def test_load_refuses_an_index_of_another_embedder(small: tuple[Array, Array], tmp_path: Path):
    class Other:
        name, dim = "other-embedder", 32

    folder = build(small[0][:10], IndexConfig()).save(tmp_path / "index")
    with pytest.raises(ConfigError, match=r"holds 'test-embedder' vectors .* is 'other-embedder'"):
        ImageIndex.load(folder, embedder=Other())  # type: ignore[arg-type]


def test_save_never_overwrites_a_folder_that_is_not_an_index(tmp_path: Path):
    (tmp_path / "notes").mkdir()
    (tmp_path / "notes" / "keep.txt").write_text("mine")
    with pytest.raises(InputError, match="not an image index; refusing to overwrite"):
        ImageIndex(4).save(tmp_path / "notes")
    assert (tmp_path / "notes" / "keep.txt").read_text() == "mine"


def test_a_failed_save_keeps_the_previous_version(
    small: tuple[Array, Array], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
):
    data, _ = small
    index = build(data[:100], IndexConfig())
    index.save(tmp_path / "index")
    index.add(data[100:200], records(100, 100))

    def disk_full(*args: object, **kwargs: object) -> None:
        raise OSError("No space left on device")

    monkeypatch.setattr(np, "save", disk_full)
    with pytest.raises(InputError, match=r"cannot save the index .* No space left"):
        index.save(tmp_path / "index")
    assert len(ImageIndex.load(tmp_path / "index")) == 100
    assert [p.name for p in tmp_path.iterdir()] == ["index"]
