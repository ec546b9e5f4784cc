"""A blocking face for the async backends, for scripts and notebooks."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Coroutine, Sequence
from typing import Any, TypeVar

from pydantic import BaseModel

from medagent.artifacts import ArtifactStore
from medagent.models._messages import Message, ToolSpec
from medagent.models.base import ChatModel, GenerateParams, Reply, image_cap

__all__ = ["SyncChatModel"]

T = TypeVar("T")


class SyncChatModel:
    """Runs an async ``ChatModel`` on a private event loop in a background thread.

    A private loop (rather than ``asyncio.run``) keeps HTTP connections alive between calls
    and works inside Jupyter, where a loop is already running in the main thread.
    """

    def __init__(self, model: ChatModel) -> None:
        self.model = model
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(
            target=self._loop.run_forever, name="medagent-sync-model", daemon=True
        )
        self._thread.start()

    @property
    def image_long_side(self) -> int | None:
        """The wrapped backend's cap on images, so agents render within it."""
        return image_cap(self.model)

    def _call(self, coroutine: Coroutine[Any, Any, T]) -> T:
        return asyncio.run_coroutine_threadsafe(coroutine, self._loop).result()

    def generate(
        self,
        messages: Sequence[Message],
        *,
        schema: type[BaseModel] | None = None,
        tools: Sequence[ToolSpec] | None = None,
        params: GenerateParams | None = None,
        artifacts: ArtifactStore | None = None,
    ) -> Reply:
        """Same as the async ``generate``, blocking until the reply arrives."""
        return self._call(
            self.model.generate(
                messages, schema=schema, tools=tools, params=params, artifacts=artifacts
            )
        )

    def close(self) -> None:
        """Close the backend and stop the loop thread."""
        if self._loop.is_closed():
            return
        self._call(self.model.aclose())
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join()
        self._loop.close()

    def __enter__(self) -> SyncChatModel:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
