"""The one guard a driver unpacks a worker's item folder through, and the worker's packing cap:
an archive from another machine is input, so anything that could land outside the folder, or
fill the disk, is refused whole."""

from __future__ import annotations

import io
import tarfile
from collections.abc import Callable
from pathlib import Path

import pytest

from medagent._ray import unpack_tar
from medagent.errors import InputError
from medagent.evals._ray import _pack


def _archive(path: Path, add: Callable[[tarfile.TarFile], None]) -> Path:
    with tarfile.open(path, "w") as tar:
        add(tar)
    return path


def _file(tar: tarfile.TarFile, name: str, data: bytes = b"x", size: int | None = None) -> None:
    info = tarfile.TarInfo(name)
    info.size = len(data) if size is None else size
    tar.addfile(info, io.BytesIO(data))


def _link(tar: tarfile.TarFile, name: str, target: str, kind: bytes) -> None:
    info = tarfile.TarInfo(name)
    info.type = kind
    info.linkname = target
    tar.addfile(info)


def _device(tar: tarfile.TarFile, name: str) -> None:
    info = tarfile.TarInfo(name)
    info.type = tarfile.CHRTYPE
    info.devmajor, info.devminor = 1, 3
    tar.addfile(info)


def _tree(root: Path) -> list[str]:
    return sorted(str(p.relative_to(root)) for p in root.rglob("*"))


def test_a_plain_folder_unpacks_as_packed(tmp_path: Path) -> None:
    source = tmp_path / "item"
    (source / "sub").mkdir(parents=True)
    (source / "trajectory.json").write_text("{}")
    (source / "sub" / "crop.png").write_bytes(b"\x89PNG" * 100)
    size, problem = _pack(source, tmp_path / "item.tar", max_bytes=2**20)
    assert problem is None and size == (tmp_path / "item.tar").stat().st_size
    written = unpack_tar(tmp_path / "item.tar", tmp_path / "out", max_bytes=2**20)
    assert written == 2 + 400
    assert _tree(tmp_path / "out") == _tree(source)
    assert (tmp_path / "out" / "sub" / "crop.png").read_bytes() == b"\x89PNG" * 100


HOSTILE: dict[str, Callable[[tarfile.TarFile], None]] = {
    "parent": lambda tar: _file(tar, "../escaped.txt"),
    "nested parent": lambda tar: _file(tar, "sub/../../escaped.txt"),
    "absolute": lambda tar: _file(tar, "/tmp/escaped-by-medagent-test.txt"),
    "symlink": lambda tar: (
        _link(tar, "link", "..", tarfile.SYMTYPE),
        _file(tar, "link/escaped.txt"),
    ),
    "hard link": lambda tar: _link(tar, "hard", "../escaped.txt", tarfile.LNKTYPE),
    "device": lambda tar: _device(tar, "null"),
    "oversize": lambda tar: (_file(tar, "a.bin", b"a" * 600), _file(tar, "b.bin", b"b" * 600)),
}


@pytest.mark.parametrize("kind", sorted(HOSTILE))
def test_a_hostile_archive_is_refused_whole_and_writes_nothing(tmp_path: Path, kind: str) -> None:
    archive = _archive(tmp_path / "hostile.tar", HOSTILE[kind])
    dest = tmp_path / "run" / "items" / "q0"
    dest.parent.mkdir(parents=True)
    before = _tree(tmp_path)
    with pytest.raises(InputError, match="refused"):
        unpack_tar(archive, dest, max_bytes=1000)
    assert _tree(tmp_path) == before  # nothing outside, and no half-unpacked folder
    assert not Path("/tmp/escaped-by-medagent-test.txt").exists()


def test_an_archive_that_is_not_tar_is_one_line(tmp_path: Path) -> None:
    archive = tmp_path / "junk.tar"
    archive.write_bytes(b"not a tar archive at all" * 50)
    with pytest.raises(InputError, match="not a readable tar archive"):
        unpack_tar(archive, tmp_path / "out", max_bytes=2**20)
    assert not (tmp_path / "out").exists()


def test_a_folder_over_the_cap_is_not_packed(tmp_path: Path) -> None:
    source = tmp_path / "item"
    source.mkdir()
    (source / "big.bin").write_bytes(b"0" * 3 * 2**20)
    (source / "outside").symlink_to(tmp_path)  # links never travel
    size, problem = _pack(source, tmp_path / "item.tar", max_bytes=2**20)
    assert size is None and not (tmp_path / "item.tar").exists()
    assert problem == (
        "its folder (3.0 MiB) is over the 1.0 MiB cap on an item folder shipped from a Ray "
        "worker; not kept"
    )
    assert _pack(tmp_path / "absent", tmp_path / "none.tar", max_bytes=1) == (None, None)
