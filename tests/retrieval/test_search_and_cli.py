"""Building indexes (folder, slide, dataset), resuming, searching, routing, and the CLI."""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from cli_support import medagent
from medagent.artifacts import ArtifactStore
from medagent.imaging import open_image
from medagent.retrieval import (
    DefaultEmbedder,
    IndexSearcher,
    KNNDomainRouter,
    Vectors,
    build_index,
    images_from_folder,
    images_from_slide,
    open_index,
)
from medagent.tools import ToolContext, search_similar

COLOURS = {"red": (200, 40, 40), "green": (40, 180, 60), "blue": (40, 60, 200)}


def image_folder(root: Path) -> tuple[Path, Path]:
    root.mkdir(parents=True, exist_ok=True)
    rows = ["file,label,domain,report"]
    rng = np.random.default_rng(0)
    for name, colour in COLOURS.items():
        for i in range(3):
            noise = rng.integers(-20, 20, (64, 64, 3))
            pixels = np.clip(np.array(colour) + noise, 0, 255).astype(np.uint8)
            Image.fromarray(pixels).save(root / f"{name}{i}.png")
            rows.append(f"{name}{i}.png,{name},radiology,a {name} case number {i}")
    labels = root / "labels.csv"
    labels.write_text("\n".join(rows) + "\n")
    return root, labels


class CountingEmbedder(DefaultEmbedder):
    """The default embedder, counting how many images it embeds (to see resumes skip)."""

    def __init__(self) -> None:
        super().__init__()
        self.embedded = 0

    def embed_images(self, images: Sequence[Image.Image]) -> Vectors:
        self.embedded += len(images)
        return super().embed_images(images)


def test_folder_index_search_and_the_tool(tmp_path: Path) -> None:
    folder, labels = image_folder(tmp_path / "imgs")
    embedder = DefaultEmbedder()
    index = build_index(tmp_path / "idx", images_from_folder(folder, labels), embedder)
    assert len(index) == 9 and index.info().labels == {"red": 3, "green": 3, "blue": 3}
    searcher = open_index(tmp_path / "idx")
    with Image.open(folder / "green1.png") as query:
        hits = searcher.search_image(query.convert("RGB"), 3, None)
    assert {h.label for h in hits} == {"green"} and hits[0].score > 0.99
    assert hits[0].report and "green case" in hits[0].report
    ctx = ToolContext(
        artifacts=ArtifactStore(tmp_path / "art"),
        slide=open_image(folder / "red0.png"),
        searcher=searcher,
    )
    found = search_similar(ctx, k=2)
    assert [c.label for c in found.cases] == ["red", "red"]
    assert all(c.thumbnail is not None for c in found.cases)


def test_an_interrupted_build_resumes(tmp_path: Path) -> None:
    folder, labels = image_folder(tmp_path / "imgs")

    def stop_after(n: int):  # type: ignore[no-untyped-def]
        for count, source in enumerate(images_from_folder(folder, labels)):
            if count == n:
                raise KeyboardInterrupt
            yield source

    first = CountingEmbedder()
    with pytest.raises(KeyboardInterrupt):
        build_index(
            tmp_path / "idx", stop_after(5), first, batch_size=2, save_every=1, save_interval_s=0
        )
    saved = open_index(tmp_path / "idx", first).index
    assert len(saved) == 4  # two full batches were saved before the interruption
    second = CountingEmbedder()
    index = build_index(tmp_path / "idx", images_from_folder(folder, labels), second, batch_size=2)
    assert len(index) == 9 and second.embedded == 5


def test_slide_tiles_index_finds_the_same_region(tmp_path: Path, pyramid_tiff: Path) -> None:
    embedder = DefaultEmbedder()
    index = build_index(tmp_path / "idx", images_from_slide(pyramid_tiff, tile_px=256), embedder)
    assert len(index) > 3 and index.info().domains == {"pathology": len(index)}
    searcher = IndexSearcher(index, embedder)
    record = index.get(index.ids()[len(index) // 2])
    assert record is not None and record.region is not None
    thumb = searcher.thumbnail(searcher.search_image(Image.new("RGB", (8, 8)), 1, None)[0], 128)
    assert thumb is not None and max(thumb.size) == 128
    from medagent.imaging import Renderer

    with open_image(pyramid_tiff) as slide:
        query = Renderer(slide).render(record.region, 256).image
    assert searcher.search_image(query, 1, None)[0].id == record.id


def test_index_cli_build_search_info(tmp_path: Path) -> None:
    folder, labels = image_folder(tmp_path / "imgs")
    out = tmp_path / "idx"
    built = medagent(
        "index", "build", "--images", str(folder), "--labels", str(labels), "--out", str(out)
    )
    assert built.returncode == 0, built.stderr
    assert "9 images" in built.stdout
    found = medagent(
        "index", "search", str(out), "--image", str(folder / "blue2.png"), "--k", "3", "--json"
    )
    assert found.returncode == 0, found.stderr
    assert [h["label"] for h in json.loads(found.stdout)] == ["blue"] * 3
    info = medagent("index", "info", str(out), "--json")
    assert json.loads(info.stdout)["count"] == 9
    bad = medagent("index", "search", str(tmp_path / "nope"), "--image", str(folder / "red0.png"))
    assert bad.returncode == 2 and "Traceback" not in bad.stderr


def test_rag_ask_cli_with_a_scripted_model(tmp_path: Path) -> None:
    folder, labels = image_folder(tmp_path / "imgs")
    out = tmp_path / "idx"
    assert (
        medagent(
            "index", "build", "--images", str(folder), "--labels", str(labels), "--out", str(out)
        ).returncode
        == 0
    )
    script = tmp_path / "s.jsonl"
    script.write_text(json.dumps({"json": {"answer": "green"}}) + "\n")
    result = medagent(
        "rag",
        "ask",
        str(folder / "green0.png"),
        "Which colour?",
        "--index",
        str(out),
        "--backend",
        "scripted",
        "--script",
        str(script),
        "--out",
        str(tmp_path / "run"),
        "--json",
    )
    assert result.returncode == 0, result.stderr
    answer = json.loads(result.stdout)
    assert answer["answer"] == "green" and answer["domain"] == "radiology"
    manifest = json.loads((tmp_path / "run" / "manifest.json").read_text())
    assert manifest["agent"] == "rag" and manifest["rendered_prompts"]
    assert answer["reports"] and "green case" in answer["reports"][0]["report"]


@pytest.mark.realdata
def test_domain_router_on_real_images(shared_data: Path, tmp_path: Path) -> None:
    """VQA-RAD radiographs vs real H&E tiles and slide regions: every query routed right."""
    from medagent.imaging import Region, Renderer

    embedder = DefaultEmbedder()
    radiology = sorted((shared_data / "vqa-rad" / "images").glob("*.jpg"))
    tiles = sorted((shared_data / "tiles").glob("*.png"))
    slide = open_image(shared_data / "slides" / "cmu-1-small-region.svs")
    renderer = Renderer(slide)
    regions = [
        renderer.render(Region(x=x, y=y, width=740, height=740), 256).image
        for x in (0, 740, 1480)
        for y in (0, 740, 1480, 2220)
    ]

    def rgb(path: Path) -> Image.Image:
        with Image.open(path) as image:
            return image.convert("RGB")

    sources = []
    from medagent.retrieval import IndexRecord

    # Index every other image of each kind; query with the rest.
    for i, path in enumerate(radiology[::2]):
        sources.append(
            (
                IndexRecord(id=f"r{i}", source=str(path), domain="radiology"),
                lambda path=path: rgb(path),
            )
        )
    for i, path in enumerate(tiles[::2]):
        sources.append(
            (
                IndexRecord(id=f"t{i}", source=str(path), domain="pathology"),
                lambda path=path: rgb(path),
            )
        )
    for i, image in enumerate(regions[::2]):
        sources.append(
            (IndexRecord(id=f"s{i}", source="cmu", domain="pathology"), lambda image=image: image)
        )
    index = build_index(tmp_path / "domains", sources, embedder)
    router = KNNDomainRouter(IndexSearcher(index, embedder))
    import asyncio

    queries = [(rgb(p), "radiology") for p in radiology[1::2]]
    queries += [(rgb(p), "pathology") for p in tiles[1::2]]
    queries += [(image, "pathology") for image in regions[1::2]]
    wrong = [want for image, want in queries if asyncio.run(router.route(image)) != want]
    assert wrong == [], f"{len(wrong)} of {len(queries)} routed wrong"


def test_eval_run_with_the_rag_method(tmp_path: Path) -> None:
    folder, labels = image_folder(tmp_path / "imgs")
    out = tmp_path / "idx"
    assert (
        medagent(
            "index", "build", "--images", str(folder), "--labels", str(labels), "--out", str(out)
        ).returncode
        == 0
    )
    items = tmp_path / "items.jsonl"
    items.write_text(
        "\n".join(
            json.dumps(
                {
                    "id": f"q{i}",
                    "task": "colour",
                    "images": [str(folder / f"{c}0.png")],
                    "question": "Which colour?",
                    "answer": c,
                    "metric": "open",
                }
            )
            for i, c in enumerate(["red", "blue"])
        )
        + "\n"
    )
    script = tmp_path / "s.jsonl"
    script.write_text("\n".join(json.dumps({"json": {"answer": a}}) for a in ["red", "green"]))
    run = medagent(
        "eval",
        "run",
        "--dataset",
        "jsonl",
        "--data",
        str(items),
        "--method",
        "rag",
        "--index",
        str(out),
        "--backend",
        "scripted",
        "--script",
        str(script),
        "--concurrency",
        "1",
        "--out",
        str(tmp_path / "run"),
    )
    assert run.returncode == 0, run.stdout + run.stderr
    lines = [json.loads(x) for x in (tmp_path / "run" / "results.jsonl").read_text().splitlines()]
    assert sorted((r["id"], r["correct"]) for r in lines) == [("q0", True), ("q1", False)]


@pytest.mark.realdata
def test_rag_pairs_cli_on_vqa_rad(shared_data: Path, tmp_path: Path) -> None:
    from medagent.evals import load_vqarad

    data = shared_data / "vqa-rad"
    out = tmp_path / "idx"
    built = medagent(
        "index", "build", "--dataset", "vqa-rad", "--data", str(data), "--out", str(out)
    )
    assert built.returncode == 0, built.stderr
    items = [i for i in load_vqarad(data, split="train", limit=2).items if i.answer]
    replies = []
    for item in items:  # clean/plain right, noise/plain wrong, both RAG runs right
        for answer in (item.answer, "zzz", item.answer, item.answer):
            replies.append(json.dumps({"json": {"answer": answer}}))
    script = tmp_path / "s.jsonl"
    script.write_text("\n".join(replies) + "\n")
    pairs = tmp_path / "pairs.jsonl"
    result = medagent(
        "rag",
        "pairs",
        "--data",
        str(data),
        "--index",
        str(out),
        "--split",
        "train",
        "--limit",
        "2",
        "--out",
        str(pairs),
        "--backend",
        "scripted",
        "--script",
        str(script),
    )
    assert result.returncode == 0, result.stdout + result.stderr
    written = [json.loads(line) for line in pairs.read_text().splitlines()]
    assert [p["stage"] for p in written] == ["1"] * len(items)
    assert all(p["rejected"] == "zzz" and p["rejected_image"] == "noise" for p in written)

    # Compiled prompts: the tuned role line is what the pairs' prompts start with.
    from medagent.agents.rag import rag_program

    tuned = rag_program()
    tuned.predictor("answer").instructions = "TUNED reader of $domain images."
    tuned.save(tmp_path / "tuned.json")
    again = medagent(
        "rag", "pairs", "--data", str(data), "--index", str(out), "--split", "train",
        "--limit", "2", "--out", str(tmp_path / "tuned-pairs.jsonl"), "--backend", "scripted",
        "--script", str(script), "--prompts", str(tmp_path / "tuned.json"),
    )  # fmt: skip
    assert again.returncode == 0, again.stdout + again.stderr
    tuned_pairs = [json.loads(x) for x in (tmp_path / "tuned-pairs.jsonl").read_text().splitlines()]
    assert tuned_pairs and all(p["prompt"].startswith("TUNED reader of") for p in tuned_pairs)
