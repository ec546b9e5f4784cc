"""``medagent model``: check a backend, list VLM presets, build the tiny test model."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.table import Table

from medagent.cli._app import (
    BackendOpt,
    BaseUrlOpt,
    DeviceOpt,
    ModelOpt,
    PresetOpt,
    ReasoningEffortOpt,
    RetriesOpt,
    ScriptOpt,
    TimeoutOpt,
    build_settings,
    console,
    err_console,
    model_app,
)


@model_app.command("check")
def model_check(
    backend: BackendOpt = None,
    model: ModelOpt = None,
    base_url: BaseUrlOpt = None,
    script: ScriptOpt = None,
    timeout: TimeoutOpt = None,
    max_retries: RetriesOpt = None,
    device: DeviceOpt = None,
    reasoning_effort: ReasoningEffortOpt = None,
    preset: PresetOpt = None,
    max_tokens: Annotated[int, typer.Option(min=1, help="Tokens per answer.")] = 32,
) -> None:
    """Send the requests a new backend must take; print a table of results and quirks.

    Text, an image and structured output must work: exit 1 when any fails (2 when the
    backend cannot be set up). Then the quirks of open models are looked for and reported,
    each with what medagent does about it: a system turn the chat template refuses, a limit
    on images per request, tokens per image against the family's estimate, thinking sent
    with answers, and (from vLLM's /v1/models) a context too short for a GIANT run.
    The family preset is detected from --model (or the server's model folder); --preset
    names it. Run it first against a new server:

      medagent model check --base-url http://127.0.0.1:8000/v1 --model Qwen/Qwen2.5-VL-7B-Instruct
    """
    from medagent.models import build_model, context_row, preset_row, resolve_preset, run_checks

    settings = build_settings(
        backend=backend,
        model=model,
        base_url=base_url,
        script=script,
        timeout_s=timeout,
        max_retries=max_retries,
        device=device,
        reasoning_effort=reasoning_effort,
        preset=preset,
    )
    chat_model = build_model(settings)
    family = resolve_preset(settings.model, settings.preset)
    source = "named by --preset" if settings.preset else "detected from the model"

    async def _run() -> list[Any]:
        nonlocal family, source
        try:
            extra: list[Any] = []
            served = getattr(chat_model, "served_models", None)
            listed = await served() if callable(served) else []
            mine = next((m for m in listed if m.get("id") == chat_model.name), None)
            root = mine.get("root") if mine else None
            if family is None and settings.preset is None and isinstance(root, str):
                family = resolve_preset(root, None)
                source = "detected from the server's model folder"
            length = mine.get("max_model_len") if mine else None
            if isinstance(length, int) and length > 0:
                extra.append(context_row(length, family))
            results = await run_checks(chat_model, max_tokens=max_tokens, preset=family)
            return [preset_row(family, source), *results, *extra]
        finally:
            await chat_model.aclose()

    where = ", ".join(settings.base_url) if settings.backend == "openai" else "in-process"
    load = getattr(chat_model, "load", None)
    if callable(load):  # in-process backends: keep loading time out of the first check
        started = time.perf_counter()
        with console.status(f"loading {chat_model.name} …"):
            load()
        console.print(f"loaded {chat_model.name} in {time.perf_counter() - started:.1f} s")
    with console.status(f"checking {settings.backend} backend ({where}) …"):
        results = asyncio.run(_run())
    table = Table(title=f"{settings.backend} · {chat_model.name} · {where}")
    for column in ("check", "result", "latency", "tokens in/out", "detail"):
        table.add_column(column, overflow="fold")
    for r in results:
        verdict = "[red]fail[/red]"
        if r.ok:
            verdict = "[yellow]quirk[/yellow]" if r.quirk else "[green]ok[/green]"
        timed = bool(r.latency_s or r.prompt_tokens)
        table.add_row(
            r.capability,
            verdict,
            f"{r.latency_s * 1000:.0f} ms" if timed else "",
            f"{r.prompt_tokens}/{r.completion_tokens}" if timed else "",
            r.detail,
        )
    console.print(table)
    failed = [r.capability for r in results if not r.ok]
    if failed:
        err_console.print(f"failed: {', '.join(failed)}")
        raise typer.Exit(1)


@model_app.command("build-tiny-vlm")
def model_build_tiny_vlm(
    path: Annotated[Path, typer.Argument(help="Folder to write the model into.")],
    seed: Annotated[int, typer.Option(help="Seed for the random weights.")] = 0,
) -> None:
    """Build a tiny random-weight VLM of a real architecture, offline (a test double).

      medagent model build-tiny-vlm models/tiny-vlm

    Its answers are noise; it exists so the transformers and vLLM code paths can be run
    without downloading weights. Needs the [hf] extra.
    """
    from medagent.testing import build_tiny_vlm

    out = build_tiny_vlm(path, seed=seed)
    console.print(f"tiny VLM written to {out}")


@model_app.command("presets")
def model_presets(
    as_json: Annotated[
        bool, typer.Option("--json", help="Print the presets as JSON, with every field.")
    ] = False,
) -> None:
    """List what each open VLM family expects: image size, tokens per image, roles, quirks.

    A family is found from its name, its config.json model_type or architecture, or a hub id.
    "long side" is the size to cap images at; "tokens/image" estimates what one image costs in
    the context window (w, h after the cap); "images" is vLLM's default
    --limit-mm-per-prompt; "system" says whether the chat template keeps a system turn
    (merged: folded into the first user turn); "image at" whether images stay where they are
    in a message or go before its text.

      medagent model presets
      medagent model presets --json | jq '.[] | select(.name == "gemma3")'
    """
    import json

    from medagent.models import VLM_PRESETS

    if as_json:
        typer.echo(json.dumps([p.model_dump(mode="json") for p in VLM_PRESETS], indent=2))
        return
    table = Table(title="VLM presets")
    for column in ("name", "model_type", "long side", "tokens/image", "images", "system"):
        table.add_column(column, overflow="fold")
    table.add_column("image at", overflow="fold")
    for p in VLM_PRESETS:
        table.add_row(
            p.name,
            ", ".join(p.model_types),
            str(p.image_long_side),
            p.token_formula(),
            str(p.max_images_per_request),
            p.system_role,
            p.image_position,
        )
    console.print(table)
    for p in VLM_PRESETS:
        console.print(f"[bold]{p.name}[/bold] ({p.family}, e.g. {p.hub_ids[0]}): {p.quirks}")
    console.print(f"JSON-schema decoding, every family: {VLM_PRESETS[0].json_schema}.")
