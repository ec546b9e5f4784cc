"""The insight agent's tools on the real slide and a real VQA-RAD image, and the example cases."""

from __future__ import annotations

import csv
import shutil
from pathlib import Path
from typing import Any

import pytest

from medagent.agents.insight import InsightAgent, InsightConfig
from medagent.artifacts import ArtifactStore
from medagent.evals import load_insight
from medagent.imaging import RenderPolicy, open_image
from medagent.models import ScriptedModel
from medagent.retrieval import DefaultEmbedder, build_index, images_from_folder, open_index
from medagent.tools import ToolContext, segment

pytestmark = pytest.mark.realdata

EXAMPLES = Path(__file__).resolve().parents[3] / "examples" / "insight" / "cases.jsonl"
NUCLEI_REGION = {"x": 800, "y": 1200, "width": 600, "height": 600}


@pytest.fixture(scope="module")
def tile_index(shared_data: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An index of the real tissue tiles, two of them with reports."""
    folder = tmp_path_factory.mktemp("tiles")
    names = sorted(p.name for p in (shared_data / "tiles").glob("tissue-*.png"))[:4]
    for name in names:
        shutil.copy(shared_data / "tiles" / name, folder / name)
    labels = folder.parent / "labels.csv"
    with labels.open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["file", "label", "domain", "report"])
        writer.writerow([names[0], "tissue", "pathology", "H&E section with dense nuclei."])
        writer.writerow([names[1], "tissue", "pathology", "Fibrous stroma, few cells."])
    out = folder.parent / "index"
    build_index(out, images_from_folder(folder, labels), DefaultEmbedder())
    return out


def test_tools_run_on_the_real_slide_and_their_results_are_the_evidence(
    cmu_slide: Path, tile_index: Path, tmp_path: Path, replies: Any
) -> None:
    run_dir = tmp_path / "run"
    # The mask id a segment call will produce is the hash of its PNG: compute it the same way.
    with open_image(cmu_slide) as slide:
        probe = ToolContext(
            artifacts=ArtifactStore(run_dir / "artifacts"),
            slide=slide,
            policy=RenderPolicy(long_side=1000),
        )
        mask_id = segment(probe, method="nuclei", region=NUCLEI_REGION).mask.id
    model = ScriptedModel(
        [
            replies.roots(1, region={"x": 700, "y": 1100, "width": 800, "height": 800}),
            replies.tool(
                "zoom", image=1, region={"x": 600, "y": 1000, "width": 1000, "height": 1000}
            ),
            replies.tool("tissue", image=1, region=None),
            replies.tool("segment", image=1, method="nuclei", region=NUCLEI_REGION),
            replies.tool("measure", image=1, kind="mask", mask=mask_id),
            replies.tool(
                "measure", image=1, kind="distance", points=[{"x": 0, "y": 0}, {"x": 600, "y": 800}]
            ),
            replies.tool("search_similar", image=1, region=NUCLEI_REGION, k=3),
            replies.tool("reports", image=1, region=NUCLEI_REGION),
            replies.answer("The cellular area holds hundreds of nuclei in 0.09 mm²."),
            replies.summary([1]),
        ]
    )
    agent = InsightAgent(
        model, InsightConfig(roots=1, depth=1, max_steps=8), searcher=open_index(tile_index)
    )
    report = agent.run(cmu_slide, "How cellular is this tissue?", run_dir=run_dir)

    assert report.status == "completed", report.error
    steps = report.questions[0].steps
    assert [s.tool for s in steps] == [
        "zoom",
        "tissue",
        "segment",
        "measure",
        "measure",
        "search_similar",
        "reports",
    ]
    assert all(s.ok for s in steps), [s.text for s in steps if not s.ok]
    zoomed, tissue, nuclei, mask, distance, similar, reports = report.insights[0].evidence
    store = ArtifactStore(run_dir / "artifacts")
    assert zoomed.region is not None and zoomed.region.width == 1000
    assert store.path(zoomed.artifacts[0]).exists()
    fraction = {m.name: m.value for m in tissue.measurements}["tissue_fraction"]
    assert 20 < fraction < 40  # about 30% of the region is tissue
    counts = {m.name: m for m in nuclei.measurements}
    assert counts["nuclei_count"].value > 100
    assert counts["median_area"].unit == "µm²" and 5 < counts["median_area"].value < 60
    assert mask.measurements[0].unit == "µm²"  # the largest nucleus, from the mask id
    assert distance.measurements[0].value == pytest.approx(1000 * 0.499, rel=0.01)
    assert distance.measurements[0].unit == "µm"
    assert len(similar.neighbours) == 3 and similar.neighbours[0].startswith("tissue-")
    assert reports.neighbours  # only tiles with a report, cut by the adaptive rule
    assert "for reference only" in reports.text
    # The model read the numbers it is asked to build the insight on.
    last = model.requests[-2].messages
    assert any("Mask id (for measure)" in m.text for m in last)
    page = report.html_path.read_text()
    assert page.count("data:image/jpeg;base64,") >= 4
    assert "nuclei count" in page and "µm²" in page


@pytest.mark.parametrize(
    ("name", "unit", "value"),
    [
        ("vqa-rad/images/synpic33889.jpg", "px", 50.0),  # no spacing: pixels, said so
        ("radiology/dx_image.dcm", "mm", 50 * 1.2012),  # DICOM PixelSpacing 1.2012 mm
    ],
)
def test_real_radiology_images_get_region_tools_and_honest_units(
    shared_data: Path, tmp_path: Path, replies: Any, name: str, unit: str, value: float
) -> None:
    model = ScriptedModel(
        [
            replies.roots(1),
            replies.tool("zoom", image=1, region={"x": 20, "y": 20, "width": 120, "height": 100}),
            replies.tool(
                "measure", image=1, kind="distance", points=[{"x": 10, "y": 10}, {"x": 40, "y": 50}]
            ),
            replies.answer("A 50 px structure."),
            replies.summary([1]),
        ]
    )
    report = InsightAgent(model, InsightConfig(roots=1, depth=1)).run(
        shared_data / name, "Describe the findings.", run_dir=tmp_path / "run"
    )
    assert report.status == "completed", report.error
    assert report.sources[0].kind == "image"
    assert '"action": "segment"' not in model.requests[1].messages[1].text
    zoomed, measured = report.insights[0].evidence
    assert zoomed.artifacts and zoomed.region is not None
    assert measured.measurements[0].unit == unit
    assert measured.measurements[0].value == pytest.approx(value, rel=1e-3)
    assert ("physical units are unknown" in measured.text) == (unit == "px")


def test_the_example_cases_resolve_to_the_shared_data(shared_data: Path) -> None:
    dataset = load_insight(EXAMPLES)
    assert not dataset.missing and len(dataset.items) == 4
    for item in dataset.items:
        assert item.metric == "insight" and item.metadata["insights"]
        for image in item.images:
            assert Path(image).resolve().is_relative_to(shared_data.resolve()), image
            assert Path(image).is_file()
