"""How an agent sends a compiled program: the program it takes, filled instructions, demo turns.

Agents build their requests themselves (system turns, tools, several turns per question), so
they use a program's predictors as text and examples rather than calling them: a predictor's
instructions stand in for the agent's template, and its demos go in as worked examples.
"""

from __future__ import annotations

import string

from medagent.artifacts import ArtifactStore, fit_long_side
from medagent.errors import ConfigError
from medagent.models import RAW_IMAGE_LONG_SIDE, ImagePart, Message
from medagent.prompts._compiled import CompiledProgram
from medagent.prompts._modules import Predict
from medagent.prompts._program import Program

__all__ = ["demo_turns", "fill_instructions", "resolve_program"]


def resolve_program(
    prompts: CompiledProgram | Program | None, default: Program, agent: str
) -> Program | None:
    """The program an agent runs: ``prompts`` itself, or a compiled one loaded into the agent's
    ``default`` program; one-line `ConfigError` for another agent's program."""
    if prompts is None:
        return None
    if isinstance(prompts, Program):
        if prompts.name != default.name:
            raise ConfigError(
                f"{agent} takes the {default.name!r} prompt program, not {prompts.name!r}"
            )
        return prompts
    return default.load(prompts)


def fill_instructions(predictor: Predict, **values: object) -> str:
    """The predictor's instructions with ``$name`` placeholders filled as its template would be.

    Placeholders without a value stay as written, so tuned text that happens to contain a ``$``
    still goes out; the text ends with one newline, as a loaded template does.
    """
    text = predictor.instructions.strip() + "\n"
    return string.Template(text).safe_substitute({k: str(v) for k, v in values.items()})


def demo_turns(predictor: Predict, artifacts: ArtifactStore) -> list[Message]:
    """The predictor's demos as user/assistant turns, their images stored in ``artifacts`` (kind
    ``demo``): run records hold artifact ids, never pixels, and image pruning keeps them."""
    turns = []
    for message in predictor.demo_messages():
        parts = [
            # stored views go out as stored: size demos as a raw image would have been sent
            ImagePart(
                artifact=artifacts.put(fit_long_side(part.image, RAW_IMAGE_LONG_SIDE), kind="demo")
            )
            if isinstance(part, ImagePart) and part.image is not None
            else part
            for part in message.content
        ]
        turns.append(message.model_copy(update={"content": parts}))
    return turns
