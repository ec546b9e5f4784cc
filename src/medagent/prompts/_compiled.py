"""Compiled prompt programs as JSON, with demo images stored next to the file by content hash.

``compiled.json`` holds, per named predictor, the instructions, demos, field descriptions and
whether it reasons first, plus how it was made (optimizer, scores, every candidate tried,
versions). Demo images live in ``compiled.images/<sha256>.png`` — the hash of the decoded RGB
pixels, so the same picture always gets the same name whatever file it came from — and the JSON
refers to them as ``{"image": "<sha256>"}``.
"""

from __future__ import annotations

import hashlib
import io
import json
import warnings
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal

from PIL import Image
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from medagent._files import write_atomic
from medagent._version import __version__
from medagent.errors import ConfigError, InputError
from medagent.prompts._modules import Demo, DemoSource, Predict, load_input_image
from medagent.prompts._signature import Signature

__all__ = [
    "CompiledProgram",
    "DemoState",
    "FORMAT_VERSION",
    "PredictorState",
    "PromptVersionWarning",
    "apply_predictor_state",
    "image_sink",
    "images_dir",
    "load_compiled",
    "now_iso",
    "predictor_state",
    "state_sha256",
    "write_compiled",
]

FORMAT: Literal["medagent.compiled-program"] = "medagent.compiled-program"
FORMAT_VERSION = 1
_IMAGE_KEY = "image"

ImageSink = Callable[[str, Image.Image], None]


class PromptVersionWarning(UserWarning):
    """A compiled program was made by another medagent version or for a changed signature."""


class DemoState(BaseModel):
    """A demo as stored: image inputs replaced by ``{"image": sha256}``."""

    model_config = ConfigDict(frozen=True)

    inputs: dict[str, Any]
    outputs: dict[str, Any]
    reasoning: str | None = None
    source: DemoSource = "manual"
    example_id: str | None = None


class PredictorState(BaseModel):
    """Everything an optimizer tunes in one predictor."""

    model_config = ConfigDict(frozen=True)

    signature: str
    signature_sha256: str = Field(description="fields and output model it was compiled against")
    reasoning: bool = False
    instructions: str
    input_descriptions: dict[str, str] = Field(default_factory=dict)
    output_descriptions: dict[str, str] = Field(default_factory=dict)
    demos: list[DemoState] = Field(default_factory=list)


class CompiledProgram(BaseModel):
    """A program's tuned state and how it was obtained; ``sha256`` goes into run manifests."""

    model_config = ConfigDict(frozen=True)

    format: Literal["medagent.compiled-program"] = FORMAT
    format_version: int = FORMAT_VERSION
    program: str
    description: str = ""
    sha256: str = Field(description="hash of the predictors' state, images by content")
    predictors: dict[str, PredictorState]
    optimizer: dict[str, Any] | None = None
    scores: dict[str, Any] = Field(default_factory=dict)
    candidates: list[dict[str, Any]] = Field(default_factory=list)
    model: str | None = None
    versions: dict[str, str] = Field(default_factory=dict)
    created_at: str = ""
    path: Path | None = Field(None, exclude=True, description="the file it was loaded from")


# -- images --------------------------------------------------------------------------------------
def images_dir(path: Path) -> Path:
    """Where the demo images of ``compiled.json`` live: ``compiled.images/``."""
    return path.with_name(f"{path.stem}.images")


def _rgb(value: object, where: str) -> Image.Image:
    image = load_input_image(value, where).image
    assert image is not None  # load_input_image always decodes
    return image


def _pixel_sha256(image: Image.Image) -> str:
    digest = hashlib.sha256(f"RGB {image.width}x{image.height}\n".encode())
    digest.update(image.tobytes())
    return digest.hexdigest()


def _encode_inputs(
    signature: Signature, inputs: dict[str, Any], sink: ImageSink | None, where: str
) -> dict[str, Any]:
    encoded: dict[str, Any] = {}
    kinds = {f.name: f.kind for f in signature.inputs}
    for name, value in inputs.items():
        if value is None:
            continue
        kind = kinds.get(name, "text")
        if kind in ("image", "images"):
            values = value if kind == "images" else [value]
            refs = []
            for item in values:
                image = _rgb(item, f"{where}, input {name}")
                sha = _pixel_sha256(image)
                if sink is not None:
                    sink(sha, image)
                refs.append({_IMAGE_KEY: sha})
            encoded[name] = refs if kind == "images" else refs[0]
        else:
            encoded[name] = value
    return encoded


def _decode_value(value: Any, folder: Path | None, where: str) -> Any:
    if isinstance(value, list):
        return [_decode_value(v, folder, where) for v in value]
    if isinstance(value, dict) and set(value) == {_IMAGE_KEY}:
        if folder is None:
            raise ConfigError(f"{where} refers to an image but the program has no image folder")
        path = folder / f"{value[_IMAGE_KEY]}.png"
        if not path.is_file():
            raise InputError(
                f"{where}: demo image {path} is missing; keep the .images folder next to the "
                "compiled JSON",
                path=str(path),
            )
        return path
    return value


# -- predictor state -----------------------------------------------------------------------------
def predictor_state(predictor: Predict, name: str, sink: ImageSink | None = None) -> PredictorState:
    """``predictor``'s tunable state; images are hashed (and handed to ``sink`` to store)."""
    signature = predictor.signature
    return PredictorState(
        signature=signature.name,
        signature_sha256=signature.sha256(),
        reasoning=predictor.reasoning,
        instructions=predictor.instructions,
        input_descriptions=dict(predictor.input_descriptions),
        output_descriptions=dict(predictor.output_descriptions),
        demos=[
            DemoState(
                inputs=_encode_inputs(signature, demo.inputs, sink, f"{name} demo {i}"),
                outputs=demo.outputs,
                reasoning=demo.reasoning,
                source=demo.source,
                example_id=demo.example_id,
            )
            for i, demo in enumerate(predictor.demos, start=1)
        ],
    )


def state_sha256(states: dict[str, PredictorState]) -> str:
    text = json.dumps({k: v.model_dump(mode="json") for k, v in states.items()}, sort_keys=True)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def apply_predictor_state(
    predictor: Predict, state: PredictorState, images: Path | None, where: str
) -> None:
    """Set ``predictor``'s instructions, demos and descriptions from ``state``."""
    signature = predictor.signature
    if state.signature != signature.name:
        raise ConfigError(
            f"{where} was compiled for signature {state.signature!r}, not {signature.name!r}"
        )
    if state.signature_sha256 != signature.sha256():
        warnings.warn(
            f"{where}: the fields or output of {signature.name} changed since it was compiled; "
            "its demos may not fit (compile it again)",
            PromptVersionWarning,
            stacklevel=3,
        )
    predictor.reasoning = state.reasoning
    predictor.instructions = state.instructions
    inputs = {f.name for f in signature.inputs}
    outputs = set(signature.output_fields)
    predictor.input_descriptions.update(
        {k: v for k, v in state.input_descriptions.items() if k in inputs}
    )
    predictor.output_descriptions.update(
        {k: v for k, v in state.output_descriptions.items() if k in outputs}
    )
    predictor.demos = [
        Demo(
            inputs={
                k: _decode_value(v, images, f"{where} demo {i}") for k, v in demo.inputs.items()
            },
            outputs=demo.outputs,
            reasoning=demo.reasoning,
            source=demo.source,
            example_id=demo.example_id,
        )
        for i, demo in enumerate(state.demos, start=1)
    ]


# -- files ---------------------------------------------------------------------------------------
def write_compiled(compiled: CompiledProgram, path: Path) -> None:
    """Write the JSON atomically (a killed save never leaves half a file)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    write_atomic(path, compiled.model_dump_json(indent=2))


def image_sink(folder: Path) -> ImageSink:
    """Stores each demo image once, as ``folder/<sha256>.png``."""

    def store(sha: str, image: Image.Image) -> None:
        target = folder / f"{sha}.png"
        if target.exists():
            return
        folder.mkdir(parents=True, exist_ok=True)
        buffer = io.BytesIO()
        image.save(buffer, format="PNG")
        write_atomic(target, buffer.getvalue())

    return store


def load_compiled(path: str | Path) -> CompiledProgram:
    """Read ``compiled.json``; warns (`PromptVersionWarning`) when another medagent made it."""
    path = Path(path)
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise InputError(f"compiled prompts {path} do not exist", path=str(path)) from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise InputError(f"{path} is not a compiled prompt file ({exc})", path=str(path)) from None
    if not isinstance(data, dict) or data.get("format") != FORMAT:
        raise InputError(
            f'{path} is not a compiled prompt file (no "format": "{FORMAT}"); make one with '
            "medagent optimize",
            path=str(path),
        )
    version = data.get("format_version")
    if not isinstance(version, int) or version > FORMAT_VERSION:
        raise ConfigError(
            f"{path} has format version {version}; this medagent reads up to {FORMAT_VERSION} "
            "(upgrade medagent)"
        )
    try:
        compiled = CompiledProgram.model_validate(data)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(x) for x in first["loc"])
        raise InputError(f"{path}: {where}: {first['msg']}", path=str(path)) from None
    made_by = compiled.versions.get("medagent")
    if made_by and made_by != __version__:
        warnings.warn(
            f"{path} was compiled with medagent {made_by}; this is {__version__}: prompts may "
            "differ from what was optimized",
            PromptVersionWarning,
            stacklevel=2,
        )
    return compiled.model_copy(update={"path": path})


def now_iso() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")
