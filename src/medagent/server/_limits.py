"""How much work the server takes on at once, whoever asks: turns running together."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import TYPE_CHECKING

from medagent.imaging import Region
from medagent.server._chat import AgentContext, AgentFactory, ChatSession

if TYPE_CHECKING:
    from medagent.agents.chat import ChatEvent

__all__ = ["TurnGate"]


class TurnGate:
    """At most ``limit`` turns run at once in this server; the others wait their turn with
    their stream open. Per-client limits do not stop two hundred clients asking together:
    every running turn adds work to the one event loop, and health checks and streams then
    wait for it."""

    def __init__(self, limit: int) -> None:
        self._slots = asyncio.Semaphore(limit)

    def wrap(self, factory: AgentFactory) -> AgentFactory:
        """``factory`` whose agents take a slot for each turn."""

        def build(context: AgentContext) -> ChatSession:
            return _GatedAgent(factory(context), self._slots)

        return build


class _GatedAgent:
    def __init__(self, agent: ChatSession, slots: asyncio.Semaphore) -> None:
        self._agent = agent
        self._slots = slots

    async def astream(
        self, thread_id: str, message: str, *, region: Region | None = None
    ) -> AsyncIterator[ChatEvent]:
        async with self._slots:
            async for event in self._agent.astream(thread_id, message, region=region):
                yield event

    async def ahistory(self, thread_id: str) -> list[ChatEvent]:
        return await self._agent.ahistory(thread_id)
