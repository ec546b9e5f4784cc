"""Fetching planned files: ranges, retries with backoff, size caps, verification."""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
from collections.abc import Awaitable, Callable, Sequence
from pathlib import Path
from typing import Protocol
from urllib.parse import urlsplit

import httpx
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from medagent._files import write_json_atomic
from medagent.errors import InputError, MedagentError
from medagent.evals.pull._plan import PullFile, PullOutcome, PullSources

__all__ = ["PullEvents", "PullPolicy", "pull_files"]

_RECORD = ".medagent-pull.json"
_META_MAX = 1 << 20  # a GDC metadata reply is a few hundred bytes
_CHUNK = 1 << 20


class PullPolicy(BaseModel):
    """How hard to try: files in flight, the size cap, retries with backoff, timeouts."""

    model_config = ConfigDict(frozen=True)

    jobs: int = Field(4, ge=1, le=64)
    max_bytes: int = Field(20 << 30, ge=1)
    retries: int = Field(5, ge=0, le=20)
    backoff_s: float = Field(1.0, ge=0.0, le=60.0)
    timeout_s: float = Field(60.0, gt=0.0)


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
