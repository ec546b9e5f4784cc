"""Slides in a DICOMweb archive, against a real Orthanc with its DICOMweb plugin (no mocks):
the series opens from a ``dicomweb+`` reference, reads equal the local copy pixel for pixel,
only the frames a region covers are fetched, credentials stay out of everything written, and
a refused, missing or vanished archive is one line."""

from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np
import pytest

from cli_support import medagent
from dicomweb_support import PASSWORD, USER, SlowProxy
from medagent.agents.giant import GiantConfig, GiantNavigator
from medagent.errors import InputError, SlideOpenError
from medagent.imaging import (
    Region,
    is_dicomweb_ref,
    open_dicomweb,
    open_image,
    parse_dicomweb_ref,
)
from medagent.models import ScriptedModel
from medagent.testing import OrthancServer

pytestmark = pytest.mark.slow

TILE = 256


# -- references ------------------------------------------------------------------------------


def test_a_reference_names_root_study_and_series() -> None:
    parsed = parse_dicomweb_ref("dicomweb+https://pacs.example/dicom-web/studies/1.2.3/series/4.5/")
    assert parsed.base_url == "https://pacs.example/dicom-web"
    assert (parsed.study_uid, parsed.series_uid) == ("1.2.3", "4.5")
    assert parsed.url == "dicomweb+https://pacs.example/dicom-web/studies/1.2.3/series/4.5"
    assert is_dicomweb_ref("DICOMWEB+https://x") and not is_dicomweb_ref("/data/slide.svs")
    shouted = parse_dicomweb_ref("DICOMWEB+HTTPS://PACS.Example/DICOM-web/studies/1/series/2")
    assert shouted.base_url == "https://pacs.example/DICOM-web"  # the path keeps its case


@pytest.mark.parametrize(
    ("text", "words"),
    [
        ("dicomweb+https://u:p@pacs/dw/studies/1/series/2", "must not hold credentials"),
        ("dicomweb+https://pacs/dw/studies/1/series/2?token=x", "no query"),
        ("dicomweb+https://pacs/dw/studies/1.a/series/2", "the form is"),
        ("dicomweb+ftp://pacs/dw/studies/1/series/2", "the form is"),
        ("dicomweb+https://pacs/" + "a" * 3000, "at most"),
    ],
)
def test_bad_references_are_one_line(text: str, words: str) -> None:
    with pytest.raises(InputError, match=words) as caught:
        parse_dicomweb_ref(text)
    assert "\n" not in str(caught.value)


# -- the archive ---------------------------------------------------------------------------


@pytest.mark.usefixtures("dicomweb_credentials")
def test_the_series_reads_as_the_local_copy_fetching_only_the_frames_it_covers(
    dicomweb_ref: str, dicomweb_series: Path
) -> None:
    local = open_image(dicomweb_series)
    with open_image(dicomweb_ref) as remote:
        assert remote.level_dimensions == local.level_dimensions
        assert remote.mpp_x == local.mpp_x == 0.25
        assert remote.source == dicomweb_ref and remote.format == "dicomweb"
        assert "label" in remote.associated_image_names
        frames = remote.frames  # type: ignore[attr-defined]
        before = frames.frames
        region = Region(x=1000, y=800, width=512, height=512)  # tiles 3..5 x 3..5 at 256 px
        assert np.array_equal(np.asarray(remote.read(region, 0)), np.asarray(local.read(region, 0)))
        assert frames.frames - before == 9
        remote.read(region, 0)
        assert frames.frames - before == 9  # decoded frames are cached
    local.close()


def test_wrong_credentials_are_one_line_and_never_shown(
    dicomweb_ref: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("MEDAGENT_DICOMWEB_BASIC", f"{USER}:wrong-password")
    with pytest.raises(SlideOpenError, match="refused the credentials") as caught:
        open_image(dicomweb_ref)
    message = str(caught.value)
    assert "\n" not in message and "wrong-password" not in message and dicomweb_ref in message


@pytest.mark.usefixtures("dicomweb_credentials")
def test_a_missing_series_is_one_line(dicomweb_ref: str) -> None:
    missing = dicomweb_ref.rsplit("/series/", 1)[0] + "/series/1.2.3.4.5"
    started = time.perf_counter()
    with pytest.raises(SlideOpenError, match="no whole-slide image in that study") as caught:
        open_image(missing)
    assert "\n" not in str(caught.value) and missing in str(caught.value)
    assert time.perf_counter() - started < 10


@pytest.mark.usefixtures("dicomweb_credentials")
def test_the_archive_going_away_mid_run_is_one_line_then_it_reads_again(
    dicomweb_archive: OrthancServer, dicomweb_ref: str
) -> None:
    with open_image(dicomweb_ref) as remote:
        dicomweb_archive.stop()
        try:
            with pytest.raises(SlideOpenError, match="did not deliver the frames") as caught:
                remote.read(Region(x=3000, y=2000, width=600, height=600), 0)
            assert "\n" not in str(caught.value)
        finally:
            dicomweb_archive.start()
        image = remote.read(Region(x=3000, y=2000, width=600, height=600), 0)
        assert image.size == (600, 600)


@pytest.mark.usefixtures("dicomweb_credentials")
def test_a_slow_frame_times_out_in_one_line_and_bounded_time(
    dicomweb_archive: OrthancServer, dicomweb_ref: str
) -> None:
    with SlowProxy(dicomweb_archive.port) as proxy:
        slow_ref = dicomweb_ref.replace(f":{dicomweb_archive.port}/", f":{proxy.port}/")
        remote = open_dicomweb(slow_ref, timeout_s=1.0)
        proxy.delay_s = 3.0
        started = time.perf_counter()
        with pytest.raises(SlideOpenError, match="no answer in time") as caught:
            remote.read(Region(x=2000, y=1500, width=700, height=700), 0)
        elapsed = time.perf_counter() - started
        assert "\n" not in str(caught.value) and elapsed < 30, elapsed
        proxy.delay_s = 0.0
        assert remote.read(Region(x=2000, y=1500, width=700, height=700), 0).size == (700, 700)
        remote.close()


@pytest.mark.usefixtures("dicomweb_credentials")
def test_giant_navigates_a_slide_in_the_archive(dicomweb_ref: str, tmp_path: Path) -> None:
    zoom = {"reasoning": "look", "action": "zoom", "x": 500, "y": 500, "width": 1000, "height": 800}
    answer = {"reasoning": "seen", "action": "answer", "answer": "1"}
    model = ScriptedModel([{"json": zoom}, {"json": answer}])
    slide = open_image(dicomweb_ref)
    navigator = GiantNavigator(model, GiantConfig(long_side=512), runs_dir=tmp_path)
    result = navigator.run(slide, "Is there tissue?", options=["yes", "no"])
    assert result.status == "answered"
    manifest = json.loads((result.run_dir / "manifest.json").read_text())
    assert manifest["inputs"]["slide_path"] == dicomweb_ref
    written = "".join(p.read_text(errors="ignore") for p in result.run_dir.rglob("*.json*"))
    assert PASSWORD not in written


def test_slide_info_reads_the_archive(dicomweb_ref: str) -> None:
    env = {"MEDAGENT_DICOMWEB_BASIC": f"{USER}:{PASSWORD}", "COLUMNS": "200"}
    done = medagent("slide", "info", dicomweb_ref, env=env)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "4000 x 3000" in done.stdout and "0.25 x 0.25" in done.stdout
    refused = medagent(
        "slide", "info", dicomweb_ref, env={"MEDAGENT_DICOMWEB_BASIC": f"{USER}:nope"}
    )
    assert refused.returncode == 2 and "refused the credentials" in refused.stderr
    assert "nope" not in refused.stderr and len(refused.stderr.strip().splitlines()) == 1


def test_ask_navigates_the_archive_from_the_command_line(dicomweb_ref: str, tmp_path: Path) -> None:
    script = tmp_path / "replies.jsonl"
    zoom = {"reasoning": "look", "action": "zoom", "x": 0, "y": 0, "width": 2000, "height": 1500}
    answer = {"reasoning": "seen", "action": "answer", "answer": "1"}
    script.write_text("\n".join(json.dumps({"json": r}) for r in (zoom, answer)) + "\n")
    env = {"MEDAGENT_DICOMWEB_BASIC": f"{USER}:{PASSWORD}", "COLUMNS": "200"}
    done = medagent(
        "ask",
        dicomweb_ref,
        "Is there tissue?",
        "--options",
        "yes;no",
        "--backend",
        "scripted",
        "--script",
        str(script),
        "--long-side",
        "512",
        "--out",
        str(tmp_path / "run"),
        env=env,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert "answered" in done.stdout
    manifest = json.loads((tmp_path / "run" / "manifest.json").read_text())
    assert manifest["inputs"]["slide_path"] == dicomweb_ref


def test_a_bearer_token_is_sent_as_a_header_and_never_shown(
    dicomweb_ref: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Orthanc 1.10 knows only basic auth, so the bearer path is checked at the session: the
    header a token-guarded archive (Google Healthcare, IDC proxies) reads, and no leak."""
    from pydantic import SecretStr

    from medagent.imaging._dicomweb import FrameCounter, _session

    session = _session(SecretStr("tok-123"), None, 5.0, FrameCounter())
    assert session.headers["Authorization"] == "Bearer tok-123"
    assert session.auth is None
    monkeypatch.setenv("MEDAGENT_DICOMWEB_TOKEN", "tok-123")  # the archive wants basic: 401
    with pytest.raises(SlideOpenError, match="refused the credentials") as caught:
        open_image(dicomweb_ref)
    assert "tok-123" not in str(caught.value)
