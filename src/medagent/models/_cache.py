"""An opt-in response cache: the same request to the same model gets the stored reply.

Keys hash the backend, the model, the messages (images by content hash, never bytes), the
schema, the tools and the sampling parameters, so reruns of an evaluation are free and
reproducible. Replies live in one SQLite file.
"""

from __future__ import annotations

import hashlib
import io
import json
import sqlite3
import threading
from collections.abc import AsyncIterator, Sequence
from pathlib import Path
from typing import Any

from pydantic import BaseModel

from medagent.artifacts import ArtifactStore
from medagent.models._messages import ImagePart, Message, TextPart, ToolSpec
from medagent.models._structured import parse_structured
from medagent.models.base import (
    ChatModel,
    GenerateParams,
    Reply,
    StreamingChatModel,
    UsageTotals,
    image_cap,
)

__all__ = ["CachedModel", "request_key"]


def _image_hash(part: ImagePart) -> str:
    if part.artifact is not None:
        return part.artifact.id
    if part.data is not None:
        return hashlib.sha256(part.data).hexdigest()[:32]
    assert part.image is not None
    buffer = io.BytesIO()
    part.image.save(buffer, format="PNG")
    return hashlib.sha256(buffer.getvalue()).hexdigest()[:32]


def request_key(
    backend: str,
    model: str,
    messages: Sequence[Message],
    schema: type[BaseModel] | None,
    tools: Sequence[ToolSpec] | None,
    params: GenerateParams,
) -> str:
    """The cache key of one request."""
    wire: list[dict[str, Any]] = []
    for message in messages:
        parts = [
            {"text": p.text} if isinstance(p, TextPart) else {"image": _image_hash(p)}
            for p in message.content
        ]
        wire.append(
            {
                "role": message.role,
                "parts": parts,
                "tool_call_id": message.tool_call_id,
                "tool_calls": [c.model_dump() for c in message.tool_calls],
            }
        )
    payload = {
        "backend": backend,
        "model": model,
        "messages": wire,
        "schema": schema.model_json_schema() if schema else None,
        "tools": [t.model_dump() for t in tools or []],
        # Left out when unset, so keys made before the field existed still match.
        "params": params.model_dump(
            exclude=None if params.reasoning_effort else {"reasoning_effort"}
        ),
    }
    encoded = json.dumps(payload, sort_keys=True, ensure_ascii=False).encode()
    return hashlib.sha256(encoded).hexdigest()


class CachedModel:
    """Wraps a ``ChatModel``; answers from ``path`` when the same request was made before."""

    def __init__(self, inner: ChatModel, path: str | Path) -> None:
        self.inner = inner
        self.name = inner.name
        self.usage_totals: UsageTotals = inner.usage_totals
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.hits = 0
        self._lock = threading.Lock()
        self._db = sqlite3.connect(self.path, check_same_thread=False)
        self._db.execute("CREATE TABLE IF NOT EXISTS replies (key TEXT PRIMARY KEY, reply TEXT)")
        self._db.commit()

    @property
    def image_long_side(self) -> int | None:
        """The wrapped backend's cap on images, so agents render within it."""
        return image_cap(self.inner)

    async def generate(
        self,
        messages: Sequence[Message],
        *,
        schema: type[BaseModel] | None = None,
        tools: Sequence[ToolSpec] | None = None,
        params: GenerateParams | None = None,
        artifacts: ArtifactStore | None = None,
    ) -> Reply:
        params = self._effective(params)
        key = request_key(type(self.inner).__name__, self.name, messages, schema, tools, params)
        stored = self._lookup(key, schema)
        if stored is not None:
            return stored
        reply = await self.inner.generate(
            messages, schema=schema, tools=tools, params=params, artifacts=artifacts
        )
        self._store(key, reply)
        return reply

    async def generate_stream(
        self,
        messages: Sequence[Message],
        *,
        tools: Sequence[ToolSpec] | None = None,
        params: GenerateParams | None = None,
        artifacts: ArtifactStore | None = None,
    ) -> AsyncIterator[str | Reply]:
        """What the wrapped model streams, stored at the end; a stored reply comes whole.

        The key is ``generate``'s, so a streamed request and the same request made whole share
        one entry.
        """
        params = self._effective(params)
        key = request_key(type(self.inner).__name__, self.name, messages, None, tools, params)
        stored = self._lookup(key, None)
        if stored is not None:
            yield stored
            return
        if not isinstance(self.inner, StreamingChatModel):
            reply = await self.inner.generate(
                messages, tools=tools, params=params, artifacts=artifacts
            )
            self._store(key, reply)
            yield reply
            return
        async for piece in self.inner.generate_stream(
            messages, tools=tools, params=params, artifacts=artifacts
        ):
            if isinstance(piece, Reply):
                self._store(key, piece)
            yield piece

    def _effective(self, params: GenerateParams | None) -> GenerateParams:
        """``params`` with the wrapped backend's default ``reasoning_effort`` filled in: a reply
        thought through at another effort is another reply."""
        params = params or GenerateParams()
        default = getattr(self.inner, "reasoning_effort", None)
        if params.reasoning_effort is None and isinstance(default, str):
            params = params.model_copy(update={"reasoning_effort": default})
        return params

    def _lookup(self, key: str, schema: type[BaseModel] | None) -> Reply | None:
        with self._lock:
            row = self._db.execute("SELECT reply FROM replies WHERE key = ?", (key,)).fetchone()
        if row is None:
            return None
        self.hits += 1
        stored = Reply.model_validate_json(row[0])
        parsed, error = parse_structured(stored.text, schema) if schema else (None, None)
        return stored.model_copy(update={"parsed": parsed, "parse_error": error})

    def _store(self, key: str, reply: Reply) -> None:
        with self._lock:
            self._db.execute(
                "INSERT OR REPLACE INTO replies VALUES (?, ?)",
                (key, reply.model_dump_json(exclude={"parsed"})),
            )
            self._db.commit()

    async def aclose(self) -> None:
        self._db.close()
        await self.inner.aclose()
