"""trajectory.html: self-contained, every image embedded, model text inert, robust to loss."""

from __future__ import annotations

import base64
import io
from html.parser import HTMLParser
from pathlib import Path

import pytest
from PIL import Image

from medagent.agents.giant._html import render_trajectory_html
from medagent.agents.giant._trajectory import StepRecord, Trajectory
from medagent.artifacts import ArtifactStore
from medagent.imaging import Region, Renderer, open_image
from medagent.tools import SlideFacts

SCRIPT = "<script>alert(1)</script>"
ESCAPED = "&lt;script&gt;alert(1)&lt;/script&gt;"
BOX_1 = Region(x=500, y=400, width=1000, height=800)  # shown at (125, 100)-(375, 300)
BOX_2 = Region(x=3000, y=2000, width=1000, height=1000)  # shown at (750, 500)-(1000, 750)


class _Page(HTMLParser):
    """Every start tag with its attributes, and all text, as a browser's parser sees them."""

    def __init__(self, text: str) -> None:
        super().__init__()
        self.tags: list[tuple[str, dict[str, str | None]]] = []
        self.text: list[str] = []
        self.feed(text)
        self.close()

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.append((tag, dict(attrs)))

    def handle_data(self, data: str) -> None:
        self.text.append(data)

    def all(self, tag: str) -> list[dict[str, str | None]]:
        return [attrs for name, attrs in self.tags if name == tag]

    def with_class(self, cls: str) -> list[dict[str, str | None]]:
        return [a for _, a in self.tags if cls in (a.get("class") or "").split()]


def _decode(src: str | None) -> Image.Image:
    assert src is not None and src.startswith("data:image/")
    return Image.open(io.BytesIO(base64.b64decode(src.split(",", 1)[1]))).convert("RGB")


def _facts() -> SlideFacts:
    return SlideFacts(
        width=4000, height=3000, level_count=4, mpp_x=0.25, mpp_y=0.25, objective_power=40
    )


@pytest.fixture
def store(tmp_path: Path) -> ArtifactStore:
    return ArtifactStore(tmp_path / "artifacts")


@pytest.fixture
def trajectory(pyramid_tiff: Path, store: ArtifactStore) -> Trajectory:
    """A GIANT run by hand: overview, two zooms (one clamped, one retried), a refusal, answer."""
    renderer = Renderer(open_image(pyramid_tiff))
    whole = renderer.render(Region(x=0, y=0, width=4000, height=3000), 1000)
    overview = store.put(whole.image, kind="overview", region=whole.region)
    views = [
        renderer.render(box, 500)
        for box in (BOX_1, Region(x=3000, y=2000, width=1500, height=1500))
    ]
    crops = [store.put(v.image, kind="zoom", region=v.region) for v in views]
    zoom_1 = {"reasoning": f"Dense nuclei here {SCRIPT}", "action": "zoom", **_xywh(BOX_1)}
    zoom_2 = {"reasoning": "Check the lower right.", "action": "zoom", **_xywh(views[1].requested)}
    steps = [
        StepRecord(
            step=1, kind="zoom", sent_messages=2, images_sent=[overview.id],
            outputs=['{"action": "zoom"}'], action=zoom_1, requested=BOX_1,
            region=views[0].region, level=views[0].level, mpp=views[0].mpp, artifact=crops[0],
            prompt_tokens=1200, completion_tokens=80, model_s=1.5, tool_s=0.2,
        ),
        StepRecord(
            step=2, kind="zoom", sent_messages=4, outputs=["not json at all", '{"ok": 1}'],
            errors=["the reply was not JSON"], action=zoom_2, requested=views[1].requested,
            region=views[1].region, clamped=True, level=views[1].level, mpp=views[1].mpp,
            artifact=crops[1], notes=["Your region was clamped to the slide."],
            prompt_tokens=2000, completion_tokens=90,
        ),
        StepRecord(
            step=3, kind="rejected", sent_messages=6,
            action={"reasoning": "Far away", "action": "zoom"},
            requested=Region(x=9000, y=9000, width=10, height=10),
            notes=["region lies entirely outside the slide"],
        ),
        StepRecord(
            step=4, kind="answer", sent_messages=7,
            action={"reasoning": "Mitoses seen.", "action": "answer", "answer": "B) carcinoma"},
            prompt_tokens=2500, completion_tokens=40,
        ),
    ]  # fmt: skip
    return Trajectory(
        run_id="run-1",
        method="giant",
        question="What is the diagnosis?",
        options=["benign", "carcinoma", "lymphoma"],
        slide_path=str(pyramid_tiff),
        slide=_facts(),
        model="scripted-vlm",
        config={"max_steps": 20},
        overview=overview,
        steps=steps,
        status="answered",
        answer="B) carcinoma",
        prediction="B",
        elapsed_s=12.34,
    )


def _xywh(region: Region) -> dict[str, int]:
    return {"x": region.x, "y": region.y, "width": region.width, "height": region.height}


def test_page_is_self_contained(trajectory: Trajectory, store: ArtifactStore) -> None:
    text = render_trajectory_html(trajectory, store)
    page = _Page(text)
    assert "http://" not in text and "https://" not in text
    assert not page.all("script") and not page.all("link") and not page.all("iframe")
    assert all((a.get("src") or "").startswith("data:image/") for a in page.all("img"))
    assert not [k for _, a in page.tags for k in a if k.startswith("on")]
    policy = [a for a in page.all("meta") if a.get("http-equiv") == "Content-Security-Policy"]
    assert policy and "default-src 'none'" in (policy[0]["content"] or "")


def test_embeds_the_overview_and_every_crop(trajectory: Trajectory, store: ArtifactStore) -> None:
    page = _Page(render_trajectory_html(trajectory, store))
    images = page.all("img")
    assert len(images) == 1 + 2
    crop = store.data_url(trajectory.steps[0].artifact)  # type: ignore[arg-type]
    assert images[1]["src"] == crop  # crops go in as stored, not re-encoded


def test_overview_has_a_numbered_box_per_zoomed_region(
    trajectory: Trajectory, store: ArtifactStore
) -> None:
    page = _Page(render_trajectory_html(trajectory, store))
    drawn = _decode(page.all("img")[0]["src"])
    plain = store.get(trajectory.overview).convert("RGB")  # type: ignore[arg-type]
    assert drawn.size == plain.size == (1000, 750)

    def yellow(image: Image.Image, x: int, y: int) -> bool:
        # The box colour is (255, 200, 0): blue far below red, unlike glass or H&E stain.
        window = [image.getpixel((x + dx, y + dy)) for dx in (-1, 0, 1) for dy in (-1, 0, 1)]
        return any(p[0] - p[2] > 120 and p[1] > 120 for p in window)  # type: ignore[index]

    edges = [(126, 200), (250, 101), (374, 200), (250, 299), (751, 625), (875, 501)]
    for x, y in edges:
        assert yellow(drawn, x, y), (x, y)
        assert not yellow(plain, x, y), (x, y)
    assert not yellow(drawn, 550, 200)  # nowhere near a box
    links = [a["href"] for a in page.all("a")]
    assert links == ["#step-1", "#step-2"]  # the rejected step showed nothing: no box


def test_header_shows_question_options_answer_and_status(
    trajectory: Trajectory, store: ArtifactStore
) -> None:
    text = render_trajectory_html(trajectory, store)
    page = _Page(text)
    words = "".join(page.text)
    assert "What is the diagnosis?" in words
    assert "B) carcinoma" in words and "prediction" in words
    assert len(page.all("li")) >= 3 and page.all("ol")
    status = page.with_class("status")
    assert status and "background:#1b7f3b" in (status[0]["style"] or "")
    assert "answered" in words and "scripted-vlm" in words and "4000 × 3000" in words
    assert "5700 prompt + 210 completion" in words  # totals over the steps
    assert "12.3 s" in words


def test_step_shows_regions_level_errors_and_raw_outputs(
    trajectory: Trajectory, store: ArtifactStore
) -> None:
    text = render_trajectory_html(trajectory, store)
    page = _Page(text)
    assert [a["id"] for a in page.with_class("step")] == [f"step-{n}" for n in (1, 2, 3, 4)]
    words = "".join(page.text)
    assert "clamped" in words and str(trajectory.steps[1].requested) in words
    assert str(trajectory.steps[1].region) in words
    assert "refused: the reply was not JSON" in words
    assert "region lies entirely outside the slide" in words
    assert "raw output (2 attempts)" in words and "not json at all" in words
    assert len(page.all("details")) >= 3  # raw outputs fold away


@pytest.mark.parametrize("where", ["reasoning", "answer", "question", "option", "output", "error"])
def test_model_text_is_rendered_inert(
    trajectory: Trajectory, store: ArtifactStore, where: str
) -> None:
    hostile = f'{SCRIPT}" onerror="alert(2)'
    steps = list(trajectory.steps)
    update: dict[str, object] = {}
    if where == "reasoning":
        steps[1] = steps[1].model_copy(
            update={"action": {**(steps[1].action or {}), "reasoning": hostile}}
        )
    elif where == "answer":
        update = {"answer": hostile, "prediction": hostile, "votes": {hostile: 3}}
    elif where == "question":
        update = {"question": hostile, "model": hostile, "slide_path": hostile}
    elif where == "option":
        update = {"options": [hostile, "b"]}
    elif where == "output":
        steps[0] = steps[0].model_copy(update={"outputs": [hostile], "errors": [hostile]})
    else:
        update = {"error": hostile, "status": "model_error"}
    text = render_trajectory_html(trajectory.model_copy(update={**update, "steps": steps}), store)
    page = _Page(text)
    assert "<script>" not in text and ESCAPED in text
    assert not page.all("script")
    assert not [k for _, a in page.tags for k in a if k.startswith("on")]
    assert SCRIPT in "".join(page.text)  # shown as text, for the reader to see


def test_missing_artifact_shows_a_placeholder(trajectory: Trajectory, store: ArtifactStore) -> None:
    crop = trajectory.steps[1].artifact
    assert crop is not None
    store.path(crop).unlink()
    page = _Page(render_trajectory_html(trajectory, store))
    assert len(page.all("img")) == 2
    assert crop.id in "".join(page.text) and len(page.with_class("missing")) == 1

    assert trajectory.overview is not None
    store.path(trajectory.overview).unlink()
    page = _Page(render_trajectory_html(trajectory, store))
    assert len(page.all("img")) == 1
    assert trajectory.overview.id in "".join(page.text)


def test_without_overview_or_steps_still_renders(store: ArtifactStore) -> None:
    empty = Trajectory(
        run_id="r", method="giant", question="Q?", slide_path="s.svs",
        slide=SlideFacts(
            width=10, height=10, level_count=1, mpp_x=None, mpp_y=None, objective_power=None
        ),
        model="m", config={},
    )  # fmt: skip
    page = _Page(render_trajectory_html(empty, store))
    words = "".join(page.text)
    assert "No overview" in words and "running" in words and "unknown" in words


def _patch_baseline(store: ArtifactStore, count: int) -> Trajectory:
    overview = store.put(
        Image.new("RGB", (1000, 750), (240, 240, 240)),
        kind="overview",
        region=Region(x=0, y=0, width=4000, height=3000),
    )
    steps = []
    for n in range(1, count + 1):
        region = Region(x=(n * 120) % 3700, y=(n * 90) % 2700, width=224, height=224)
        patch = store.put(
            Image.new("RGB", (224, 224), (200, 100 + n, 180)), kind="patch", region=region
        )
        action = {"reasoning": f"patch {n} looks {SCRIPT}", "answer": "AB"[n % 2]}
        steps.append(
            StepRecord(
                step=n, kind="patch", sent_messages=2, outputs=["{}"], action=action,
                region=region, artifact=patch, prompt_tokens=300, completion_tokens=20,
            )
        )  # fmt: skip
    return Trajectory(
        run_id="patches", method="patches", question="Which?", options=["a", "b"],
        slide_path="s.tif", slide=_facts(), model="m", config={}, overview=overview,
        steps=steps, status="answered", answer="A", prediction="A", votes={"A": 15, "B": 15},
    )  # fmt: skip


def test_patch_baseline_is_a_compact_grid(store: ArtifactStore) -> None:
    trajectory = _patch_baseline(store, 30)
    text = render_trajectory_html(trajectory, store)
    page = _Page(text)
    assert len(page.with_class("patches")) == 1 and not page.with_class("step")
    cards = page.with_class("card")
    assert [c["id"] for c in cards] == [f"step-{n}" for n in range(1, 31)]
    assert len(page.all("img")) == 31
    assert "<script>" not in text
    words = "".join(page.text)
    assert "A: 15, B: 15" in words
    # Markup beyond the embedded images stays small: about a kilobyte per patch.
    markup = sum(len(a["src"] or "") for a in page.all("img"))
    assert len(text) - markup < 2_000 * 30 + 10_000
