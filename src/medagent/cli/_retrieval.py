"""``medagent index`` (build, search, info) and ``medagent rag`` (ask, pairs)."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn
from rich.table import Table

from medagent.cli._app import (
    BackendOpt,
    BaseUrlOpt,
    DeviceOpt,
    ModelOpt,
    RetriesOpt,
    ScriptOpt,
    TimeoutOpt,
    app,
    build_settings,
    console,
)
from medagent.errors import ConfigError

if TYPE_CHECKING:
    from medagent.retrieval import IndexConfig

__all__ = ["index_app", "rag_app"]

index_app = typer.Typer(
    help="Image indexes for similar-case search: build, search, info.", no_args_is_help=True
)
rag_app = typer.Typer(
    help="MMed-RAG: answers grounded in reports of similar cases; preference pairs.",
    no_args_is_help=True,
)
app.add_typer(index_app, name="index")
app.add_typer(rag_app, name="rag")

EmbedderOpt = Annotated[
    str,
    typer.Option(
        help="default (no weights, offline); hf, timm or open_clip (with --embed-model); a "
        "preset: uni, uni2-h, virchow2, prov-gigapath, h-optimus-0/1, plip, quiltnet, coca; "
        "or a name added with medagent.retrieval.register_embedder."
    ),
]
EmbedModelOpt = Annotated[
    str | None,
    typer.Option(
        "--embed-model",
        help="Model folder or hub id (presets default to their hub id, from the local cache).",
    ),
]


def _progress() -> Progress:
    return Progress(
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeRemainingColumn(),
        console=console,
        transient=True,
    )


@index_app.command("build")
def index_build(
    out: Annotated[Path, typer.Option(help="Index folder (resumes an unfinished build).")],
    images: Annotated[Path | None, typer.Option(help="A folder of images.")] = None,
    labels: Annotated[
        Path | None, typer.Option(help="CSV with file, label, domain, report columns.")
    ] = None,
    dataset: Annotated[str | None, typer.Option(help="vqa-rad")] = None,
    data: Annotated[Path | None, typer.Option(help="The dataset folder (with --dataset).")] = None,
    slide: Annotated[
        list[Path] | None,
        typer.Option(
            help="Index a slide's tissue tiles; repeat for many slides.", metavar="<path>"
        ),
    ] = None,
    tile_px: Annotated[int, typer.Option(help="--slide: tile size in pixels.")] = 256,
    embedder: EmbedderOpt = "default",
    embed_model: EmbedModelOpt = None,
    kind: Annotated[str, typer.Option(help="auto, flat, ivf, hnsw or ivfpq.")] = "auto",
    batch_size: Annotated[
        int, typer.Option(help="Images embedded together (with --executor ray: per Ray task).")
    ] = 64,
    checkpoint_s: Annotated[
        float,
        typer.Option(help="Seconds between saves of an unfinished build (what a rerun keeps)."),
    ] = 60.0,
    executor: Annotated[
        str,
        typer.Option(
            help="local, or ray (--slide only): tiles embedded as Ray tasks; every node must "
            "read the slides at the same path."
        ),
    ] = "local",
    ray_address: Annotated[
        str | None,
        typer.Option(help="Ray cluster address HOST:PORT (default: a local instance)."),
    ] = None,
) -> None:
    """Embed images into a FAISS index with their metadata.

    \b
    medagent index build --images cases/ --labels cases.csv --out idx/cases
    medagent index build --dataset vqa-rad --data vqa-rad/ --out idx/vqa-rad
    medagent index build --slide a.svs --slide b.svs --out idx/slides
    medagent index build --slide /shared/a.svs --slide /shared/b.svs --out idx/slides \\
        --executor ray --ray-address 10.0.0.1:6379

    Rerunning the same command after an interruption embeds only what is missing.
    """
    from medagent.retrieval import (
        IndexConfig,
        build_index,
        images_from_dataset,
        images_from_folder,
        images_from_slides,
        make_embedder,
    )

    slides = slide or []
    chosen = [x for x in (images, dataset, slides or None) if x is not None]
    if len(chosen) != 1:
        raise ConfigError("give exactly one of --images DIR, --dataset vqa-rad, --slide PATH")
    if kind not in ("auto", "flat", "ivf", "hnsw", "ivfpq"):
        raise ConfigError(f"--kind {kind!r}: choose auto, flat, ivf, hnsw or ivfpq")
    if executor not in ("local", "ray"):
        raise ConfigError(f"--executor {executor!r}: choose local or ray")
    if batch_size < 1 or checkpoint_s < 0:
        raise ConfigError("--batch-size must be at least 1 and --checkpoint-s at least 0")
    config = IndexConfig.model_validate({"kind": kind})
    if executor == "ray":
        if not slides:
            raise ConfigError("--executor ray builds from --slide files; drop it for the others")
        _build_on_ray(
            out,
            slides,
            tile_px,
            embedder,
            embed_model,
            config,
            batch_size,
            checkpoint_s,
            ray_address,
        )
        return
    if ray_address is not None:
        raise ConfigError("--ray-address goes with --executor ray")
    model = make_embedder(embedder, embed_model)
    sources: Any
    if images is not None:
        sources = list(images_from_folder(images, labels))
    elif slides:
        sources = list(images_from_slides(slides, tile_px=tile_px))
    else:
        if dataset != "vqa-rad" or data is None:
            raise ConfigError("--dataset supports vqa-rad, with --data FOLDER")
        from medagent.evals import load_vqarad

        sources = list(images_from_dataset(load_vqarad(data, split="all").items))
    with _progress() as progress:
        task = progress.add_task("embedding", total=len(sources))
        index = build_index(
            out,
            sources,
            model,
            config=config,
            batch_size=batch_size,
            save_interval_s=checkpoint_s,
            progress=lambda done, total: progress.update(task, completed=done, total=total),
            total=len(sources),
        )
    info = index.info()
    console.print(f"{info.count} images in {out} ({info.kind}, {info.embedder}, dim {info.dim})")


def _build_on_ray(
    out: Path,
    slides: list[Path],
    tile_px: int,
    embedder: str,
    embed_model: str | None,
    config: IndexConfig,
    batch_size: int,
    checkpoint_s: float,
    ray_address: str | None,
) -> None:
    from medagent.retrieval import EmbedderSpec, build_index_on_ray

    with _progress() as progress:
        task = progress.add_task("embedding on Ray", total=None)
        built = build_index_on_ray(
            out,
            slides,
            EmbedderSpec(name=embedder, model=embed_model),
            address=ray_address,
            tile_px=tile_px,
            config=config,
            batch_size=batch_size,
            save_interval_s=checkpoint_s,
            progress=lambda done, total: progress.update(task, completed=done, total=total),
        )
    info = built.index.info()
    console.print(f"{info.count} images in {out} ({info.kind}, {info.embedder}, dim {info.dim})")
    console.print(
        f"{built.tiles} tiles from {len(slides)} slides: {built.embedded} embedded on "
        f"{built.nodes} Ray nodes, {built.already} already in the index"
    )


@index_app.command("search")
def index_search(
    index: Annotated[Path, typer.Argument(help="Index folder.")],
    image: Annotated[Path | None, typer.Option(help="Query image file.")] = None,
    slide: Annotated[Path | None, typer.Option(help="Query slide (with --region).")] = None,
    region: Annotated[str | None, typer.Option(help="X,Y,W,H in level-0 pixels.")] = None,
    k: Annotated[int, typer.Option(help="How many neighbours.")] = 5,
    domain: Annotated[str | None, typer.Option(help="Only this domain.")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
) -> None:
    """The most similar indexed images to an image or a slide region.

    medagent index search idx/vqa-rad --image cxr.png --k 5

    medagent index search idx/slides --slide slide.svs --region 1000,2000,512,512 --json
    """
    from medagent.imaging import Region, Renderer, open_image
    from medagent.retrieval import open_index

    source = image or slide
    if source is None or (image is not None and slide is not None):
        raise ConfigError("give --image FILE, or --slide PATH with --region X,Y,W,H")
    with open_image(source) as opened:
        renderer = Renderer(opened)
        try:
            wanted = Region.parse(region) if region else None
        except ValueError as exc:
            raise ConfigError(f"--region: {exc}") from None
        query = renderer.render(wanted, 512).image if wanted else renderer.overview(512).image
    hits = open_index(index).search_image(query, k, domain)
    if as_json:
        console.print_json(json.dumps([h.model_dump(mode="json") for h in hits]))
        return
    table = Table("rank", "score", "id", "label", "domain", "source")
    for rank, hit in enumerate(hits, start=1):
        table.add_row(
            str(rank), f"{hit.score:.3f}", hit.id, hit.label or "—", hit.domain or "—", hit.source
        )
    console.print(table)


@index_app.command("info")
def index_info(
    index: Annotated[Path, typer.Argument(help="Index folder.")],
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
) -> None:
    """Size, kind, embedder and counts per domain and label.

    medagent index info idx/vqa-rad
    """
    from medagent.retrieval import ImageIndex

    info = ImageIndex.load(index).info()
    if as_json:
        console.print_json(info.model_dump_json())
        return
    console.print(f"{info.count} vectors, dim {info.dim}, {info.kind}, embedder {info.embedder}")
    console.print(f"domains: {info.domains}")
    console.print(f"labels: {dict(list(info.labels.items())[:20])}")


@rag_app.command("ask")
def rag_ask(
    image: Annotated[Path, typer.Argument(help="The image (PNG, JPEG, DICOM, …).")],
    question: Annotated[str, typer.Argument(help="The question.")],
    index: Annotated[Path, typer.Option(help="Index of similar cases with reports.")],
    options: Annotated[str | None, typer.Option(help='Options separated by ";".')] = None,
    no_rag: Annotated[bool, typer.Option(help="Answer without retrieved reports.")] = False,
    prompts: Annotated[
        Path | None, typer.Option(help="Compiled prompts (a 'rag' program): role line, demos.")
    ] = None,
    out: Annotated[
        Path | None,
        typer.Option(help="Run folder for manifest.json and result.json. [runs/rag-TIMESTAMP-ID]"),
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
    backend: BackendOpt = None,
    model: ModelOpt = None,
    base_url: BaseUrlOpt = None,
    script: ScriptOpt = None,
    timeout: TimeoutOpt = None,
    max_retries: RetriesOpt = None,
    device: DeviceOpt = None,
) -> None:
    """Answer a question about an image, grounded in reports of similar cases.

      medagent rag ask cxr.png "Is there a pleural effusion?" --index idx/vqa-rad \\
          --base-url http://127.0.0.1:8000/v1 --model M
    """
    from medagent.agents.base import new_run_dir
    from medagent.agents.rag import RAGPipeline, rag_program
    from medagent.cli._optimize import load_prompts
    from medagent.imaging import open_image
    from medagent.models import build_model
    from medagent.prompts import resolve_program
    from medagent.retrieval import open_index

    settings = build_settings(
        backend=backend,
        model=model,
        base_url=base_url,
        script=script,
        timeout_s=timeout,
        max_retries=max_retries,
        device=device,
    )
    # A wrong file or another agent's program fails here, before a model is loaded.
    program = resolve_program(load_prompts(prompts), rag_program(), "MMed-RAG")
    opened = open_image(image)
    chat_model = build_model(settings)
    pipeline = RAGPipeline(chat_model, open_index(index), prompts=program)
    choices = [o.strip() for o in options.split(";") if o.strip()] if options else None

    async def _run() -> Any:
        try:
            return await pipeline.ask(
                opened,
                question,
                options=choices,
                use_rag=not no_rag,
                run_dir=out or new_run_dir("runs", "rag-"),
            )
        finally:
            opened.close()
            await chat_model.aclose()

    result = asyncio.run(_run())
    if as_json:
        console.print_json(result.model_dump_json())
    else:
        console.print(
            f"domain: {result.domain}; {len(result.reports)} of "
            f"{result.candidates} retrieved reports used"
        )
        for report in result.reports:
            console.print(f"  {report.score:.3f}  {report.report[:120]}", markup=False)
        console.print(f"answer: {result.answer}  [{result.status}]", markup=False)
    if result.answer is None:
        raise typer.Exit(1)


@rag_app.command("pairs")
def rag_pairs(
    data: Annotated[Path, typer.Option(help="The VQA-RAD folder.")],
    index: Annotated[Path, typer.Option(help="Index of similar cases with reports.")],
    out: Annotated[Path, typer.Option(help="DPO JSONL file to write.")],
    dataset: Annotated[str, typer.Option(help="vqa-rad")] = "vqa-rad",
    split: Annotated[str, typer.Option(help="train, test or all.")] = "train",
    limit: Annotated[int | None, typer.Option(help="Only the first N items.")] = None,
    seed: Annotated[int, typer.Option(help="Noise images and 2a subsampling.")] = 0,
    prompts: Annotated[
        Path | None, typer.Option(help="Compiled prompts (a 'rag' program): role line, demos.")
    ] = None,
    backend: BackendOpt = None,
    model: ModelOpt = None,
    base_url: BaseUrlOpt = None,
    script: ScriptOpt = None,
    timeout: TimeoutOpt = None,
    max_retries: RetriesOpt = None,
    device: DeviceOpt = None,
) -> None:
    """Mine MMed-RAG preference pairs (stages 1, 2a, 2b, 2c) as DPO JSONL.

      medagent rag pairs --data vqa-rad/ --index idx/vqa-rad --out pairs.jsonl \\
          --base-url http://127.0.0.1:8000/v1 --model M --limit 200

    Each item is answered four ways — clean or noise image, with or without the retrieved
    reports — and the pairs whose stage condition holds are written (prompt, images, chosen,
    rejected, stage); 2a pairs are subsampled to half the 2b + 2c count.
    """
    from medagent.agents.rag import RAGPipeline, pairs_from_runs, rag_program, write_pairs
    from medagent.cli._optimize import load_prompts
    from medagent.evals import load_vqarad
    from medagent.models import build_model
    from medagent.prompts import resolve_program
    from medagent.retrieval import open_index

    if dataset != "vqa-rad":
        raise ConfigError("--dataset supports vqa-rad")
    settings = build_settings(
        backend=backend,
        model=model,
        base_url=base_url,
        script=script,
        timeout_s=timeout,
        max_retries=max_retries,
        device=device,
    )
    if split not in ("train", "test", "all"):
        raise ConfigError(f"--split {split!r}: choose train, test or all")
    loaded = load_vqarad(data, split=split, limit=limit)  # type: ignore[arg-type]
    items = [i for i in loaded.items if i.answer]
    program = resolve_program(load_prompts(prompts), rag_program(), "MMed-RAG")
    chat_model = build_model(settings)
    pipeline = RAGPipeline(chat_model, open_index(index), prompts=program)

    async def _run() -> list[Any]:
        runs = []
        try:
            with _progress() as progress:
                task = progress.add_task("four runs per item", total=len(items))
                for n, item in enumerate(items):
                    runs.append(
                        await pipeline.four_runs(
                            item.id,
                            item.images[0],
                            item.question,
                            item.answer or "",
                            options=item.options,
                            seed=seed + n,
                        )
                    )
                    progress.update(task, completed=n + 1)
        finally:
            await chat_model.aclose()
        return runs

    pairs = pairs_from_runs(asyncio.run(_run()), seed=seed)
    write_pairs(pairs, out)
    counts: dict[str, int] = {}
    for pair in pairs:
        counts[pair.stage] = counts.get(pair.stage, 0) + 1
    console.print(f"{len(pairs)} pairs → {out} (by stage: {counts})")
