"""Typed tools over the imaging layer, callable from Python, by models, and over MCP.

Each tool is defined once (``medagent.tools.base.Tool``); call it as ``zoom(ctx, x=…, y=…,
width=…, height=…)`` from Python, or ``zoom.run(ctx, arguments)`` with a model's arguments.
"""

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
from medagent.tools._sam import SamMask, SamSegmenter, load_sam
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
    zoom,
)
from medagent.tools.base import Tool, ToolContext, ToolFailure, tool

__all__ = [
    "AngleInput",
    "DistanceInput",
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
    "SegmentInput",
    "SegmentOutput",
    "SegmentedObject",
    "SlideFacts",
    "Spacing",
    "TissueInput",
    "TissueOutput",
    "Tool",
    "ToolContext",
    "ToolFailure",
    "ZoomInput",
    "ZoomOutput",
    "load_sam",
    "measure",
    "measure_angle",
    "measure_distance",
    "measure_mask",
    "measure_polygon",
    "measure_polyline",
    "overview",
    "segment",
    "segment_nuclei",
    "segment_tissue",
    "tissue",
    "tool",
    "zoom",
]
