"""The scale a prompt states is the scale of the pixels the model receives, on every backend.

GIANT renders each view at ``render_long_side(model, long_side)`` and says how many µm (or mm)
one of its pixels spans; a backend that shrank the image after that would make the statement
false. Each backend here is run through GIANT and the images it really hands on (decoded from
the HTTP request, as recorded, or as given to the processor) are checked against the text.
"""

from __future__ import annotations

import base64
import io
import json
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
from PIL import Image

from medagent.agents.giant import GiantConfig, GiantNavigator, Trajectory
from medagent.artifacts import ArtifactRef
from medagent.models import ChatModel, OpenAIBackend, RetryPolicy, ScriptedModel
from model_support import chat_completion

QUESTION = "Is there tumour on this slide?"
MPP = 0.25  # nav_slide: 8000 x 6000 level-0 pixels
SCALE = re.compile(r"([\d.]+)\s*(µm|mm) per pixel")


@dataclass(frozen=True)
class Sent:
    """One image as the backend handed it on, with the text of the message it came in."""

    text: str
    size: tuple[int, int]


def zoom(x: int, y: int, w: int, h: int) -> dict[str, Any]:
    return {"reasoning": "closer", "action": "zoom", "x": x, "y": y, "width": w, "height": h}


FINAL = {"reasoning": "from what I saw", "answer": "yes"}


def _flat(text: str) -> str:
    return " ".join(text.split())


def _stated_um(text: str) -> float:
    """The last scale the text states, in µm per pixel."""
    found = SCALE.findall(text)
    assert found, f"no scale stated in {text!r}"
    value, unit = found[-1]
    return float(value) * (1000.0 if unit == "mm" else 1.0)


def check_stated_scales(result_trajectory: Path, sent: list[Sent], long_side: int) -> int:
    """Every image was sent as rendered, at most ``long_side``, and its stated scale is true.

    Returns how many region views (not the overview) were checked.
    """
    trajectory = Trajectory.model_validate_json(result_trajectory.read_text())
    shown: dict[str, ArtifactRef] = {}
    for message in trajectory.messages:
        refs = [part.artifact for part in message.images if part.artifact is not None]
        if message.role == "user" and refs:
            shown[_flat(message.text)] = refs[0]
    assert sent, "the backend was never handed an image"
    regions = 0
    for item in {(s.text, s.size): s for s in sent}.values():  # history repeats images
        ref = shown[_flat(item.text)]
        assert item.size == (ref.width, ref.height), "shrunk after the prompt was written"
        assert max(item.size) <= long_side
        region = ref.region
        assert region is not None
        stated = _stated_um(item.text)
        true_scale = region.width * MPP / item.size[0]
        if (region.width, region.height) == (trajectory.slide.width, trajectory.slide.height):
            # The overview states the slide's level-0 spacing (or its own; both are true).
            assert max(item.size) == long_side
            assert stated == pytest.approx(MPP, rel=0.01) or stated == pytest.approx(
                true_scale, rel=0.01
            )
        else:
            assert stated * item.size[0] == pytest.approx(region.width * MPP, rel=0.01)
            regions += 1
    return regions


def navigate(model: ChatModel, slide: Path, tmp_path: Path, long_side: int = 2000) -> Path:
    navigator = GiantNavigator(
        model, GiantConfig(long_side=long_side, max_steps=2), runs_dir=tmp_path
    )
    result = navigator.run(slide, QUESTION, options=["no", "yes"], run_dir=tmp_path / "run")
    assert result.status in ("answered", "answered_at_limit"), result.error
    return result.trajectory_path


# -- (a) the HTTP backend: the data URLs actually posted ------------------------------------


def _decoded(url: str) -> tuple[int, int]:
    payload = url.split(",", 1)[1]
    with Image.open(io.BytesIO(base64.b64decode(payload))) as image:
        return image.size


def openai_on_mock(replies: list[dict[str, Any]], cap: int | None) -> tuple[OpenAIBackend, list]:
    bodies: list[dict[str, Any]] = []

    def answer(request: httpx.Request) -> httpx.Response:
        bodies.append(json.loads(request.content))
        return chat_completion({"json": replies[min(len(bodies), len(replies)) - 1]})

    backend = OpenAIBackend(
        "mock",
        ["http://mock.invalid/v1"],
        image_long_side=cap,
        retry=RetryPolicy(max_retries=0),
        transport=httpx.MockTransport(answer),
    )
    return backend, bodies


def sent_over_http(bodies: list[dict[str, Any]]) -> list[Sent]:
    sent: list[Sent] = []
    for body in bodies:
        for message in body["messages"]:
            if not isinstance(message["content"], list):
                continue
            parts = message["content"]
            text = "\n".join(p["text"] for p in parts if p["type"] == "text")
            sent += [
                Sent(text, _decoded(p["image_url"]["url"]))
                for p in parts
                if p["type"] == "image_url"
            ]
    return sent


@pytest.mark.parametrize(("cap", "long_side"), [(None, 2000), (1024, 1024)])
def test_http_backend_sends_the_scale_it_states(
    nav_slide: Path, tmp_path: Path, cap: int | None, long_side: int
) -> None:
    model, bodies = openai_on_mock([zoom(1000, 1000, 3000, 2000), FINAL], cap)
    trajectory = navigate(model, nav_slide, tmp_path)
    assert check_stated_scales(trajectory, sent_over_http(bodies), long_side) == 1


def test_no_cap_sends_the_rendered_2000_px_at_quarter_micron(
    nav_slide: Path, tmp_path: Path
) -> None:
    model, bodies = openai_on_mock([zoom(0, 0, 2000, 1500), FINAL], None)
    navigate(model, nav_slide, tmp_path)
    sent = sent_over_http(bodies)
    region_views = [s for s in sent if s.size == (2000, 1500)]
    assert region_views, [s.size for s in sent]
    assert _stated_um(region_views[0].text) == pytest.approx(0.25, rel=0.01)


# -- (b) the scripted backend: the images as recorded ---------------------------------------


def sent_to_script(model: ScriptedModel) -> list[Sent]:
    return [
        Sent(message.text, (part.artifact.width, part.artifact.height))
        for request in model.requests
        for message in request.messages
        for part in message.images
        if part.artifact is not None
    ]


@pytest.mark.parametrize(("cap", "long_side"), [(None, 2000), (1024, 1024)])
def test_scripted_backend_receives_the_scale_it_is_told(
    nav_slide: Path, tmp_path: Path, cap: int | None, long_side: int
) -> None:
    model = ScriptedModel(
        [{"json": zoom(1000, 1000, 3000, 2000)}, {"json": FINAL}], image_long_side=cap
    )
    trajectory = navigate(model, nav_slide, tmp_path)
    assert check_stated_scales(trajectory, sent_to_script(model), long_side) == 1


# -- (c) the in-process transformers backend: the PIL images given to the processor --------


@pytest.fixture(scope="module")
def tiny_vlm(tmp_path_factory: pytest.TempPathFactory) -> Path:
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    from medagent.testing import build_tiny_vlm

    return build_tiny_vlm(tmp_path_factory.mktemp("tiny_vlm"), seed=0)


@pytest.mark.slow
@pytest.mark.hf
@pytest.mark.parametrize(("cap", "long_side"), [(None, 2000), (1024, 1024)])
def test_transformers_backend_hands_on_the_scale_it_states(
    nav_slide: Path,
    tmp_path: Path,
    tiny_vlm: Path,
    monkeypatch: pytest.MonkeyPatch,
    cap: int | None,
    long_side: int,
) -> None:
    from medagent.models import TransformersBackend, _transformers

    sent: list[Sent] = []
    original = _transformers.to_template_messages

    def recording(*args: Any, **kwargs: Any) -> Any:
        conversation, images = original(*args, **kwargs)
        handed = iter(images)
        for item in conversation:
            text = "\n".join(p["text"] for p in item["content"] if p["type"] == "text")
            sent.extend(
                Sent(text, next(handed).size) for p in item["content"] if p["type"] == "image"
            )
        return conversation, images

    monkeypatch.setattr(_transformers, "to_template_messages", recording)
    model = TransformersBackend(tiny_vlm, device="cpu", seed=0, image_long_side=cap)
    navigator = GiantNavigator(
        model, GiantConfig(long_side=2000, max_steps=2, max_tokens=400), runs_dir=tmp_path
    )
    result = navigator.run(nav_slide, QUESTION, options=["no", "yes"], run_dir=tmp_path / "run")
    # Random weights choose where to look: the overview is always checked, zooms when made.
    check_stated_scales(result.trajectory_path, sent, long_side)
