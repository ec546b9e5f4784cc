"""Slide paths that cannot be followed say why, on one line: a symlink loop is not "no such file".

Cases, through ``open_image`` (and ``slide info`` for the loop): a link to itself, two links
pointing at each other, a loop in a parent folder of the path, a link to a missing file, a
missing file, a name longer than the filesystem allows.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from cli_support import medagent
from medagent.errors import SlideOpenError
from medagent.imaging import open_image


def _cases(tmp: Path) -> dict[str, tuple[Path, str]]:
    (tmp / "self.svs").symlink_to("self.svs")
    (tmp / "a.svs").symlink_to("b.svs")
    (tmp / "b.svs").symlink_to("a.svs")
    (tmp / "loop-dir").symlink_to("loop-dir")
    (tmp / "gone.svs").symlink_to("nowhere.svs")
    return {
        "link to itself": (tmp / "self.svs", "is a symlink loop"),
        "two links in a cycle": (tmp / "a.svs", "is a symlink loop"),
        "loop in a parent folder": (tmp / "loop-dir" / "slide.svs", "is a symlink loop"),
        "link to a missing file": (tmp / "gone.svs", "is a link to a missing file"),
        "missing file": (tmp / "missing.svs", "no such file"),
        "name too long": (tmp / ("x" * 300 + ".svs"), "too long"),
    }


@pytest.mark.parametrize(
    "case",
    [
        "link to itself",
        "two links in a cycle",
        "loop in a parent folder",
        "link to a missing file",
        "missing file",
        "name too long",
    ],
)
def test_unfollowable_paths_say_why(tmp_path: Path, case: str) -> None:
    path, reason = _cases(tmp_path)[case]
    with pytest.raises(SlideOpenError) as refused:
        open_image(path)
    message = str(refused.value)
    assert reason in message and "\n" not in message
    if reason != "no such file":
        assert "no such file" not in message


def test_slide_info_on_a_symlink_loop(tmp_path: Path) -> None:
    loop = tmp_path / "loop.svs"
    os.symlink(loop.name, loop)
    result = medagent("slide", "info", str(loop))
    assert result.returncode == 2
    assert result.stderr.strip() == f"error: {loop}: is a symlink loop; fix or remove the link"
