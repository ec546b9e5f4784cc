"""The kernel every agent uses: its run folder and manifest, what it tells the model about the
image, how it asks for a structured answer, how answers are normalised, the blocking wrapper.

An agent folder (``giant/``, ``insight/``, ``rag/``, ``chat/``) holds its graph, its prompts'
wiring and its results; whatever two agents would otherwise each write lives here, so no agent
imports from another's folder. The pieces:

- ``RunManifest`` — what ran (agent, method, model, backend, config, prompt hashes, versions,
  seed), written first into every run folder (``new_run_dir``), read back on resume.
- ``image_words`` / ``render_long_side`` — the two facts the model is told about every image:
  what it is (from ``Slide.modality``) and at what scale it is shown (the long side the model
  will really receive, so the stated µm or mm per pixel is true of the pixels sent).
- ``medagent.models.generate_structured`` — the one structured-ask loop; agents pass their own
  correction wording as its ``correction`` hook.
- ``normalize_answer`` / ``majority_vote`` — free-text answers to predictions.
- ``run_sync`` — the blocking form of an agent's ``arun``, notebooks included.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import hashlib
import uuid
from collections.abc import Coroutine
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TypeVar

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from medagent._files import write_json_atomic
from medagent._version import package_versions
from medagent.agents._answers import majority_vote, normalize_answer
from medagent.errors import InputError
from medagent.imaging import Slide
from medagent.models import ChatModel, image_cap
from medagent.prompts import Program

__all__ = [
    "MANIFEST",
    "ProgramRef",
    "RunManifest",
    "image_words",
    "majority_vote",
    "new_run_dir",
    "normalize_answer",
    "render_long_side",
    "run_sync",
    "text_sha256",
]

T = TypeVar("T")

#: The manifest's file name inside a run folder.
MANIFEST = "manifest.json"


def text_sha256(text: str) -> str:
    """The content hash recorded for a prompt (template or as rendered for a run)."""
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def new_run_dir(runs_dir: str | Path, prefix: str = "") -> Path:
    """A fresh folder name under ``runs_dir``: sortable by time, unique across processes."""
    stamp = datetime.now(UTC).strftime("%Y%m%d-%H%M%S")
    return Path(runs_dir) / f"{prefix}{stamp}-{uuid.uuid4().hex[:6]}"


class ProgramRef(BaseModel):
    """Which compiled prompt program a run used."""

    model_config = ConfigDict(frozen=True)

    name: str
    sha256: str

    @classmethod
    def of(cls, program: Program | None) -> ProgramRef | None:
        """The reference to record for ``program`` (``None`` when the defaults were used)."""
        return None if program is None else cls(name=program.name, sha256=program.sha256())


class RunManifest(BaseModel):
    """What ran, written before anything else into the run folder (``manifest.json``).

    ``inputs`` holds what the agent was asked (question and options, goal and images, ...);
    ``prompts`` the hash of every template the agent can use; ``rendered_prompts`` the hash of
    prompts as filled for this run (the system prompt names the image kind, so a radiograph and
    a slide hash differently).
    """

    model_config = ConfigDict(frozen=True)

    run_id: str = Field(default_factory=lambda: uuid.uuid4().hex[:12])
    agent: str
    method: str
    inputs: dict[str, Any] = Field(default_factory=dict)
    model: str
    backend: str
    config: dict[str, Any] = Field(default_factory=dict)
    prompts: dict[str, str] = Field(default_factory=dict)
    rendered_prompts: dict[str, str] = Field(default_factory=dict)
    prompt_program: ProgramRef | None = None
    image_long_side: int | None = Field(
        None, description="the long side, in pixels, of the images the model was sent"
    )
    versions: dict[str, str] = Field(default_factory=package_versions)
    seed: int | None = None
    created_at: str = Field(default_factory=lambda: datetime.now(UTC).isoformat())

    @classmethod
    def for_model(cls, model: ChatModel, **fields: Any) -> RunManifest:
        """A manifest naming ``model`` and its backend; ``fields`` fill the rest."""
        return cls(model=model.name, backend=type(model).__name__, **fields)

    def write(self, directory: Path) -> Path:
        """Write (atomically) into ``directory``, creating it."""
        directory.mkdir(parents=True, exist_ok=True)
        path = directory / MANIFEST
        write_json_atomic(path, self.model_dump(mode="json"))
        return path

    def with_rendered(self, **rendered: str) -> RunManifest:
        """A copy that also records the hash of each prompt as rendered (name → text)."""
        hashes = {**self.rendered_prompts, **{k: text_sha256(v) for k, v in rendered.items()}}
        return self.model_copy(update={"rendered_prompts": hashes})

    @classmethod
    def find(cls, directory: Path) -> RunManifest | None:
        """The manifest in ``directory``; ``None`` when there is none or it was cut short
        (a crash while writing: the run starts again)."""
        try:
            return cls.model_validate_json((directory / MANIFEST).read_bytes())
        except (FileNotFoundError, NotADirectoryError, ValidationError, ValueError):
            return None

    @classmethod
    def read(cls, directory: Path) -> RunManifest:
        """The manifest of a run to resume; ``InputError`` says why when there is none."""
        path = directory / MANIFEST
        if not path.is_file():
            raise InputError(
                f"{directory} is not a run folder (no {MANIFEST}); give the folder a run wrote",
                path=str(directory),
            )
        found = cls.find(directory)
        if found is None:
            raise InputError(
                f"{path} is damaged (cut short by a crash?); start the run again",
                path=str(path),
            )
        return found


def image_words(slide: Slide, mpp: float | None = None) -> dict[str, str]:
    """Template slots that say truly what ``slide`` is, for every agent's prompts.

    ``reader`` (pathologist, radiologist, ...), ``image`` (whole-slide pathology image,
    radiograph, CT slice, ...), ``a_image`` (with its article), ``whole`` (the whole slide /
    image), ``spacing`` (level-0 spacing in the kind's unit, or "pixel spacing unknown" —
    never a guessed unit). ``mpp`` overrides the spacing stated (e.g. of a rendered view).
    """
    kind = slide.modality
    return {
        "reader": kind.reader,
        "image": kind.name,
        "a_image": f"{kind.article} {kind.name}",
        "whole": kind.whole,
        "spacing": kind.spacing(mpp if mpp is not None else slide.mpp_x),
    }


def render_long_side(model: ChatModel, wanted: int) -> int:
    """The long side to render views at so the model receives them unchanged.

    A backend may cap what it sends (``image_long_side``: a server's or model's limit);
    rendering above the cap would have the image shrunk after the prompt stated its scale.
    """
    cap = image_cap(model)
    return min(wanted, cap) if cap else wanted


def run_sync(coroutine: Coroutine[Any, Any, T]) -> T:
    """Run an agent's coroutine to the end from blocking code, inside a notebook's running
    event loop too (there it runs on a worker thread with its own loop)."""
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return asyncio.run(coroutine)
    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        return pool.submit(asyncio.run, coroutine).result()
