"""GIANT on a server started with ``--limit-mm-per-prompt '{"image": 1}'``: the first request
is refused with vLLM's message, and from then on every turn carries only the latest crop."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from medagent.agents.giant import GiantConfig, GiantNavigator
from medagent.models import OpenAIBackend, ParameterMemory, RetryPolicy
from medagent.testing import StubOpenAIServer
from model_support import images_in


def test_giant_on_a_server_that_takes_one_image_per_request(
    nav_slide: Path, tmp_path: Path
) -> None:
    zoom: dict[str, Any] = {
        "reasoning": "closer",
        "action": "zoom",
        "x": 0,
        "y": 0,
        "width": 3000,
        "height": 2000,
    }
    answer = {"reasoning": "glands", "action": "answer", "answer": "2"}
    script: list[dict[str, Any]] = [{"json": zoom}, {"json": zoom | {"x": 500}}, {"json": answer}]
    with StubOpenAIServer(script, max_images=1) as server:
        navigator = GiantNavigator(
            OpenAIBackend(
                "tiny",
                [server.base_url],
                retry=RetryPolicy(max_retries=0),
                parameter_memory=ParameterMemory(),
            ),
            GiantConfig(),
            runs_dir=tmp_path,
        )
        result = navigator.run(nav_slide, "Is there tumour?", options=["no", "yes"])
    assert result.status == "answered" and result.prediction == "yes"
    accepted = [body for body in server.requests if len(images_in(body)) <= 1]
    assert len(accepted) == 3 and len(server.requests) == 4  # one refusal, then remembered
    # Each turn carries the crop just taken; the last turn's image is the second zoom.
    assert images_in(accepted[-1]) != images_in(accepted[0])
