"""``medagent mcp`` over a series in a DICOMweb archive, against a real Orthanc (no mocks):
a reference in an allowed archive works like a slide path; any other archive, or any archive
when none is allowed, is a one-line tool error."""

from __future__ import annotations

import base64
import io
import os
import sys
from pathlib import Path
from typing import Any

import pytest
from PIL import Image

from cli_support import medagent
from dicomweb_support import PASSWORD, USER
from medagent.artifacts import ArtifactStore
from medagent.errors import ConfigError
from medagent.testing import OrthancServer
from medagent.tools import ToolFailure, ZoomOutput

mcp = pytest.importorskip("mcp", reason="needs the [mcp] extra")
from mcp import ClientSession, StdioServerParameters, stdio_client  # noqa: E402

from medagent.mcp_server import SlideTools  # noqa: E402

pytestmark = pytest.mark.slow


def tools(tmp_path: Path, archives: list[str]) -> SlideTools:
    return SlideTools([tmp_path], ArtifactStore(tmp_path / "store"), archives=archives)


@pytest.mark.usefixtures("dicomweb_credentials")
def test_a_series_in_an_allowed_archive_is_zoomed_like_a_file(
    dicomweb_archive: OrthancServer, dicomweb_ref: str, tmp_path: Path
) -> None:
    slides = tools(tmp_path, [dicomweb_archive.dicomweb_url + "/"])
    zoom = {"slide": dicomweb_ref, "x": 1000, "y": 800, "width": 1200, "height": 900}
    result, images = slides.call("zoom", zoom)
    assert isinstance(result, ZoomOutput), result
    assert result.mpp == pytest.approx(0.25 * 1200 / 1000) and len(images) == 1  # 1000 px view
    again, _ = slides.call("zoom", {**zoom, "x": 1100})  # the open series is reused
    assert isinstance(again, ZoomOutput) and len(slides._open) == 1
    help_text = slides.schemas()[1]["inputSchema"]["properties"]["slide"]["description"]
    assert f"dicomweb+{dicomweb_archive.dicomweb_url}/studies/" in help_text


@pytest.mark.usefixtures("dicomweb_credentials")
def test_other_archives_and_no_archive_are_tool_errors(
    dicomweb_archive: OrthancServer, dicomweb_ref: str, tmp_path: Path
) -> None:
    other = dicomweb_ref.replace("/dicom-web/", "/dicom-web-2/")
    host_spelling = dicomweb_ref.replace("127.0.0.1", "127.0.0.1.evil.example")
    for slides, requested in [
        (tools(tmp_path, [dicomweb_archive.dicomweb_url]), other),
        (tools(tmp_path, [dicomweb_archive.dicomweb_url]), host_spelling),
        (tools(tmp_path, []), dicomweb_ref),
        (tools(tmp_path, ["http://127.0.0.1:1/dicom-web"]), dicomweb_ref),
    ]:
        result, images = slides.call("overview", {"slide": requested})
        assert isinstance(result, ToolFailure) and not images
        assert result.kind == "bad_input" and "\n" not in result.message
        assert "not one this server may open" in result.message or "no DICOMweb" in result.message


def test_a_bad_allowed_archive_stops_the_server_at_start(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="--dicomweb-archive"):
        tools(tmp_path, ["https://user:pw@pacs.example/dicom-web"])


async def calls(args: list[str], env: dict[str, str], *made: tuple[str, dict[str, Any]]) -> Any:
    full = {k: v for k, v in os.environ.items() if not k.startswith("MEDAGENT_")} | env
    server = StdioServerParameters(
        command=sys.executable, args=["-m", "medagent", "mcp", *args], env=full
    )
    async with stdio_client(server) as (read, write), ClientSession(read, write) as session:
        await session.initialize()
        return [await session.call_tool(name, arguments) for name, arguments in made]


async def test_sdk_client_views_a_series_through_medagent_mcp(
    dicomweb_archive: OrthancServer, dicomweb_ref: str
) -> None:
    # No --slides: an archive alone is enough; the setting and the flag add up.
    args = ["--dicomweb-archive", "https://elsewhere.example/dicom-web"]
    env = {
        "MEDAGENT_DICOMWEB_BASIC": f"{USER}:{PASSWORD}",
        "MEDAGENT_DICOMWEB_ARCHIVES": dicomweb_archive.dicomweb_url,
    }
    elsewhere = dicomweb_ref.replace(dicomweb_archive.base_url, "https://pacs.example")
    overview, refused, wrong = await calls(
        args, env, ("overview", {"slide": dicomweb_ref}), ("overview", {"slide": elsewhere}),
        ("zoom", {"slide": dicomweb_ref, "x": 0, "y": 0, "width": 100}),
    )  # fmt: skip
    assert not overview.is_error, overview.content[0].text
    shown = [c for c in overview.content if c.type == "image"]
    view = Image.open(io.BytesIO(base64.b64decode(shown[0].data)))
    assert max(view.size) == 1000 and view.size[0] > view.size[1]  # 4000 x 3000
    assert refused.is_error and "not one this server may open" in refused.content[0].text
    assert wrong.is_error and "height" in wrong.content[0].text
    for result in (overview, refused, wrong):
        assert PASSWORD not in " ".join(getattr(c, "text", "") for c in result.content)


def test_neither_slides_nor_an_archive_is_one_line() -> None:
    done = medagent("mcp")
    assert done.returncode == 2
    assert done.stderr.strip() == "error: give --slides DIR, or --dicomweb-archive URL, or both"
