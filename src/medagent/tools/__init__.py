"""Typed tools over the imaging layer, callable from Python, by models, and over MCP.

Each tool is defined once (``medagent.tools.base.Tool``); call it as ``zoom(ctx, x=…, y=…,
width=…, height=…)`` from Python, or ``zoom.run(ctx, arguments)`` with a model's arguments.
"""

from typing import Any

from medagent.tools._measure import (
    AngleInput,
    DistanceInput,
    MaskInput,
    MeasureInput,
    MeasureOutput,
    PolygonInput,
    PolylineInput,
    Quantity,
    Spacing,
    measure,
    measure_angle,
    measure_distance,
    measure_mask,
    measure_polygon,
    measure_polyline,
)
from medagent.tools._sam import SamMask, SamSegmenter, Segmenter
from medagent.tools._search import (
    ImageSearcher,
    SearchInput,
    SearchOutput,
    SimilarCase,
    SimilarImage,
    search_similar,
)
from medagent.tools._segment import (
    NucleiParams,
    SegmentedObject,
    SegmentInput,
    SegmentOutput,
    segment,
    segment_nuclei,
    segment_tissue,
)
from medagent.tools._tissue import TissueInput, TissueOutput, tissue
from medagent.tools._view import (
    OverviewInput,
    OverviewOutput,
    SlideFacts,
    ZoomInput,
    ZoomOutput,
    overview,
    slide_facts,
    zoom,
)
from medagent.tools._zero_shot import (
    TextImageScorer,
    ZeroShotInput,
    ZeroShotOutput,
    ZeroShotRegion,
    zero_shot,
)
from medagent.tools.base import Tool, ToolContext, ToolFailure, tool

#: Every image tool, in the order a model sees them: one list for chat, MCP and agents.
DEFAULT_TOOLS: tuple[Tool[Any, Any], ...] = (
    overview,
    zoom,
    tissue,
    segment,
    measure,
    search_similar,
    zero_shot,
)

__all__ = [
    "AngleInput",
    "DEFAULT_TOOLS",
    "DistanceInput",
    "ImageSearcher",
    "MaskInput",
    "MeasureInput",
    "MeasureOutput",
    "NucleiParams",
    "OverviewInput",
    "OverviewOutput",
    "PolygonInput",
    "PolylineInput",
    "Quantity",
    "SamMask",
    "SamSegmenter",
    "SearchInput",
    "SearchOutput",
    "SegmentInput",
    "SegmentOutput",
    "SegmentedObject",
    "Segmenter",
    "SimilarCase",
    "SimilarImage",
    "SlideFacts",
    "Spacing",
    "TextImageScorer",
    "TissueInput",
    "TissueOutput",
    "Tool",
    "ToolContext",
    "ToolFailure",
    "ZeroShotInput",
    "ZeroShotOutput",
    "ZeroShotRegion",
    "ZoomInput",
    "ZoomOutput",
    "measure",
    "measure_angle",
    "measure_distance",
    "measure_mask",
    "measure_polygon",
    "measure_polyline",
    "overview",
    "search_similar",
    "segment",
    "segment_nuclei",
    "segment_tissue",
    "slide_facts",
    "tissue",
    "tool",
    "zero_shot",
    "zoom",
]
