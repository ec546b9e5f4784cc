"""A content-addressed image store: agent state and trajectories hold ids, never pixels."""

from __future__ import annotations

import hashlib
import io
from pathlib import Path

from PIL import Image, UnidentifiedImageError
from pydantic import BaseModel, ConfigDict, Field

from medagent.artifacts._encoding import data_url, to_jpeg
from medagent.errors import InputError

__all__ = ["ArtifactRef", "ArtifactStore"]

_SUFFIX = {"image/jpeg": ".jpg", "image/png": ".png"}


class ArtifactRef(BaseModel):
    """A small, serialisable pointer to an image in an ``ArtifactStore``."""

    model_config = ConfigDict(frozen=True)

    id: str = Field(description="sha256 of the stored bytes (first 32 hex digits)")
    width: int
    height: int
    media_type: str = "image/jpeg"


class ArtifactStore:
    """Images on disk under ``root``, named by the hash of their bytes.

    Storing the same image twice costs nothing and gives the same id, so a run can be resumed
    or replayed without duplicating files.
    """

    def __init__(self, root: str | Path) -> None:
        self.root = Path(root)
        self.root.mkdir(parents=True, exist_ok=True)

    def put(self, image: Image.Image, *, media_type: str = "image/jpeg") -> ArtifactRef:
        """Store ``image`` (JPEG by default, PNG for masks that must stay lossless)."""
        if media_type == "image/jpeg":
            data = to_jpeg(image)
        elif media_type == "image/png":
            buffer = io.BytesIO()
            image.save(buffer, format="PNG")
            data = buffer.getvalue()
        else:
            raise ValueError(f"unsupported media type {media_type!r}")
        artifact_id = hashlib.sha256(data).hexdigest()[:32]
        path = self.root / f"{artifact_id}{_SUFFIX[media_type]}"
        if not path.exists():
            tmp = path.with_suffix(path.suffix + ".tmp")
            tmp.write_bytes(data)
            tmp.replace(path)
        return ArtifactRef(
            id=artifact_id, width=image.width, height=image.height, media_type=media_type
        )

    def path(self, ref: ArtifactRef) -> Path:
        """Where the artifact's bytes live."""
        return self.root / f"{ref.id}{_SUFFIX[ref.media_type]}"

    def read_bytes(self, ref: ArtifactRef) -> bytes:
        """The stored bytes; a one-line ``InputError`` when the file is gone."""
        path = self.path(ref)
        try:
            return path.read_bytes()
        except FileNotFoundError:
            raise InputError(
                f"artifact {ref.id} is missing from {self.root}; was the run folder moved?",
                path=str(path),
            ) from None

    def get(self, ref: ArtifactRef) -> Image.Image:
        """The stored image, decoded."""
        try:
            image = Image.open(io.BytesIO(self.read_bytes(ref)))
            image.load()
        except UnidentifiedImageError:
            raise InputError(
                f"artifact {ref.id} in {self.root} is not a readable image; delete it and rerun",
                path=str(self.path(ref)),
            ) from None
        return image

    def data_url(self, ref: ArtifactRef) -> str:
        """The artifact as a ``data:`` URL, built only when a request needs it."""
        return data_url(self.read_bytes(ref), ref.media_type)
