"""A CT series where a slide is expected: ``open_image`` says it is a volume and where to open
it; ``medagent slide info`` describes it."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from cli_support import medagent
from medagent.errors import SlideOpenError
from medagent.imaging import holds_volume, open_image
from medagent.testing import CT_PHANTOM, write_ct_phantom


@pytest.fixture(scope="module")
def ct(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_ct_phantom(tmp_path_factory.mktemp("ct") / "series")


def test_open_image_points_a_volume_to_open_volume(ct: Path) -> None:
    assert holds_volume(ct)
    with pytest.raises(SlideOpenError, match="open_volume") as caught:
        open_image(ct)
    assert "\n" not in str(caught.value)


def test_slide_info_describes_a_ct_series(ct: Path) -> None:
    table = medagent("slide", "info", str(ct), env={"COLUMNS": "200"})
    assert table.returncode == 0, table.stderr
    assert "CT volume of" in table.stdout and "HU" in table.stdout
    facts = json.loads(medagent("slide", "info", str(ct), "--json").stdout)
    assert facts["modality"] == "ct" and facts["shape"][0] == CT_PHANTOM.slices


def test_a_folder_of_other_files_is_not_a_volume(tmp_path: Path) -> None:
    (tmp_path / "notes.txt").write_text("not DICOM")
    assert not holds_volume(tmp_path)
    assert not holds_volume(tmp_path / "missing")
