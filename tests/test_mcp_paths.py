"""Slide paths from clients: what ``resolve_under_roots`` accepts and refuses."""

from __future__ import annotations

from pathlib import Path

import pytest

from medagent.errors import InputError, PathRefusedError
from medagent.imaging import resolve_under_roots


@pytest.fixture
def roots(tmp_path: Path) -> list[Path]:
    first, second = tmp_path / "first", tmp_path / "second"
    (first / "cases").mkdir(parents=True)
    second.mkdir()
    (first / "cases" / "a.svs").write_bytes(b"a")
    (second / "b.png").write_bytes(b"b")
    (tmp_path / "secret.txt").write_bytes(b"s")
    (first / "escape.svs").symlink_to(tmp_path / "secret.txt")
    (first / "alias.png").symlink_to(second / "b.png")  # leads into another root: allowed
    (first / "100%.png").write_bytes(b"p")
    return [first, second]


def test_relative_paths_are_found_in_any_root(roots: list[Path]) -> None:
    assert resolve_under_roots("cases/a.svs", roots) == roots[0] / "cases" / "a.svs"
    assert resolve_under_roots("b.png", roots) == roots[1] / "b.png"
    assert resolve_under_roots("./cases//a.svs", roots) == roots[0] / "cases" / "a.svs"
    assert resolve_under_roots("100%.png", roots) == roots[0] / "100%.png"


def test_absolute_paths_inside_a_root_are_allowed(roots: list[Path]) -> None:
    inside = str(roots[0] / "cases" / "a.svs")
    assert resolve_under_roots(inside, roots) == roots[0] / "cases" / "a.svs"


def test_symlinks_within_the_roots_are_followed(roots: list[Path]) -> None:
    assert resolve_under_roots("alias.png", roots) == roots[1] / "b.png"


@pytest.mark.parametrize(
    ("requested", "message"),
    [
        ("../secret.txt", "contains '..'"),
        ("cases/../../secret.txt", "contains '..'"),
        ("..\\secret.txt", "contains '..'"),
        ("%2e%2e/secret.txt", "contains '..'"),
        ("%252e%252e%252fsecret.txt", "contains '..'"),
        ("cases%2F..%2F..%2Fsecret.txt", "contains '..'"),
        ("escape.svs", "outside the slide folders"),
        ("/etc/passwd", "outside the slide folders"),
        ("", "empty"),
        ("a\x00.svs", "NUL"),
    ],
)
def test_paths_that_leave_the_roots_are_refused(
    roots: list[Path], requested: str, message: str
) -> None:
    with pytest.raises(PathRefusedError, match=message) as caught:
        resolve_under_roots(requested, roots)
    assert isinstance(caught.value, InputError) and "\n" not in str(caught.value)


def test_absolute_path_outside_is_refused_even_when_it_exists(
    roots: list[Path], tmp_path: Path
) -> None:
    with pytest.raises(PathRefusedError, match="outside"):
        resolve_under_roots(str(tmp_path / "secret.txt"), roots)


def test_missing_files_and_missing_roots_are_input_errors(roots: list[Path]) -> None:
    with pytest.raises(InputError, match=r"no file 'cases/b\.svs'") as caught:
        resolve_under_roots("cases/b.svs", roots)
    assert not isinstance(caught.value, PathRefusedError)
    with pytest.raises(InputError, match="--slides"):
        resolve_under_roots("a.svs", [])
