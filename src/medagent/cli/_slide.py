"""``medagent slide``: facts about a slide, and views as the agents see them."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table

from medagent.cli._app import (
    console,
    slide_app,
)
from medagent.errors import ConfigError


@slide_app.command("info")
def slide_info(
    path: Annotated[
        str,
        typer.Argument(
            help="Slide or image: SVS, NDPI, MRXS, TIFF, PNG, DICOM, a DICOM WSI or CT/MR "
            "series folder, or a DICOMweb series (dicomweb+https://HOST/ROOT/studies/UID/"
            "series/UID)"
        ),
    ],
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON instead of a table.")] = False,
) -> None:
    """Format, dimensions, pyramid levels, pixel spacing, vendor, associated image names.

      medagent slide info slide.svs

      medagent slide info scan.dcm --json

    Associated images (label, macro) are listed by name only: they can show patient
    identifiers, so their content is never printed. The first and last tile of every level
    are read: a damaged level fails here (exit 2, naming the level). What the decoders warned
    about while reading the file is printed as "note:" lines.
    """
    from medagent.imaging import holds_volume, is_dicomweb_ref, open_image, open_volume

    source: str | Path = path if is_dicomweb_ref(path) else Path(path)
    if isinstance(source, Path) and holds_volume(source):
        volume = open_volume(source)
        if as_json:
            console.print_json(data=volume.facts())
        else:
            console.print(f"{path}: {volume.to_text()}", markup=False, highlight=False)
            for note in volume.notes:
                console.print(f"note: {note}", markup=False, highlight=False, soft_wrap=True)
        return
    with open_image(source) as slide:
        info = slide.info
    if as_json:
        console.print_json(info.model_dump_json())
        return
    table = Table(title=str(path), show_header=False)
    table.add_column("field")
    table.add_column("value", overflow="fold")
    spacing = (
        f"{info.mpp_x:.4g} x {info.mpp_y:.4g} µm/px"
        if info.mpp_x is not None and info.mpp_y is not None
        else "unknown (no physical units)"
    )
    rows = [
        ("format", info.format),
        ("vendor", info.vendor or "—"),
        ("dimensions", f"{info.dimensions.width} x {info.dimensions.height} px (level 0)"),
        ("pixel spacing", spacing),
        ("objective", f"{info.objective_power:g}x" if info.objective_power else "—"),
        ("associated images", ", ".join(info.associated_images) or "—"),
    ]
    for level, (size, downsample) in enumerate(
        zip(info.level_dimensions, info.level_downsamples, strict=True)
    ):
        rows.append((f"level {level}", f"{size.width} x {size.height} (downsample {downsample:g})"))
    for field, value in rows:
        table.add_row(field, value)
    console.print(table)
    for note in info.notes:
        console.print(f"note: {note}", markup=False, highlight=False, soft_wrap=True)


@slide_app.command("render")
def slide_render(
    path: Annotated[Path, typer.Argument(help="Slide or image to render.")],
    out: Annotated[Path, typer.Option("--out", "-o", help="Image file to write (.jpg, .png).")],
    region: Annotated[
        str | None,
        typer.Option(help="X,Y,W,H in level-0 pixels; the whole image when omitted."),
    ] = None,
    size: Annotated[int, typer.Option(help="Long side of the output in pixels.")] = 1000,
    guides: Annotated[
        bool, typer.Option("--guides/--no-guides", help="Draw labelled level-0 axis guides.")
    ] = True,
) -> None:
    """Render a region as the agents see it: best pyramid level, Lanczos, guides, scale bar.

    medagent slide render slide.svs --region 1000,2000,4000,3000 --size 1000 --out view.jpg
    """
    from medagent.imaging import (
        Region,
        Renderer,
        RenderPolicy,
        draw_guides,
        draw_scale_bar,
        open_image,
    )

    try:
        wanted = Region.parse(region) if region else None
    except ValueError as exc:
        raise ConfigError(f"--region: {exc}") from None
    if size < 16:
        raise ConfigError(f"--size must be at least 16 pixels, not {size}")
    if out.suffix.lower() not in (".jpg", ".jpeg", ".png"):
        raise ConfigError(f"--out {out}: use a .jpg or .png file name")
    with open_image(path) as slide:
        renderer = Renderer(slide, RenderPolicy(long_side=size))
        view = renderer.render(wanted) if wanted else renderer.overview()
        image = draw_guides(view.image, view.region) if guides else view.image
        if view.mpp is not None:
            image = draw_scale_bar(image, view.mpp)
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
        image.save(out)
    except OSError as exc:
        raise ConfigError(f"cannot write {out}: {exc.strerror or exc}") from None
    console.print(f"{view.note()} → {out}")
