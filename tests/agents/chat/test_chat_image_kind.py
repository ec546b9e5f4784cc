"""The chat tells the model truly what the image is, renders views at the size the backend
keeps, writes a run manifest, and keeps every refused reply in the correction loop."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from PIL import Image

from medagent.agents.base import RunManifest
from medagent.agents.chat import ChatAgent, ChatConfig, ChatEvent
from medagent.artifacts import ArtifactStore
from medagent.imaging import ImageSlide, Slide, modality, open_image
from medagent.models import ScriptedModel
from medagent.testing import synthetic_tissue, write_pyramid_tiff


@pytest.fixture(scope="module")
def slides(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Slide]:
    """A pathology pyramid (0.5 µm/px), a radiograph (0.15 mm/px), a PNG without spacing."""
    folder = tmp_path_factory.mktemp("kinds")
    pyramid = write_pyramid_tiff(
        folder / "tissue.tif", synthetic_tissue(2000, 1500, seed=7), mpp=0.5, levels=2
    )
    picture = synthetic_tissue(900, 700, seed=8)
    png = folder / "plain.png"
    picture.save(png)
    radiograph = ImageSlide(
        picture,
        path=folder / "chest.png",
        mpp=(150.0, 150.0),
        modality=modality("radiograph"),
    )
    return {"pathology": open_image(pyramid), "radiograph": radiograph, "plain": open_image(png)}


def agent_for(model: Any, slide: Slide, tmp_path: Path, **config: Any) -> ChatAgent:
    return ChatAgent(
        model, slide, artifacts=ArtifactStore(tmp_path / "artifacts"), config=ChatConfig(**config)
    )


async def first_request_texts(slide: Slide, tmp_path: Path) -> tuple[str, str]:
    """The system prompt and the first user message's text the model got."""
    model = ScriptedModel([{"text": "Seen."}])
    agent = agent_for(model, slide, tmp_path)
    events = [e async for e in agent.astream("t", "What is this?")]
    assert events[-2].type == "answer"
    system, user = model.requests[0].messages[:2]
    assert system.role == "system" and user.role == "user"
    return system.text, user.text


async def test_a_pathology_slide_is_a_pathologists_with_micrometres(
    slides: dict[str, Slide], tmp_path: Path
) -> None:
    system, user = await first_request_texts(slides["pathology"], tmp_path)

    assert "expert pathologist" in system and "whole-slide pathology image" in system
    assert "0.5 µm per pixel" in system and "0.5 µm per pixel" in user
    assert "the whole slide" in user


async def test_a_radiograph_is_a_radiologists_with_millimetres(
    slides: dict[str, Slide], tmp_path: Path
) -> None:
    system, user = await first_request_texts(slides["radiograph"], tmp_path)

    assert "expert radiologist" in system and "a radiograph" in system
    assert "0.15 mm per pixel" in system and "0.15 mm per pixel" in user
    for text in (system, user):
        assert "patholog" not in text and "whole slide" not in text and "µm" not in text


async def test_an_image_without_spacing_gets_no_unit(
    slides: dict[str, Slide], tmp_path: Path
) -> None:
    system, user = await first_request_texts(slides["plain"], tmp_path)

    assert "a medical image" in system and "pixel spacing unknown" in system
    for text in (system, user):
        assert "patholog" not in text and "µm per" not in text and "mm per" not in text


def test_the_manifest_records_the_prompt_as_filled_for_each_kind(
    slides: dict[str, Slide], tmp_path: Path
) -> None:
    rendered = set()
    for kind, slide in slides.items():
        agent = agent_for(ScriptedModel([]), slide, tmp_path / kind)
        path = agent.write_manifest(tmp_path / kind)
        manifest = RunManifest.read(path.parent)
        assert manifest.agent == "chat" and manifest.backend == "ScriptedModel"
        assert manifest.inputs == {"slide_path": str(slide.path)}
        assert manifest.config["tools"] == [
            "overview", "zoom", "tissue", "segment", "measure", "search_similar", "zero_shot"
        ]  # fmt: skip
        assert manifest.prompts["chat/system"] and "chat/correction_native" in manifest.prompts
        assert manifest.image_long_side == 1000
        rendered.add(manifest.rendered_prompts["system"])
    assert len(rendered) == 3  # the same templates, filled for three kinds of image


def test_a_reopened_folder_keeps_its_run_id(slides: dict[str, Slide], tmp_path: Path) -> None:
    first = agent_for(ScriptedModel([]), slides["plain"], tmp_path).write_manifest(tmp_path)
    run_id = RunManifest.read(first.parent).run_id
    again = agent_for(ScriptedModel([]), slides["plain"], tmp_path, max_tool_calls=3)

    manifest = RunManifest.read(again.write_manifest(tmp_path).parent)

    assert manifest.run_id == run_id and manifest.config["max_tool_calls"] == 3


async def test_views_are_rendered_at_the_backends_image_cap(
    slides: dict[str, Slide], tmp_path: Path
) -> None:
    model = ScriptedModel([{"text": "Seen."}], image_long_side=512)
    agent = agent_for(model, slides["pathology"], tmp_path)

    events: list[ChatEvent] = [e async for e in agent.astream("t", "What is this?")]

    overview = next(e for e in events if e.type == "crop")
    with Image.open(tmp_path / "artifacts" / f"{overview.artifact_id}.jpg") as view:
        assert max(view.size) == 512
    assert agent.manifest().image_long_side == 512


@pytest.mark.parametrize(
    ("mode", "bad"),
    [("native", {"text": "  "}), ("schema", {"text": "I think it is a zoom"})],
)
async def test_every_refused_reply_and_its_correction_stay_in_the_conversation(
    slides: dict[str, Slide], tmp_path: Path, mode: str, bad: dict[str, Any]
) -> None:
    answer = (
        {"text": "A gland."}
        if mode == "native"
        else {"json": {"name": "answer", "arguments": {"text": "A gland."}}}
    )
    model = ScriptedModel([bad, bad, answer])
    agent = agent_for(model, slides["pathology"], tmp_path, tool_mode=mode, max_corrections=2)

    events = [e async for e in agent.astream("t", "What is it?")]

    assert [e.type for e in events] == ["turn_start", "crop", "answer", "turn_end"]
    first, second, third = (r.messages for r in model.requests)
    assert len(second) == len(first) + 2 and len(third) == len(first) + 4
    corrections = [m for m in third[len(first) :] if m.role == "user"]
    assert len(corrections) == 2
    assert all("could not be used" in m.text for m in corrections)
    assert [m.role for m in third[len(first) :]] == ["assistant", "user"] * 2
