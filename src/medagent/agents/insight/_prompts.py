"""The insight agent's tunable prompts: one predictor per module, named as the trace names it.

Each predictor's instructions are its module's prompt template (``$goal`` and the other
placeholders are filled per request), so the default program sends exactly what the templates
send; the role (the system turn) is shared by all modules and stays a template.
"""

from __future__ import annotations

from medagent.agents.insight._outputs import AnswerAction, FollowUps, RootFinding, SummaryOutput
from medagent.agents.insight._report import ModuleName
from medagent.prompts import InputField, Predict, Program, Signature, load_template

__all__ = ["MODULE_TEMPLATES", "insight_program"]

MODULE_TEMPLATES: dict[ModuleName, str] = {
    "root_finder": "insight/roots",
    "insight_agent": "insight/agent",
    "composer": "insight/compose",
    "summary": "insight/summary",
}
"""The template each module's request is built from (its predictor's default instructions)."""

_GOAL = InputField(name="goal", description="what the analysis is for")
_IMAGES = InputField(
    name="images", kind="images", description="each image's overview, with level-0 guides"
)


def _predict(
    module: ModuleName,
    inputs: tuple[InputField, ...],
    output: type[RootFinding | AnswerAction | FollowUps | SummaryOutput],
    description: str,
) -> Predict:
    return Predict(
        Signature(
            name=f"insight.{module}",
            instructions=load_template(MODULE_TEMPLATES[module]).text.strip(),
            inputs=inputs,
            output=output,
            description=description,
        )
    )


def insight_program() -> Program:
    """The insight agent's prompts as a program: ``root_finder``, ``insight_agent``,
    ``composer`` and ``summary``.

    Edit or tune a copy (instructions keep the template's ``$placeholders``; demos are worked
    examples shown before the module's request), ``save`` it, and pass it as ``prompts``.
    """
    return Program(
        "insight",
        {
            "root_finder": _predict(
                "root_finder",
                (_IMAGES, _GOAL),
                RootFinding,
                "list the salient findings in the images and pose root questions for the goal",
            ),
            "insight_agent": _predict(
                "insight_agent",
                (
                    _IMAGES,
                    _GOAL,
                    InputField(name="question", description="the question to answer now"),
                    InputField(
                        name="findings", optional=True, description="salient findings so far"
                    ),
                ),
                AnswerAction,
                "answer one question with evidence from image tools, stated as an insight",
            ),
            "composer": _predict(
                "composer",
                (
                    _GOAL,
                    InputField(name="chain", description="this line's questions and insights"),
                    InputField(name="others", optional=True, description="other lines' insights"),
                    InputField(name="asked", optional=True, description="questions already asked"),
                ),
                FollowUps,
                "propose the next question of a line of questions, one candidate per kind",
            ),
            "summary": _predict(
                "summary",
                (_GOAL, InputField(name="insights", description="the insights found, numbered")),
                SummaryOutput,
                "summarize the insights for the goal, rank them and group duplicates",
            ),
        },
        description="MedInsightAgent: find salient findings in medical images, answer questions "
        "about them with tools as insights, ask follow-ups, and summarize for an analysis goal.",
    )
