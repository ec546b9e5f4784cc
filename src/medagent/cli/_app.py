"""The typer application, its shared options and the settings every command builds.

Every command builds one ``Settings`` (defaults < ``MEDAGENT_*`` env vars < flags) and passes
it down.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Annotated, Any, TypeVar

import typer
from pydantic import AliasChoices, BaseModel, ValidationError
from rich.console import Console

from medagent._version import __version__
from medagent.errors import ConfigError
from medagent.settings import BackendName, ReasoningEffort, Settings

_C = TypeVar("_C", bound=BaseModel)

__all__ = [
    "BackendOpt",
    "BaseUrlOpt",
    "DeviceOpt",
    "ModelOpt",
    "PresetOpt",
    "ReasoningEffortOpt",
    "RequestsPerEndpointOpt",
    "ZeroShotModelOpt",
    "ZeroShotOpt",
    "RetriesOpt",
    "ScriptOpt",
    "TimeoutOpt",
    "TraceContentOpt",
    "TraceOpt",
    "app",
    "build_scorer",
    "build_settings",
    "config_from_flags",
    "console",
    "err_console",
    "model_app",
    "slide_app",
    "validation_line",
]

app = typer.Typer(
    name="medagent",
    help=(
        "Agents that read medical images with vision-language models.\n\n"
        "Start by checking that a model answers:\n\n"
        "  medagent model check --backend openai --base-url http://127.0.0.1:8000/v1 "
        "--model MODEL\n\n"
        "No server yet? Build a tiny test model and check it in-process:\n\n"
        "  medagent model build-tiny-vlm .medagent/tiny-vlm\n\n"
        "  medagent model check --backend transformers --model .medagent/tiny-vlm\n\n"
        "Settings come from flags, else MEDAGENT_* environment variables "
        "(MEDAGENT_BACKEND, MEDAGENT_MODEL, MEDAGENT_BASE_URL, ...)."
    ),
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    rich_markup_mode=None,
)
model_app = typer.Typer(
    help="Talk to model backends: check one, build a tiny test model.",
    no_args_is_help=True,
)
app.add_typer(model_app, name="model")
slide_app = typer.Typer(
    help="Look at slides and images: facts, and views as a model would see them.",
    no_args_is_help=True,
)
app.add_typer(slide_app, name="slide")

console = Console()
err_console = Console(stderr=True)


def _version(value: bool) -> None:
    if value:
        console.print(f"medagent {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    version: Annotated[
        bool,
        typer.Option("--version", callback=_version, is_eager=True, help="Print the version."),
    ] = False,
    debug: Annotated[
        bool, typer.Option("--debug", help="Show full tracebacks for errors.")
    ] = False,
) -> None:
    """Agents that read medical images with vision-language models."""


# Backend flags shared by every command that talks to a model. None means "not given", so
# the environment and defaults still apply.
BackendOpt = Annotated[
    BackendName | None,
    typer.Option(
        "--backend",
        "-b",
        help="openai (any OpenAI-compatible server: vLLM, SGLang, Ollama), vllm (in-process), "
        "transformers (in-process), scripted (test double replaying --script). "
        "[env: MEDAGENT_BACKEND; default: openai]",
        show_default=False,
    ),
]
ModelOpt = Annotated[
    str | None,
    typer.Option(
        "--model",
        "-m",
        help="Served model name (openai) or model folder / hub id (vllm, transformers). "
        "[env: MEDAGENT_MODEL]",
        show_default=False,
    ),
]
BaseUrlOpt = Annotated[
    list[str] | None,
    typer.Option(
        "--base-url",
        help="OpenAI-compatible endpoint, e.g. http://127.0.0.1:8000/v1; repeat to spread "
        "requests over several servers. [env: MEDAGENT_BASE_URL, comma-separated]",
        show_default=False,
    ),
]
RequestsPerEndpointOpt = Annotated[
    int | None,
    typer.Option(
        "--requests-per-endpoint",
        min=1,
        help="Requests in flight on each model server (each --base-url); --concurrency is "
        "items in flight. A request holds its place only while it is open, so 64 items can "
        "share a server that takes 32. [env: MEDAGENT_REQUESTS_PER_ENDPOINT; default: 8]",
        show_default=False,
    ),
]
ScriptOpt = Annotated[
    Path | None,
    typer.Option(
        "--script",
        help="JSONL replies for the scripted backend (a test double).",
        show_default=False,
    ),
]
TimeoutOpt = Annotated[
    float | None,
    typer.Option("--timeout", help="Seconds per request. [default: 120]", show_default=False),
]
RetriesOpt = Annotated[
    int | None,
    typer.Option(
        "--max-retries",
        help="Retries on connection errors, timeouts, 429, 5xx. [default: 4]",
        show_default=False,
    ),
]
ReasoningEffortOpt = Annotated[
    ReasoningEffort | None,
    typer.Option(
        "--reasoning-effort",
        help="openai backend: how hard a reasoning model (GPT-5, o-series, a vLLM reasoning "
        "model) thinks: minimal, low, medium, high. [env: MEDAGENT_REASONING_EFFORT; default: "
        "the server's]",
        show_default=False,
    ),
]
TraceOpt = Annotated[
    bool | None,
    typer.Option(
        "--trace",
        help="OpenTelemetry spans for the run, each step, model call and tool call, sent over "
        "OTLP where OTEL_EXPORTER_OTLP_ENDPOINT says (needs the trace extra). "
        "[env: MEDAGENT_TRACE; default: off]",
        show_default=False,
    ),
]
TraceContentOpt = Annotated[
    bool | None,
    typer.Option(
        "--trace-content",
        help="With --trace: also record prompts, replies and tool arguments on the spans "
        "(images as artifact ids, never pixels); they may hold patient data. "
        "[env: MEDAGENT_TRACE_CONTENT; default: off]",
        show_default=False,
    ),
]
PresetOpt = Annotated[
    str | None,
    typer.Option(
        "--preset",
        help="VLM family whose conventions apply (image size cap): qwen2.5-vl, qwen3-vl, "
        "gemma3, internvl3, llava-onevision, idefics3, llava, or none; `medagent model "
        "presets` lists them. [env: MEDAGENT_PRESET; default: detected from --model]",
        show_default=False,
    ),
]
DeviceOpt = Annotated[
    str | None,
    typer.Option(
        "--device",
        help="transformers: auto, cpu, cuda, cuda:1, mps. [default: auto]",
        show_default=False,
    ),
]
#: ``serve`` and ``mcp``: the bound on images from remote clients (imaging.REMOTE_MAX_PIXELS).
MaxImageMpxOpt = Annotated[
    float,
    typer.Option(
        "--max-image-mpx",
        min=0.01,
        help="Most megapixels a plain image (PNG, JPEG, DICOM, untiled TIFF) a client opens may "
        "decode to, checked from its header before decoding; pyramidal slides are read by tile "
        "and not affected.",
    ),
]


#: Flags whose name differs from the setting they set (``--timeout`` sets ``timeout_s``).
_SETTING_FLAGS = {"timeout_s": "--timeout", "max_retries": "--max-retries"}


def _env_source(field: str) -> tuple[str, str]:
    """A setting's name and the environment variable(s) it is read from, as an error names
    them; ``field`` is the name or, for a setting read from several variables, the first."""
    for name, info in Settings.model_fields.items():
        alias = info.validation_alias
        choices = (
            [c for c in alias.choices if isinstance(c, str)]
            if isinstance(alias, AliasChoices)
            else []
        )
        if field == name or field in choices:
            return name, " or ".join(choices) if choices else f"MEDAGENT_{name.upper()}"
    return field, f"MEDAGENT_{field.upper()}"


def _given(value: Any) -> str:
    """A rejected value as an error message quotes it: short, whatever the user typed."""
    text = repr(value)
    return text if len(text) <= 40 else text[:37] + "..."


def config_from_flags(
    model: type[_C], *, flag_names: Mapping[str, str] | None = None, **flags: Any
) -> _C:
    """A command's config model from its flags; flags left out (None) keep the model's default,
    and an invalid value is a one-line error naming the flag the user typed (``flag_names``
    maps a field to its flag where they differ: ``{"max_steps": "--steps"}``)."""
    given = {key: value for key, value in flags.items() if value is not None}
    try:
        return model(**given)
    except ValidationError as exc:
        first = exc.errors()[0]
        field = str(first["loc"][0]) if first["loc"] else ""
        flag = (flag_names or {}).get(field) or f"--{field.replace('_', '-') or 'option'}"
        got = f" (got {_given(given[field])})" if field in given else ""
        raise ConfigError(f"invalid {flag}: {first['msg']}{got}") from None


def validation_line(exc: ValidationError) -> str:
    """One line for a pydantic error that reached the top of the CLI: a value from the user
    that no command checked before building a model from it (a bug; ``--debug`` shows it)."""
    first = exc.errors()[0]
    where = ".".join(str(part) for part in first["loc"]) or "value"
    got = f" (got {_given(first['input'])})" if "input" in first else ""
    return f"invalid {where} for {exc.title}: {first['msg']}{got}"


def build_settings(**flags: Any) -> Settings:
    """Settings from the environment, with the flags that were given laid over them."""
    given = {key: value for key, value in flags.items() if value is not None}
    if "script" in given:
        given["script"] = str(given["script"])
    try:
        return Settings(**given)
    except ValidationError as exc:
        first = exc.errors()[0]
        field = str(first["loc"][0]) if first["loc"] else ""
        if field in given:
            flag = _SETTING_FLAGS.get(field, f"--{field.replace('_', '-')}")
            got = _given(given[field])
            raise ConfigError(f"invalid {flag}: {first['msg']} (got {got})") from None
        name, env = _env_source(field)
        where = ".".join([name, *(str(x) for x in first["loc"][1:])])
        raise ConfigError(f"invalid setting {where} (from {env}): {first['msg']}") from None


ZeroShotOpt = Annotated[
    str | None,
    typer.Option(
        "--zero-shot",
        metavar="EMBEDDER",
        help="An image-text model for the zero_shot tool (where on the tissue each text "
        "prompt fits): plip or quiltnet, or hf/open_clip with --zero-shot-model. Meaningful "
        "only with pathology weights. [off]",
        show_default=False,
    ),
]
ZeroShotModelOpt = Annotated[
    str | None,
    typer.Option(
        "--zero-shot-model",
        metavar="FOLDER|ID",
        help="Model folder or hub id for --zero-shot (presets default to their hub id, from "
        "the local cache).",
        show_default=False,
    ),
]


def build_scorer(embedder: str | None, model: str | None) -> Any:
    """The image-text model for zero_shot (``None`` when off), checked to have a text side
    before any work starts: a vision-only model fails here, in one line."""
    if embedder is None:
        if model is not None:
            raise ConfigError("--zero-shot-model needs --zero-shot EMBEDDER (e.g. plip or hf)")
        return None
    from medagent.retrieval import make_embedder

    scorer = make_embedder(embedder, model)
    scorer.embed_texts(["tissue"])  # a vision-only model fails here, in one line
    return scorer
