"""The tissue tool: where the tissue is, how much, and in which pieces."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field

from medagent.artifacts import ArtifactRef
from medagent.imaging import Region, draw_boxes, draw_mask, tissue_mask
from medagent.tools.base import ToolContext, store_view, tool

__all__ = ["TissueInput", "TissueOutput", "tissue"]


class TissueInput(BaseModel):
    region: Region | None = Field(
        None, description="level-0 region to analyse; the whole image when omitted"
    )
    max_components: int = Field(10, ge=1, le=100, description="how many tissue pieces to list")


class TissueOutput(BaseModel):
    model_config = ConfigDict(frozen=True)

    artifact: ArtifactRef = Field(description="the view with tissue tinted and pieces numbered")
    mask: ArtifactRef = Field(description="the binary mask (PNG), white = tissue")
    region: Region
    tissue_fraction: float = Field(description="share of the region covered by tissue, 0..1")
    components: list[Region] = Field(description="level-0 boxes of tissue pieces, largest first")

    def to_text(self) -> str:
        boxes = "; ".join(f"{i + 1}: {box}" for i, box in enumerate(self.components)) or "none"
        return (
            f"Tissue covers {self.tissue_fraction:.1%} of {self.region}. "
            f"Tissue pieces (level-0 boxes): {boxes}."
        )


@tool(
    "tissue",
    "Detect tissue (versus glass, pen marks and background) in the image or a level-0 region: "
    "the tissue fraction and the boxes of the separate tissue pieces.",
    TissueInput,
    TissueOutput,
)
def tissue(ctx: ToolContext, args: TissueInput) -> TissueOutput:
    renderer = ctx.renderer
    found = tissue_mask(renderer, args.region)
    components = found.components()[: args.max_components]
    view = renderer.render(found.region, ctx.policy.long_side)
    image = draw_boxes(draw_mask(view.image, found.mask), view.region, components)
    return TissueOutput(
        artifact=store_view(ctx, image, view.region, view.mpp, "tissue"),
        mask=ctx.artifacts.put(
            found.to_image(), media_type="image/png", kind="mask", region=found.region
        ),
        region=found.region,
        tissue_fraction=found.tissue_fraction,
        components=components,
    )
