"""The Analytical Insight Agent: one question, a few tool turns, then an answer as an insight.

A bounded loop, like GIANT's: each turn the model answers one JSON object — a tool call or the
answer; tool results (and their images, in user messages) are appended; the last turn allows
the answer only. The insight's evidence is what the tools returned for this question — regions,
artifact ids, measurements, neighbour ids — not what the model says it saw.
"""

from __future__ import annotations

from pydantic import BaseModel, RootModel

from medagent.agents.insight._context import RunContext
from medagent.agents.insight._outputs import AnswerAction, InsightAnswer, action_schema
from medagent.agents.insight._report import Insight, InsightEvent, QuestionRecord
from medagent.agents.insight._tools import ToolAction, execute, tool_lines
from medagent.models import Message, prune_images
from medagent.prompts import load_template

__all__ = ["investigate"]


def _findings_text(run: RunContext) -> str:
    lines = []
    for finding in run.findings:
        where = f" at {finding.region}" if finding.region is not None else ""
        lines.append(f"- image {finding.image}{where}: {finding.text}")
    return "\n".join(lines) or "- none recorded"


def _opening(run: RunContext, record: QuestionRecord, parent: Insight | None) -> list[Message]:
    """The role, the program's demos, then the images and the question with its context."""
    follows = (
        f'It follows up the earlier insight "{parent.text}" (question: {parent.question}).\n'
        if parent is not None
        else ""
    )
    return run.request(
        "insight_agent",
        *run.images_intro(),
        goal=run.goal,
        kind=record.kind,
        question=record.question,
        parent=follows,
        findings=_findings_text(run),
        tools=tool_lines(run.tools, run.units()),
        steps=run.config.max_steps,
    )


async def investigate(
    run: RunContext, record: QuestionRecord, parent: Insight | None
) -> Insight | None:
    """Answer ``record``'s question; the insight, or ``None`` (the record says why).

    Raises ``ModelError`` when the model cannot be reached.
    """
    config = run.config
    schema = action_schema(run.tools)
    messages = _opening(run, record, parent)
    run.emit(
        InsightEvent(
            kind="question", text=record.question, branch=record.branch, depth=record.depth
        )
    )
    for step in range(1, config.max_steps + 1):
        final = step == config.max_steps
        history = (
            [*messages, Message.user(load_template("insight/final").render())]
            if final
            else messages
        )
        wanted: type[BaseModel] = InsightAnswer if final else schema
        value = await run.call(
            "insight_agent",
            prune_images(history, config.max_images_in_context),
            wanted,
            branch=record.branch,
            depth=record.depth,
            step=step,
        )
        if value is None:
            record.status = "invalid_output"
            record.error = f"no valid reply at turn {step} of question {record.id}"
            run.emit(
                InsightEvent(
                    kind="failed", text=record.error, branch=record.branch, depth=record.depth
                )
            )
            return None
        action = value.root if isinstance(value, RootModel) else value
        messages.append(Message.assistant(action.model_dump_json()))
        if isinstance(action, AnswerAction | InsightAnswer):
            insight = Insight(
                id=record.id,
                branch=record.branch,
                depth=record.depth,
                kind=record.kind,
                question=record.question,
                answer=action.answer,
                text=action.insight,
                confidence=action.confidence / 100,
                evidence=[s.evidence for s in record.steps if s.evidence is not None],
                parent=record.parent,
            )
            record.status = "answered"
            record.insight = insight.text
            run.emit(
                InsightEvent(
                    kind="insight", text=insight.text, branch=record.branch, depth=record.depth
                )
            )
            return insight
        tool_action: ToolAction = action  # type: ignore[assignment]  # the union's other members
        done, shown = execute(tool_action, run.sources, step, config)
        record.steps.append(done)
        run.emit(
            InsightEvent(
                kind="tool",
                text=f"{done.tool}: {done.text}",
                branch=record.branch,
                depth=record.depth,
                artifact_id=shown.id if shown is not None else None,
            )
        )
        result = load_template("insight/tool_result").render(
            step=step,
            tool=done.tool,
            result=done.text,
            steps_left=config.max_steps - step,
        )
        messages.append(Message.user(result, shown) if shown is not None else Message.user(result))
    raise AssertionError("unreachable: the last turn answers or fails")  # pragma: no cover
