"""A model as judge: does a candidate answer (or insight) say what the reference says?

G-Eval style, as MedInsightBench uses it: the judge reads the question, the reference and the
candidate, follows fixed evaluation steps and gives an integer score from 1 to 10 with a short
reason; a candidate *matches* the reference when the score is above 5.
"""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field

from medagent.models import ChatModel, GenerateParams, Message, Structured, generate_structured

__all__ = ["JUDGE_MAX_REASON", "JudgeVerdict", "judge", "matched"]

JUDGE_MAX_REASON = 1000
"""Longest reason (characters) a verdict may carry; longer answers get a correction round."""

_SYSTEM = """\
You grade answers against a reference for a medical evaluation. You are strict about medical \
content and lenient about wording.

Evaluation steps:
1. Read the question and identify what a correct answer must state.
2. Read the reference answer: it is taken as correct.
3. Compare the candidate with the reference: the same findings, diagnosis, grade or value? \
Synonyms, abbreviations and different phrasing are fine; a wrong or contradictory fact is not; \
a vague answer that avoids the point earns little.
4. Give an integer score from 1 to 10: 1 = wrong or unrelated, 3 = mostly wrong, \
5 = partly right with important errors or gaps, 7 = right with minor gaps, \
10 = says everything the reference says.

Reply with only one JSON object for {schema} with the fields "score" (an integer from 1 to 10) \
and "reason" (one or two sentences, at most {max_reason} characters)."""

_USER = """\
Question:
{question}

Reference answer:
{reference}

Candidate answer:
{candidate}
{rubric}
Grade the candidate answer. Reply with the {schema} JSON object only."""


class JudgeVerdict(BaseModel):
    """A judge's grade of one candidate: an integer 1..10 and why."""

    model_config = ConfigDict(frozen=True)

    score: int = Field(ge=1, le=10, description="1 = wrong or unrelated, 10 = fully matches")
    reason: str = Field(max_length=JUDGE_MAX_REASON, description="one or two sentences")


def _messages(question: str, reference: str, candidate: str, rubric: str | None) -> list[Message]:
    schema = JudgeVerdict.__name__
    extra = f"\nAdditional grading rubric:\n{rubric.strip()}\n" if rubric else ""
    return [
        Message.system(_SYSTEM.format(schema=schema, max_reason=JUDGE_MAX_REASON)),
        Message.user(
            _USER.format(
                question=question.strip(),
                reference=reference.strip(),
                candidate=candidate.strip() or "(empty)",
                rubric=extra,
                schema=schema,
            )
        ),
    ]


async def judge(
    model: ChatModel,
    question: str,
    reference: str,
    candidate: str,
    *,
    rubric: str | None = None,
    max_retries: int = 2,
    params: GenerateParams | None = None,
) -> JudgeVerdict | None:
    """Grade ``candidate`` against ``reference``; ``None`` when no valid verdict was obtained.

    Invalid verdicts (not JSON, score out of 1..10, reason too long) are sent back for
    correction up to ``max_retries`` times. Model errors and unusable answers both give
    ``None`` (``generate_structured`` never raises for them), so a batch of judgements goes on;
    count the ``None`` verdicts and report them. Greedy decoding by default, so a judgement is
    repeatable with the same model.
    """
    result = await generate_structured(
        model,
        _messages(question, reference, candidate, rubric),
        JudgeVerdict,
        max_retries=max_retries,
        params=params or GenerateParams(max_tokens=400, temperature=0.0),
    )
    if isinstance(result, Structured):
        return result.value
    return None


def matched(verdict: JudgeVerdict | None, threshold: int = 5) -> bool:
    """Whether a verdict counts as a match: score strictly above ``threshold``; ``None`` never."""
    return verdict is not None and verdict.score > threshold
