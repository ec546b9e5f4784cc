"""A client's ``slide``: a path under the roots, or a series in an allowed DICOMweb archive.

``resolve_slide_source`` is the one guard the web app and the MCP server use; an archive is
allowed only by an exact match of its root (scheme and host case-insensitive, trailing slashes
ignored), so no spelling trick reaches another host or another path with the server's
credentials.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from pydantic import ValidationError

from medagent.errors import InputError, PathRefusedError
from medagent.imaging import DicomWebRef, normalize_archive, resolve_slide_source
from medagent.settings import Settings

ARCHIVE = "https://pacs.example/dicom-web"
SERIES = "/studies/1.2.3/series/4.5.6"


def test_a_reference_in_an_allowed_archive_is_its_series(tmp_path: Path) -> None:
    source = resolve_slide_source(f"dicomweb+{ARCHIVE}{SERIES}", [tmp_path], [ARCHIVE])
    assert source == DicomWebRef(base_url=ARCHIVE, study_uid="1.2.3", series_uid="4.5.6")


@pytest.mark.parametrize(
    ("requested", "allowed"),
    [
        (f"dicomweb+{ARCHIVE}/{SERIES}/", ARCHIVE),
        (f"dicomweb+{ARCHIVE}{SERIES}", ARCHIVE + "/"),
        (f"DICOMweb+https://PACS.Example/dicom-web{SERIES}", ARCHIVE),
        (f"dicomweb+{ARCHIVE}{SERIES}", "  https://pacs.example/dicom-web//  "),
    ],
)
def test_slashes_and_the_case_of_scheme_and_host_do_not_matter(
    requested: str, allowed: str
) -> None:
    source = resolve_slide_source(requested, [], [allowed])
    assert isinstance(source, DicomWebRef)
    assert source.base_url == allowed.strip().rstrip("/")  # the archive as configured


@pytest.mark.parametrize(
    "requested",
    [
        f"dicomweb+https://pacs.example.evil/dicom-web{SERIES}",  # a longer host
        f"dicomweb+https://evil.pacs.example/dicom-web{SERIES}",
        f"dicomweb+https://pacs.example/dicom-web-other{SERIES}",  # a longer path
        f"dicomweb+https://pacs.example/dicom-web/more{SERIES}",
        f"dicomweb+https://pacs.example{SERIES}",  # a shorter path
        f"dicomweb+http://pacs.example/dicom-web{SERIES}",  # another scheme
        f"dicomweb+https://pacs.example:8443/dicom-web{SERIES}",  # another port
        f"dicomweb+https://pacs.example:443/dicom-web{SERIES}",  # another spelling: refused
        f"dicomweb+https://pacs.example/DICOM-WEB{SERIES}",  # paths are case-sensitive
        f"dicomweb+https://pacs.example/other/../dicom-web{SERIES}",
        f"dicomweb+https://pacs.example/dicom-web/.{SERIES}",
        f"dicomweb+https://pacs.example/x%2F..%2Fdicom-web{SERIES}",
        f"dicomweb+https://pacs.example/dicom%2Dweb{SERIES}",
        f"dicomweb+https://pacs.exampl\u0435/dicom-web{SERIES}",  # a Cyrillic e
        f"dicomweb+https://pacs.example%00/dicom-web{SERIES}",
    ],
)
def test_every_other_spelling_is_refused_in_one_line(requested: str) -> None:
    with pytest.raises(PathRefusedError, match="not one this server may open") as caught:
        resolve_slide_source(requested, [], [ARCHIVE])
    message = str(caught.value)
    assert "\n" not in message and message.endswith("is not one this server may open")


@pytest.mark.parametrize(
    ("requested", "words"),
    [
        (f"dicomweb+https://user:pw@pacs.example/dicom-web{SERIES}", "credentials"),
        (f"dicomweb+https://evil@pacs.example/dicom-web{SERIES}", "credentials"),
        (f"dicomweb+https://pacs.example@evil.example/dicom-web{SERIES}", "credentials"),
        (f"dicomweb+https://pacs.example\\@evil/dicom-web{SERIES}", "credentials"),
        (f"dicomweb+https://evil.example#@pacs.example/dicom-web{SERIES}", "fragment"),
        (f"dicomweb+https://evil.example?@pacs.example/dicom-web{SERIES}", "query"),
        ("dicomweb+https://pacs.example/dicom-web/studies/1.2/series/x", "the form is"),
    ],
)
def test_credentials_queries_and_bad_uids_are_input_errors(requested: str, words: str) -> None:
    with pytest.raises(InputError, match=words) as caught:
        resolve_slide_source(requested, [], [ARCHIVE])
    assert "\n" not in str(caught.value)


def test_no_archive_allowed_refuses_every_reference(tmp_path: Path) -> None:
    with pytest.raises(PathRefusedError, match="opens no DICOMweb archive"):
        resolve_slide_source(f"dicomweb+{ARCHIVE}{SERIES}", [tmp_path], [])


def test_paths_still_go_through_the_roots(tmp_path: Path) -> None:
    (tmp_path / "a.png").write_bytes(b"x")
    assert resolve_slide_source("a.png", [tmp_path], [ARCHIVE]) == tmp_path / "a.png"
    with pytest.raises(PathRefusedError, match=r"'\.\.'"):
        resolve_slide_source("../a.png", [tmp_path], [ARCHIVE])
    # A path that merely contains the archive's text is a path, and not found.
    with pytest.raises(InputError, match="no file"):
        resolve_slide_source(f"x/dicomweb+{ARCHIVE}{SERIES}", [tmp_path], [ARCHIVE])


@pytest.mark.parametrize(
    "bad", ["ftp://pacs/dw", "https://u:p@pacs/dw", "https://pacs/dw?x=1", "https://pacs/a/../dw"]
)
def test_a_bad_archive_root_is_an_input_error(bad: str) -> None:
    with pytest.raises(InputError):
        normalize_archive(bad)


def test_settings_take_a_comma_separated_list(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MEDAGENT_DICOMWEB_ARCHIVES", f"{ARCHIVE}/, http://127.0.0.1:8042/dw")
    assert Settings().dicomweb_archives == [ARCHIVE, "http://127.0.0.1:8042/dw"]
    monkeypatch.delenv("MEDAGENT_DICOMWEB_ARCHIVES")
    assert Settings().dicomweb_archives == []


@pytest.mark.parametrize("bad", ["pacs.example/dw", "https://u:p@pacs/dw", "https://pacs/dw#x"])
def test_settings_refuse_an_archive_with_credentials_or_no_scheme(bad: str) -> None:
    with pytest.raises(ValidationError, match="DICOMweb archive"):
        Settings(dicomweb_archives=[bad])
