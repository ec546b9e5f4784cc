"""GIANT's baselines: one look at a thumbnail, and a majority vote over random tissue patches.

They measure what navigating buys: the same model, question and answer schema, but no choice
of where to look. ``thumbnail`` sends the whole slide once at ``thumbnail_long_side`` (1024 px,
the paper's setting for this baseline; within the model's cap) with no guides (there is nothing
to read coordinates for). ``patches`` sends ``patches`` random tissue patches of ``patch_px``
level-0 pixels, one request each, and votes. Both prompts say what the image is and state its
spacing in its own unit (``image_words``).

Both write the run log as they go. Steps cut short by a model error are recorded with kind
``invalid`` (as the navigation graph does); on a rerun in the same run directory every other
recorded step whose image is unchanged is reused, so a run that failed half-way only pays for
what is missing.
"""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import Callable
from typing import Any, Literal

from medagent.agents.base import image_words, majority_vote, normalize_answer, render_long_side
from medagent.agents.giant._actions import FinalAnswer
from medagent.agents.giant._asking import Asked, ask
from medagent.agents.giant._config import GiantConfig
from medagent.agents.giant._graph import GiantEvent
from medagent.agents.giant._prompts import options_text
from medagent.agents.giant._trajectory import RunLog, Status, StepRecord
from medagent.artifacts import ArtifactRef
from medagent.imaging import Region, Rendered, iter_tissue_tiles, tissue_mask
from medagent.models import ChatModel, Message
from medagent.prompts import load_template
from medagent.tools import ToolContext

__all__ = ["PATCH_CONCURRENCY", "PATCH_MIN_TISSUE", "run_baseline"]

PATCH_CONCURRENCY = 4
"""Patch requests in flight at once: enough to hide latency, few enough for rate limits."""

PATCH_MIN_TISSUE = 0.5
"""Share of a patch that must be tissue: mostly-glass patches cannot answer anything."""

EventSink = Callable[[GiantEvent], None]


async def _ask(
    model: ChatModel, step: int, message: Message, config: GiantConfig, tools: ToolContext
) -> tuple[FinalAnswer | None, Asked]:
    """One image, one question: a ``FinalAnswer``, corrected as the navigator's turns are."""
    return await ask(
        model, [message], FinalAnswer, step=step, config=config, artifacts=tools.artifacts
    )


def _record(
    kind: Literal["thumbnail", "patch"],
    view: Rendered,
    artifact: ArtifactRef,
    answered: tuple[FinalAnswer | None, Asked],
    tool_s: float,
    options: list[str] | None,
) -> StepRecord:
    """The step record of one request; kind ``invalid`` when a model error cut it short."""
    answer, asked = answered
    notes: list[str] = []
    if answer is not None:
        prediction = normalize_answer(answer.answer, options)
        notes.append(
            f"prediction: {prediction}" if prediction is not None else "prediction: none matched"
        )
    return StepRecord(
        kind=kind if asked.model_error is None else "invalid",
        action=answer.model_dump() if answer is not None else None,
        requested=view.requested,
        region=view.region,
        level=view.level,
        mpp=view.mpp,
        artifact=artifact,
        notes=notes,
        tool_s=tool_s,
        **asked.step_fields(),
    )


def _reusable(log: RunLog, kind: str) -> dict[int, StepRecord]:
    """Steps a rerun need not ask again, then a clean log to replay them into, in order."""
    finished = {s.step: s for s in log.steps if s.kind == kind}
    log.truncate(0, 0)
    return finished


def _log_step(log: RunLog, record: StepRecord, prompt: str) -> None:
    """The request's messages (image only in the user turn) and then its step record."""
    assert record.artifact is not None
    log.add_message(Message.user(record.artifact, prompt))
    if record.outputs:
        log.add_message(Message.assistant(record.outputs[-1]))
    log.add_step(record)


def _state(
    status: Status,
    *,
    answer: str | None = None,
    error: str | None = None,
    votes: dict[str, int] | None = None,
) -> dict[str, Any]:
    return {"status": status, "answer": answer, "error": error, "votes": votes}


async def _thumbnail(
    model: ChatModel,
    config: GiantConfig,
    tools: ToolContext,
    log: RunLog,
    question: str,
    options: list[str] | None,
    emit: EventSink,
) -> dict[str, Any]:
    slide = tools.require_slide()
    reused = _reusable(log, "thumbnail").get(1)
    started = time.perf_counter()
    long_side = render_long_side(model, config.thumbnail_long_side)
    view = tools.renderer.render(Region.whole(slide.dimensions), long_side)
    # No guides: the model cannot act on coordinates here, and the baseline is a plain image.
    artifact = tools.artifacts.put(view.image, kind="thumbnail", region=view.region)
    tool_s = time.perf_counter() - started
    prompt = load_template("giant/thumbnail").render(
        question=question,
        options=options_text(options),
        width=slide.dimensions.width,
        height=slide.dimensions.height,
        image_width=artifact.width,
        **image_words(slide),
        image_height=artifact.height,
    )
    log.set_meta(overview=artifact.model_dump(mode="json"))
    emit(GiantEvent(kind="overview", step=0, artifact_id=artifact.id, region=view.region))
    if reused is not None and reused.artifact == artifact:
        record = reused
    else:
        emit(GiantEvent(kind="thinking", step=1))
        try:
            async with asyncio.timeout(config.timeout_s):
                answered = await _ask(model, 1, Message.user(artifact, prompt), config, tools)
        except TimeoutError:
            return _state("timeout", error=f"no answer within the {config.timeout_s:g} s limit")
        record = _record("thumbnail", view, artifact, answered, tool_s, options)
    _log_step(log, record, prompt)
    if record.kind == "invalid":
        return _state("model_error", error=f"model error: {record.errors[-1]}")
    if record.action is None:
        emit(GiantEvent(kind="invalid", step=1, text=record.errors[-1]))
        return _state(
            "no_answer",
            error=f"no valid answer in {len(record.outputs)} attempt(s): {record.errors[-1]}",
        )
    answer = str(record.action["answer"])
    emit(GiantEvent(kind="answer", step=1, text=answer))
    return _state("answered", answer=answer)


def _sample_patches(tools: ToolContext, config: GiantConfig) -> tuple[list[Region], float]:
    """Up to ``config.patches`` tissue tiles drawn with ``config.seed``, and the tissue share."""
    slide = tools.require_slide()
    mask = tissue_mask(tools.renderer)
    tiles = [
        tile.region
        for tile in iter_tissue_tiles(
            slide, mask, tile_px=config.patch_px, level=0, min_tissue=PATCH_MIN_TISSUE
        )
    ]
    if len(tiles) > config.patches:
        tiles = random.Random(config.seed).sample(tiles, config.patches)
    return tiles, mask.tissue_fraction


async def _patches(
    model: ChatModel,
    config: GiantConfig,
    tools: ToolContext,
    log: RunLog,
    question: str,
    options: list[str] | None,
    emit: EventSink,
) -> dict[str, Any]:
    slide = tools.require_slide()
    regions, tissue_share = _sample_patches(tools, config)
    if not regions:
        return _state(
            "no_answer",
            error=(
                f"no tissue patches: no {config.patch_px}x{config.patch_px} px tile of the "
                f"{slide.dimensions.width}x{slide.dimensions.height} slide is at least "
                f"{PATCH_MIN_TISSUE:.0%} tissue (the tissue mask covers {tissue_share:.1%} of "
                "the slide)"
            ),
        )
    count = len(regions)
    field_size = (
        f"about {slide.modality.length(config.patch_px * slide.mpp_x)} across"
        if slide.mpp_x is not None
        else "pixel spacing unknown"
    )
    prompt = load_template("giant/patch").render(
        question=question,
        options=options_text(options),
        patch_px=config.patch_px,
        field=field_size,
        **image_words(slide),
    )
    patch_side = render_long_side(model, config.patch_px)
    # Not sent to the model: a map for whoever reads the trajectory of where the patches were.
    whole = tools.renderer.overview(render_long_side(model, config.long_side))
    overview = tools.artifacts.put(whole.image, kind="overview", region=whole.region)
    log.set_meta(overview=overview.model_dump(mode="json"))
    reused = _reusable(log, "patch")
    done: dict[int, StepRecord] = {}
    logged: set[int] = set()
    failed = asyncio.Event()  # after a model error (already retried by the backend), stop
    semaphore = asyncio.Semaphore(PATCH_CONCURRENCY)

    def log_one(index: int) -> None:
        record = done[index]
        _log_step(log, record, prompt)
        logged.add(index)
        if record.kind == "invalid" or record.action is None:
            emit(GiantEvent(kind="invalid", step=record.step, text=record.errors[-1]))
        else:
            emit(
                GiantEvent(
                    kind="zoom",
                    step=record.step,
                    region=record.region,
                    artifact_id=record.artifact.id if record.artifact else None,
                    text=f"patch {record.step} of {count}: {record.action['answer']}",
                )
            )

    def log_in_order() -> None:
        # Records go to the log by patch index whatever order the replies come in.
        index = len(logged)
        while index in done and index not in logged:
            log_one(index)
            index += 1

    async def one(index: int, region: Region) -> None:
        started = time.perf_counter()
        view = tools.renderer.render(region, patch_side)
        artifact = tools.artifacts.put(view.image, kind="patch", region=view.region)
        tool_s = time.perf_counter() - started
        earlier = reused.get(index + 1)
        if earlier is not None and earlier.artifact == artifact:
            done[index] = earlier
        else:
            async with semaphore:
                if failed.is_set():
                    return
                answered = await _ask(
                    model, index + 1, Message.user(artifact, prompt), config, tools
                )
            if answered[1].model_error is not None:
                failed.set()
            done[index] = _record("patch", view, artifact, answered, tool_s, options)
        log_in_order()

    tasks = [asyncio.ensure_future(one(i, region)) for i, region in enumerate(regions)]
    timed_out = False
    try:
        async with asyncio.timeout(config.timeout_s):
            await asyncio.gather(*tasks)
    except TimeoutError:
        timed_out = True
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
    for index in sorted(set(done) - logged):  # finished, but behind a patch that never ran
        log_one(index)

    answered = [done[i] for i in sorted(done) if done[i].kind == "patch" and done[i].action]
    raw = [str((record.action or {})["answer"]) for record in answered]
    predictions = [normalize_answer(answer, options) for answer in raw]
    winner, votes = majority_vote(predictions)
    if failed.is_set():
        broken = min(i for i in done if done[i].kind == "invalid")
        return _state(
            "model_error",
            votes=votes,
            error=(
                f"model error on patch {broken + 1} of {count} ({len(answered)} patches "
                f"answered before the run stopped): {done[broken].errors[-1]}"
            ),
        )
    if timed_out:
        return _state(
            "timeout",
            votes=votes,
            error=(
                f"no answer within the {config.timeout_s:g} s limit "
                f"({len(done)} of {count} patches done)"
            ),
        )
    if winner is None:
        unmatched = sum(1 for p in predictions if p is None)
        return _state(
            "no_answer",
            votes=votes,
            error=(
                f"no usable vote from {count} patches: {count - len(answered)} gave no valid "
                f"reply, {unmatched} answered but matched no option"
            ),
        )
    # The raw answer of the first vote for the winner, so that it normalizes back to it.
    answer = raw[predictions.index(winner)]
    emit(
        GiantEvent(
            kind="answer",
            step=count,
            text=f"{winner} ({votes[winner]} of {sum(votes.values())} votes)",
        )
    )
    return _state("answered", answer=answer, votes=votes)


async def run_baseline(
    method: Literal["thumbnail", "patches"],
    model: ChatModel,
    config: GiantConfig,
    tools: ToolContext,
    log: RunLog,
    question: str,
    options: list[str] | None,
    *,
    on_event: EventSink,
) -> dict[str, Any]:
    """Run one baseline; the navigator's state: ``status``, ``answer``, ``error``, ``votes``.

    ``answer`` is the model's raw answer (for ``patches``, the first raw answer that voted for
    the winner), so that normalizing it gives the prediction.
    """
    if method == "thumbnail":
        return await _thumbnail(model, config, tools, log, question, options, on_event)
    return await _patches(model, config, tools, log, question, options, on_event)
