"""Which files MultiPathQA's CSV names, and where each source publishes them."""

from __future__ import annotations

import csv
import json
import re
from collections.abc import Mapping, Sequence
from pathlib import Path, PurePosixPath
from typing import Literal
from urllib.parse import quote

from pydantic import BaseModel, ConfigDict

from medagent.errors import ConfigError, InputError
from medagent.evals.datasets import MULTIPATHQA_TASKS, SLIDE_EXTENSIONS

__all__ = [
    "KAGGLE_HINT",
    "PULL_SOURCES",
    "PullFile",
    "PullOutcome",
    "PullSources",
    "Source",
    "kaggle_credentials",
    "plan_multipathqa",
]

Source = Literal["tcga", "gtex", "panda"]
PULL_SOURCES: tuple[Source, ...] = ("tcga", "gtex", "panda")
_SOURCE_OF: dict[str, Source] = {
    "tcga": "tcga",
    "tcga_slidebench": "tcga",
    "tcga_expert_vqa": "tcga",
    "gtex": "gtex",
    "panda": "panda",
}
assert set(_SOURCE_OF) == set(MULTIPATHQA_TASKS)
_JSON_MAX = 1 << 20  # kaggle.json is a few dozen bytes
_UUID = re.compile(r"^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$")
_SLIDE_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")

KAGGLE_HINT = (
    "PANDA skipped: no Kaggle credentials; set KAGGLE_USERNAME and KAGGLE_KEY, or put "
    "kaggle.json (kaggle.com > Settings > API > Create New Token) in ~/.kaggle/, and accept "
    "the rules of kaggle.com/c/prostate-cancer-grade-assessment"
)


class PullSources(BaseModel):
    """Where each source is fetched from (`Settings` fields, so a mirror can replace them)."""

    model_config = ConfigDict(frozen=True)

    gdc_url: str
    gtex_url: str
    panda_url: str
    kaggle_auth: tuple[str, str] | None = None


class PullFile(BaseModel):
    """One file to fetch; ``meta_url`` (GDC) publishes its md5 and size."""

    model_config = ConfigDict(frozen=True)

    name: str
    source: Source
    url: str
    meta_url: str | None = None


class PullOutcome(BaseModel):
    """What happened to one file: done (fetched and verified), skipped (already there and
    verified) or failed (``reason`` says why; nothing is left under the final name)."""

    model_config = ConfigDict(frozen=True)

    name: str
    source: Source
    status: Literal["done", "skipped", "failed"]
    reason: str = ""
    size: int = 0


class _Refused(Exception):
    """A CSV row that names no file this can fetch; the message says why."""


def kaggle_credentials(environ: Mapping[str, str], home: Path) -> tuple[str, str] | None:
    """(username, key) as the Kaggle client finds them: KAGGLE_USERNAME and KAGGLE_KEY, else
    ``kaggle.json`` in KAGGLE_CONFIG_DIR or ``~/.kaggle``; ``None`` when there are none."""
    user, key = environ.get("KAGGLE_USERNAME", ""), environ.get("KAGGLE_KEY", "")
    if user and key:
        return user, key
    folder = Path(environ["KAGGLE_CONFIG_DIR"]) if "KAGGLE_CONFIG_DIR" in environ else None
    path = (folder or home / ".kaggle") / "kaggle.json"
    try:
        if not path.is_file() or path.stat().st_size > _JSON_MAX:
            return None
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as error:
        raise ConfigError(f"{path} is not a readable kaggle.json ({error})") from None
    if not isinstance(data, dict) or not data.get("username") or not data.get("key"):
        raise ConfigError(f'{path} needs "username" and "key" (download it again from Kaggle)')
    return str(data["username"]), str(data["key"])


def _file_name(image_path: str, where: str) -> str:
    """The CSV's file name, refused unless it is a plain slide file name (no folders, no
    ``..``): it becomes a path under the output folder."""
    name = PurePosixPath(image_path.strip().replace("\\", "/")).name
    if not _NAME.match(name) or PurePosixPath(name).suffix.lower() not in SLIDE_EXTENSIONS:
        raise _Refused(f"{where}: image_path {image_path[:80]!r} is not a slide file name")
    return name


def _read_csv(path: Path) -> list[dict[str, str]]:
    try:
        with path.open(newline="", encoding="utf-8-sig") as handle:
            reader = csv.DictReader(handle)
            absent = {"benchmark_name", "image_path", "file_id"} - set(reader.fieldnames or [])
            if absent:
                missing = ", ".join(sorted(absent))
                raise InputError(
                    f"{path} is not a MultiPathQA CSV: missing column(s) {missing}", path=str(path)
                )
            return list(reader)
    except OSError as error:
        raise InputError(f"cannot read {path}: {error.strerror or error}", path=str(path)) from None
    except (UnicodeDecodeError, csv.Error) as error:
        raise InputError(f"{path} is not a readable UTF-8 CSV ({error})", path=str(path)) from None


def plan_multipathqa(
    csv_path: Path, sources: PullSources, wanted: Sequence[str] = PULL_SOURCES
) -> tuple[list[PullFile], list[PullOutcome], list[str]]:
    """The files MultiPathQA's CSV names, once each, from the ``wanted`` sources.

    Returns (files to fetch, rows refused with their reason, notes for the user): PANDA is
    left out with a note when there are no Kaggle credentials.
    """
    unknown = sorted(set(wanted) - set(PULL_SOURCES))
    if unknown:
        raise ConfigError(f"--tasks {','.join(unknown)}: choose from tcga, gtex, panda")
    notes: list[str] = []
    if "panda" in wanted and sources.kaggle_auth is None:
        notes.append(KAGGLE_HINT)
        wanted = [w for w in wanted if w != "panda"]
    files: dict[str, PullFile] = {}
    refused: list[PullOutcome] = []
    for number, row in enumerate(_read_csv(csv_path), 2):
        source = _SOURCE_OF.get(row.get("benchmark_name") or "")
        if source is None or source not in wanted:
            continue
        where = f"{csv_path.name} line {number}"
        file_id = (row.get("file_id") or "").strip()
        try:
            name = _file_name(row.get("image_path") or "", where)
            if name in files:
                continue
            files[name] = _locate(name, source, file_id, sources, where)
        except _Refused as error:
            refused.append(
                PullOutcome(name=where, source=source, status="failed", reason=str(error))
            )
    return list(files.values()), refused, notes


def _locate(name: str, source: Source, file_id: str, sources: PullSources, where: str) -> PullFile:
    if source == "tcga":
        if not _UUID.match(file_id):
            raise _Refused(f"{where}: file_id {file_id[:60]!r} is not a GDC file UUID")
        base = sources.gdc_url.rstrip("/")
        return PullFile(
            name=name,
            source=source,
            url=f"{base}/data/{file_id}",
            meta_url=f"{base}/files/{file_id}?fields=file_name,md5sum,file_size",
        )
    if source == "gtex":
        slide_id = file_id or PurePosixPath(name).stem
        if not _SLIDE_ID.match(slide_id):
            raise _Refused(f"{where}: {slide_id[:60]!r} is not a GTEx slide id")
        return PullFile(
            name=name, source=source, url=sources.gtex_url.replace("{slide_id}", quote(slide_id))
        )
    return PullFile(name=name, source=source, url=sources.panda_url.replace("{name}", quote(name)))
