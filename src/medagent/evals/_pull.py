"""Fetching MultiPathQA's slides from where their authors publish them: resumable and verified.

MultiPathQA ships questions, not slides: TCGA slides come from the GDC (by the CSV's
``file_id``), GTEx slides from the GTEx image service (by slide id), PANDA slides from the
Kaggle competition (credentials needed). Each file lands in the output folder under the CSV's
own file name, where ``eval run --slides DIR`` looks for it.

Why each rule:

- an interrupted file stays ``NAME.part`` and is never counted as done; the next attempt (a
  retry, or a rerun) asks for the rest with ``Range: bytes=N-`` (206: append; 200: the server
  ignores ranges, start over);
- the GDC publishes md5 and size per file, so both are checked; GTEx and Kaggle publish
  nothing, so the file must open as a slide. A file that fails its check is removed;
- verified files are recorded (``.medagent-pull.json``: size and mtime), so a rerun skips them
  without hashing gigabytes again and touches only what is missing or wrong;
- sizes from a server (Content-Length, GDC ``file_size``) above ``max_bytes`` are refused, and
  bodies stream to disk, never held whole in memory.
"""

from __future__ import annotations

import asyncio
import csv
import hashlib
import json
import os
import re
from collections.abc import Awaitable, Callable, Mapping, Sequence
from pathlib import Path, PurePosixPath
from typing import Literal, Protocol
from urllib.parse import quote, urlsplit

import httpx
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from medagent._files import write_json_atomic
from medagent.errors import ConfigError, InputError, MedagentError
from medagent.evals.datasets import MULTIPATHQA_TASKS, SLIDE_EXTENSIONS

__all__ = [
    "PULL_SOURCES",
    "PullEvents",
    "PullFile",
    "PullOutcome",
    "PullPolicy",
    "PullSources",
    "kaggle_credentials",
    "plan_multipathqa",
    "pull_files",
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
_RECORD = ".medagent-pull.json"
_CHUNK = 1 << 20
_META_MAX = 1 << 20  # a GDC metadata reply is a few hundred bytes
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


class PullPolicy(BaseModel):
    """How hard to try: files in flight, the size cap, retries with backoff, timeouts."""

    model_config = ConfigDict(frozen=True)

    jobs: int = Field(4, ge=1, le=64)
    max_bytes: int = Field(20 << 30, ge=1)
    retries: int = Field(5, ge=0, le=20)
    backoff_s: float = Field(1.0, ge=0.0, le=60.0)
    timeout_s: float = Field(60.0, gt=0.0)


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


class PullEvents(Protocol):
    """Progress callbacks (the CLI's progress bar); all are called on the event loop."""

    def sized(self, name: str, size: int) -> None:
        """``name`` is ``size`` bytes long (said again if a server says otherwise)."""

    def advanced(self, size: int) -> None:
        """``size`` more bytes are on disk (negative when a partial file is dropped)."""

    def finished(self, outcome: PullOutcome) -> None:
        """One file is settled."""


class _Quiet:
    def sized(self, name: str, size: int) -> None:
        pass

    def advanced(self, size: int) -> None:
        pass

    def finished(self, outcome: PullOutcome) -> None:
        pass


class _Failed(Exception):
    """One file failed; the message is the table's reason."""


class _Transient(Exception):
    """Worth another try: a 5xx, a 429, a 416."""


class _GdcFile(BaseModel):
    file_name: str = ""
    md5sum: str = Field(pattern=r"^[0-9a-fA-F]{32}$")
    file_size: int = Field(ge=0)


class _GdcReply(BaseModel):
    data: _GdcFile


def kaggle_credentials(environ: Mapping[str, str], home: Path) -> tuple[str, str] | None:
    """(username, key) as the Kaggle client finds them: KAGGLE_USERNAME and KAGGLE_KEY, else
    ``kaggle.json`` in KAGGLE_CONFIG_DIR or ``~/.kaggle``; ``None`` when there are none."""
    user, key = environ.get("KAGGLE_USERNAME", ""), environ.get("KAGGLE_KEY", "")
    if user and key:
        return user, key
    folder = Path(environ["KAGGLE_CONFIG_DIR"]) if "KAGGLE_CONFIG_DIR" in environ else None
    path = (folder or home / ".kaggle") / "kaggle.json"
    try:
        if not path.is_file() or path.stat().st_size > _META_MAX:
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
        raise _Failed(f"{where}: image_path {image_path[:80]!r} is not a slide file name")
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
        except _Failed as error:
            refused.append(
                PullOutcome(name=where, source=source, status="failed", reason=str(error))
            )
    return list(files.values()), refused, notes


def _locate(name: str, source: Source, file_id: str, sources: PullSources, where: str) -> PullFile:
    if source == "tcga":
        if not _UUID.match(file_id):
            raise _Failed(f"{where}: file_id {file_id[:60]!r} is not a GDC file UUID")
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
            raise _Failed(f"{where}: {slide_id[:60]!r} is not a GTEx slide id")
        return PullFile(
            name=name, source=source, url=sources.gtex_url.replace("{slide_id}", quote(slide_id))
        )
    return PullFile(name=name, source=source, url=sources.panda_url.replace("{name}", quote(name)))


def _one_line(error: BaseException) -> str:
    text = " ".join(str(error).split())
    return f"{type(error).__name__}: {text}" if text else type(error).__name__


def _host(url: str) -> str:
    return urlsplit(url).netloc or url


class _Puller:
    """Fetches files into ``out`` over one HTTP client, ``policy.jobs`` at a time."""

    def __init__(
        self,
        out: Path,
        policy: PullPolicy,
        sources: PullSources,
        events: PullEvents,
        client: httpx.AsyncClient,
    ) -> None:
        self.out = out
        self.policy = policy
        self.sources = sources
        self.events = events
        self.client = client
        self.record = self._load_record()

    def _load_record(self) -> dict[str, dict[str, int]]:
        path = self.out / _RECORD
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return {}  # none yet, or unreadable: every file is checked again
        if not isinstance(data, dict):
            return {}
        return {
            k: v
            for k, v in data.items()
            if isinstance(v, dict) and all(isinstance(v.get(f), int) for f in ("size", "mtime_ns"))
        }

    def _recorded(self, target: Path) -> bool:
        entry = self.record.get(target.name)
        try:
            stat = target.stat()
        except OSError:
            return False
        return entry == {"size": stat.st_size, "mtime_ns": stat.st_mtime_ns}

    def _remember(self, target: Path) -> None:
        stat = target.stat()
        self.record[target.name] = {"size": stat.st_size, "mtime_ns": stat.st_mtime_ns}
        write_json_atomic(self.out / _RECORD, self.record)

    def _auth(self, file: PullFile) -> httpx.BasicAuth | None:
        if file.source == "panda" and self.sources.kaggle_auth is not None:
            return httpx.BasicAuth(*self.sources.kaggle_auth)
        return None

    async def pull(self, file: PullFile) -> PullOutcome:
        target = self.out / file.name
        try:
            if target.is_file() and self._recorded(target):
                return PullOutcome(
                    name=file.name, source=file.source, status="skipped", size=target.stat().st_size
                )
            expected = await self._metadata(file)
            if target.is_file():
                if await self._verify(target, expected) is None:
                    self._remember(target)
                    return PullOutcome(
                        name=file.name,
                        source=file.source,
                        status="skipped",
                        size=target.stat().st_size,
                    )
                target.unlink()  # there but wrong: fetch it again
            part = self.out / f"{file.name}.part"
            await self._download(file, part, expected)
            os.replace(part, target)
            problem = await self._verify(target, expected)
            if problem is not None:
                target.unlink(missing_ok=True)
                raise _Failed(problem)
            self._remember(target)
            return PullOutcome(
                name=file.name, source=file.source, status="done", size=target.stat().st_size
            )
        except _Failed as error:
            return PullOutcome(
                name=file.name, source=file.source, status="failed", reason=str(error)
            )
        except OSError as error:
            reason = f"cannot write in {self.out}: {error.strerror or error}"
            return PullOutcome(name=file.name, source=file.source, status="failed", reason=reason)

    async def _metadata(self, file: PullFile) -> _GdcFile | None:
        """The GDC's md5 and size for a TCGA file (retried like a download)."""
        if file.meta_url is None:
            return None
        body = await self._retrying(file.meta_url, lambda: self._get_small(file.meta_url or ""))
        try:
            meta = _GdcReply.model_validate_json(body).data
        except ValidationError as error:
            first = error.errors()[0]
            where = ".".join(str(p) for p in first["loc"])
            raise _Failed(f"GDC metadata unreadable ({where}: {first['msg']})") from None
        if meta.file_size > self.policy.max_bytes:
            raise _Failed(
                f"refused: GDC says {meta.file_size} bytes, over the cap of "
                f"{self.policy.max_bytes} (--max-gib)"
            )
        self.events.sized(file.name, meta.file_size)
        return meta

    async def _get_small(self, url: str) -> bytes:
        async with self.client.stream("GET", url) as response:
            self._check_status(response, url)
            body = bytearray()
            async for chunk in response.aiter_bytes():
                body.extend(chunk)
                if len(body) > _META_MAX:
                    raise _Failed(f"metadata from {_host(url)} is over {_META_MAX} bytes")
            return bytes(body)

    @staticmethod
    def _check_status(response: httpx.Response, url: str) -> None:
        code = response.status_code
        if code == 429 or code >= 500:
            raise _Transient(f"HTTP {code} from {_host(url)}")
        if code in (401, 403):
            raise _Failed(f"HTTP {code} from {_host(url)}: not allowed (credentials, or rules)")
        if code not in (200, 206):
            raise _Failed(f"HTTP {code} from {_host(url)}")

    async def _retrying(self, url: str, attempt: Callable[[], Awaitable[bytes]]) -> bytes:
        tries = 0
        while True:
            try:
                return await attempt()
            except (_Transient, httpx.TransportError) as error:
                reason = str(error) if isinstance(error, _Transient) else _one_line(error)
                if isinstance(error, httpx.ConnectError):
                    reason = f"cannot reach {_host(url)} ({reason})"
            tries += 1
            if tries > self.policy.retries:
                raise _Failed(f"{reason} (gave up after {self.policy.retries} retries)")
            await asyncio.sleep(min(self.policy.backoff_s * 2 ** (tries - 1), 60.0))

    async def _download(self, file: PullFile, part: Path, expected: _GdcFile | None) -> None:
        """``part`` holds the whole file when this returns; a drop or a 5xx is retried from
        where it stopped."""
        shown = 0

        async def attempt() -> bytes:
            nonlocal shown
            have = _resume_point(part, None if expected is None else expected.file_size)
            if have != shown:
                self.events.advanced(have - shown)
                shown = have
            if expected is not None and have == expected.file_size and have:
                return b""  # a previous run got every byte before it stopped
            # identity: a range counts bytes of the file itself, never of a compressed body.
            headers = {"Accept-Encoding": "identity"}
            if have:
                headers["Range"] = f"bytes={have}-"
            async with self.client.stream(
                "GET", file.url, headers=headers, auth=self._auth(file) or httpx.USE_CLIENT_DEFAULT
            ) as response:
                if response.status_code == 416:  # the range is past the end: start over
                    _resume_point(part, 0)
                    raise _Transient(f"HTTP 416 from {_host(file.url)}")
                self._check_status(response, file.url)
                resumed = response.status_code == 206
                if resumed and not response.headers.get("content-range", "").startswith(
                    f"bytes {have}-"
                ):
                    raise _Failed(f"{_host(file.url)} answered a range with other bytes")
                start = have if resumed else 0
                total = self._total(response, start, expected, file.url)
                self.events.sized(file.name, total if total is not None else 0)
                self.events.advanced(start - shown)
                shown = start
                with part.open("ab" if resumed else "wb") as handle:
                    # Chunks as they arrive (no buffering): a drop loses nothing already received.
                    async for chunk in response.aiter_raw():
                        if shown + len(chunk) > self.policy.max_bytes:
                            raise _Failed(
                                f"refused: {_host(file.url)} sent over the cap of "
                                f"{self.policy.max_bytes} bytes (--max-gib)"
                            )
                        handle.write(chunk)
                        shown += len(chunk)
                        self.events.advanced(len(chunk))
            return b""

        await self._retrying(file.url, attempt)

    def _total(
        self, response: httpx.Response, start: int, expected: _GdcFile | None, url: str
    ) -> int | None:
        """The whole file's size as the server states it, refused over the cap."""
        text = response.headers.get("content-length", "")
        if not text.isdigit():
            return expected.file_size if expected is not None else None
        total = start + int(text)
        if total > self.policy.max_bytes:
            raise _Failed(
                f"refused: {_host(url)} says {total} bytes, over the cap of "
                f"{self.policy.max_bytes} (--max-gib)"
            )
        if expected is not None and total != expected.file_size:
            raise _Failed(f"{_host(url)} sends {total} bytes, GDC says {expected.file_size}")
        return total

    async def _verify(self, path: Path, expected: _GdcFile | None) -> str | None:
        """Why ``path`` is not the file wanted, or None: GDC size and md5, else that it opens
        as a slide."""
        if expected is not None:
            size = _resume_point(path, None)
            if size != expected.file_size:
                return f"size {size} bytes, GDC says {expected.file_size}"
            digest = await asyncio.to_thread(_md5, path)
            if digest != expected.md5sum.lower():
                return f"md5 {digest} does not match GDC's {expected.md5sum.lower()}"
            return None
        return await asyncio.to_thread(_opens, path)


def _resume_point(part: Path, size: int | None) -> int:
    """Bytes of ``part`` to keep: all of it, or none (removed) when it is longer than
    ``size``, the file's whole length."""
    have = part.stat().st_size if part.exists() else 0
    if size is not None and have > size:
        part.unlink()
        return 0
    return have


def _make_folder(out: Path) -> None:
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise InputError(f"cannot create {out}: {error.strerror or error}", path=str(out)) from None


def _md5(path: Path) -> str:
    digest = hashlib.md5(usedforsecurity=False)
    with path.open("rb") as handle:
        while chunk := handle.read(_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def _opens(path: Path) -> str | None:
    from medagent.imaging import open_image

    try:
        with open_image(path):
            return None
    except MedagentError as error:
        return f"does not open as a slide ({error})"


async def pull_files(
    files: Sequence[PullFile],
    out: Path,
    *,
    sources: PullSources,
    policy: PullPolicy | None = None,
    events: PullEvents | None = None,
) -> list[PullOutcome]:
    """Fetch ``files`` into ``out`` (created), ``policy.jobs`` at a time; one outcome per file,
    in the order given. Failures are outcomes, never exceptions."""
    policy = policy or PullPolicy()
    events = events or _Quiet()
    _make_folder(out)
    limit = asyncio.Semaphore(policy.jobs)
    timeout = httpx.Timeout(policy.timeout_s, connect=min(policy.timeout_s, 30.0))
    limits = httpx.Limits(max_connections=policy.jobs + 2)
    async with httpx.AsyncClient(timeout=timeout, limits=limits, follow_redirects=True) as client:
        puller = _Puller(out, policy, sources, events, client)

        async def one(file: PullFile) -> PullOutcome:
            async with limit:
                outcome = await puller.pull(file)
            events.finished(outcome)
            return outcome

        return list(await asyncio.gather(*(one(f) for f in files)))
