"""Carrying out the insight agent's tool calls, and turning results into evidence.

Every call goes through the tool's model-facing ``run`` (or, for report retrieval, the same
failure contract), so bad arguments and regions come back as a ``ToolFailure`` the model can
read and the turn is spent — never an exception that ends the run.
"""

from __future__ import annotations

import time
from typing import Any

from pydantic import BaseModel, ConfigDict

from medagent.agents.insight._config import InsightConfig
from medagent.agents.insight._context import Source
from medagent.agents.insight._outputs import (
    ZERO_SHOT_PROMPTS,
    Box,
    MeasureAction,
    RegionAction,
    ReportsAction,
    SearchAction,
    SegmentAction,
    ToolName,
    ZeroShotAction,
    ZoomAction,
)
from medagent.agents.insight._report import Evidence, Measurement, ToolStep
from medagent.artifacts import ArtifactRef
from medagent.errors import MedagentError
from medagent.imaging import Region
from medagent.prompts import load_template
from medagent.retrieval import select_k
from medagent.tools import (
    MeasureOutput,
    SearchOutput,
    SegmentOutput,
    TissueOutput,
    ToolContext,
    ToolFailure,
    ZeroShotOutput,
    ZoomOutput,
    measure,
    search_similar,
    segment,
    tissue,
    zero_shot,
    zoom,
)

__all__ = ["RetrievedReports", "ToolAction", "execute", "tool_lines"]

ToolAction = (
    ZoomAction
    | RegionAction
    | SegmentAction
    | MeasureAction
    | SearchAction
    | ReportsAction
    | ZeroShotAction
)


def tool_lines(names: list[ToolName], units: str) -> str:
    """The reply formats of the offered tools, from the ``insight/tools`` template; ``units``
    says what measurements come in (the images' unit, or pixels without spacing)."""
    sections: dict[str, str] = {}
    text = load_template("insight/tools").render(units=units, prompts=ZERO_SHOT_PROMPTS)
    for chunk in text.split("## ")[1:]:
        name, _, body = chunk.partition("\n")
        sections[name.strip()] = body.rstrip()
    return "\n".join(sections[name] for name in names)


class RetrievedReport(BaseModel):
    model_config = ConfigDict(frozen=True)

    id: str
    score: float
    report: str


class RetrievedReports(BaseModel):
    """Reports of similar cases, cut where similarity falls off (MMed-RAG's adaptive k)."""

    model_config = ConfigDict(frozen=True)

    query: ArtifactRef
    candidates: int
    reports: list[RetrievedReport]

    def to_text(self) -> str:
        if not self.reports:
            return "No similar case with a report was found."
        lines = "\n".join(
            f'{i}. similarity {r.score:.3f}: "{r.report[:400]}"'
            for i, r in enumerate(self.reports, start=1)
        )
        return load_template("insight/reports").render(
            count=len(self.reports), candidates=self.candidates, reports=lines
        )


def retrieve_reports(
    ctx: ToolContext, region: Region | None, config: InsightConfig
) -> RetrievedReports | ToolFailure:
    """The reports of the cases most like ``region`` (or the whole image)."""
    if ctx.searcher is None:
        return ToolFailure(tool="reports", kind="failed", message="no index of similar cases")
    try:
        renderer = ctx.renderer
        view = renderer.render(region, 512) if region is not None else renderer.overview(512)
        image = view.image
        query = ctx.artifacts.put(image, kind="query", region=region)
        hits = ctx.searcher.search_image(image, config.report_candidates, None)
    except MedagentError as exc:
        kind = "bad_region" if region is not None else "failed"
        return ToolFailure(tool="reports", kind=kind, message=str(exc))
    with_report = [hit for hit in hits if hit.report]
    keep = select_k([hit.score for hit in with_report], config.report_k)
    return RetrievedReports(
        query=query,
        candidates=len(hits),
        reports=[
            RetrievedReport(id=hit.id, score=hit.score, report=hit.report or "")
            for hit in with_report[:keep]
        ],
    )


def _box(box: Box | None) -> dict[str, int] | None:
    return box.model_dump() if box is not None else None


def _measure_arguments(action: MeasureAction) -> dict[str, Any]:
    points = [p.model_dump() for p in action.points]
    if action.kind == "mask":
        return {"kind": "mask", "mask": action.mask or ""}
    if action.kind in ("polyline", "polygon"):
        return {"kind": action.kind, "points": points}
    names = ["a", "b"] if action.kind == "distance" else ["a", "vertex", "b"]
    return {"kind": action.kind, **dict(zip(names, points, strict=False))}


def _bounds(points: list[dict[str, int]]) -> Region | None:
    if not points:
        return None
    xs, ys = [p["x"] for p in points], [p["y"] for p in points]
    return Region(
        x=min(xs), y=min(ys), width=max(1, max(xs) - min(xs)), height=max(1, max(ys) - min(ys))
    )


def _evidence(step: int, tool: ToolName, image: int, output: BaseModel) -> Evidence:
    """What a successful result contributes to an insight."""
    text = str(getattr(output, "to_text")())  # noqa: B009 - every output model has it
    fields: dict[str, Any] = {}
    if isinstance(output, ZoomOutput):
        fields = {"region": output.region, "artifacts": [output.artifact]}
    elif isinstance(output, TissueOutput):
        fields = {
            "region": output.region,
            "artifacts": [output.artifact, output.mask],
            "measurements": [
                Measurement(name="tissue_fraction", value=100 * output.tissue_fraction, unit="%"),
                Measurement(name="tissue_pieces", value=len(output.components), unit=""),
            ],
        }
    elif isinstance(output, SegmentOutput):
        numbers = [
            Measurement(name=f"{output.method}_count", value=output.count, unit=""),
            Measurement(name="area_fraction", value=100 * output.area_fraction, unit="%"),
            Measurement(name="total_area", value=output.total_area, unit=output.area_unit),
        ]
        if output.median_area is not None:
            numbers.insert(
                1, Measurement(name="median_area", value=output.median_area, unit=output.area_unit)
            )
        fields = {
            "region": output.region,
            "artifacts": [output.artifact, output.mask],
            "measurements": numbers,
        }
    elif isinstance(output, MeasureOutput):
        fields = {
            "measurements": [
                Measurement(name=q.name, value=q.value, unit=q.unit) for q in output.quantities
            ]
        }
    elif isinstance(output, SearchOutput):
        fields = {
            "region": output.query.region,
            "artifacts": [output.query]
            + [c.thumbnail for c in output.cases if c.thumbnail is not None],
            "neighbours": [c.id for c in output.cases],
        }
    elif isinstance(output, ZeroShotOutput):
        # The mean shares say how much of the tissue looks like each prompt; the best tiles
        # (where to look next) are in the text, with their level-0 regions.
        fields = {
            "region": output.region,
            "artifacts": [output.artifact],
            "measurements": [
                Measurement(name=f"{prompt} share", value=100 * share, unit="%")
                for prompt, share in output.shares.items()
            ]
            + [Measurement(name="tiles_scored", value=output.tiles, unit="")],
        }
    elif isinstance(output, RetrievedReports):
        fields = {
            "region": output.query.region,
            "artifacts": [output.query],
            "neighbours": [r.id for r in output.reports],
        }
    return Evidence(step=step, tool=tool, image=image, text=text, **fields)


def execute(
    action: ToolAction, sources: list[Source], step: int, config: InsightConfig
) -> tuple[ToolStep, ArtifactRef | None]:
    """Run one tool call; the step record and the image to show the model (if any)."""
    tool: ToolName = action.action
    arguments: dict[str, Any] = action.model_dump(exclude={"reasoning", "action"})
    started = time.perf_counter()
    if not 1 <= action.image <= len(sources):
        output: BaseModel = ToolFailure(
            tool=tool,
            kind="invalid_arguments",
            message=f"there is no image {action.image}; the images are 1 to {len(sources)}",
        )
    else:
        ctx = sources[action.image - 1].tools
        output = _run(action, ctx, config)
    elapsed = time.perf_counter() - started
    if isinstance(output, ToolFailure):
        return (
            ToolStep(
                step=step,
                tool=tool,
                arguments=arguments,
                ok=False,
                text=output.to_text(),
                tool_s=elapsed,
            ),
            None,
        )
    evidence = _evidence(step, tool, action.image, output)
    if isinstance(action, MeasureAction) and evidence.region is None:
        evidence = evidence.model_copy(
            update={"region": _bounds([p.model_dump() for p in action.points])}
        )
    text = evidence.text
    if isinstance(output, SegmentOutput | TissueOutput):
        text += f" Mask id (for measure): {output.mask.id}."
    shown = None
    if isinstance(output, ZoomOutput | SegmentOutput | TissueOutput | ZeroShotOutput):
        shown = output.artifact
    return (
        ToolStep(
            step=step,
            tool=tool,
            arguments=arguments,
            ok=True,
            text=text,
            evidence=evidence,
            tool_s=elapsed,
        ),
        shown,
    )


def _run(action: ToolAction, ctx: ToolContext, config: InsightConfig) -> BaseModel:
    """The tool's output model, or a ``ToolFailure``."""
    if isinstance(action, ZoomAction):
        return zoom.run(ctx, {**action.region.model_dump(), "long_side": ctx.policy.long_side})
    if isinstance(action, RegionAction):
        return tissue.run(ctx, {"region": _box(action.region)})
    if isinstance(action, SegmentAction):
        return segment.run(ctx, {"method": action.method, "region": _box(action.region)})
    if isinstance(action, MeasureAction):
        return measure.run(ctx, _measure_arguments(action))
    if isinstance(action, SearchAction):
        return search_similar.run(ctx, {"region": _box(action.region), "k": action.k})
    if isinstance(action, ZeroShotAction):
        # Without a scorer the tool itself refuses, as a ToolFailure saying what is missing.
        return zero_shot.run(ctx, {"prompts": list(action.prompts), "region": _box(action.region)})
    return retrieve_reports(
        ctx, action.region.region() if action.region is not None else None, config
    )
