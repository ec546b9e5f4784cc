"""Chat over a slide or image: a tool-calling agent with per-thread memory, streamed as events.

``ChatAgent(model, "slide.svs", artifacts=store)``; ``async for event in
agent.astream("thread-1", "What tissue is this?")`` yields ``ChatEvent``s (turn_start, tokens,
tool calls and results, crops, the answer or an error, turn_end).
"""

from medagent.agents.chat._actions import ChatAction
from medagent.agents.chat._agent import ChatAgent, build_chat_graph
from medagent.agents.chat._config import ChatConfig, ChatEvent, ChatEventType, ToolMode
from medagent.agents.chat._graph import UserTurn

__all__ = [
    "ChatAction",
    "ChatAgent",
    "ChatConfig",
    "ChatEvent",
    "ChatEventType",
    "ToolMode",
    "UserTurn",
    "build_chat_graph",
]
