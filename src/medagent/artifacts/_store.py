"""A content-addressed image store: agent state and trajectories hold ids, never pixels."""

from __future__ import annotations

import hashlib
import io
import re
from pathlib import Path
from typing import Literal

from PIL import Image
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from medagent._files import write_atomic
from medagent.artifacts._encoding import data_url, to_jpeg
from medagent.errors import InputError, SlideOpenError
from medagent.imaging import DEFAULT_MAX_PIXELS, Region, decode_image, image_header_size

__all__ = ["ArtifactRef", "ArtifactStore"]

_SUFFIX = {"image/jpeg": ".jpg", "image/png": ".png"}
_ID_PATTERN = r"^[0-9a-f]{32}$"
_ID = re.compile(_ID_PATTERN)
MediaType = Literal["image/jpeg", "image/png"]


class ArtifactRef(BaseModel):
    """A small, serialisable pointer to an image in an ``ArtifactStore``.

    A reference can arrive from outside (a model's tool call, an MCP or HTTP client), so its id
    and media type are validated here: no value of them can name a file outside the store.
    Stores still resolve outside references through their own index (``ArtifactStore.resolve``).
    """

    model_config = ConfigDict(frozen=True)

    id: str = Field(
        pattern=_ID_PATTERN, description="sha256 of the stored bytes (first 32 hex digits)"
    )
    width: int = Field(ge=1)
    height: int = Field(ge=1)
    media_type: MediaType = "image/jpeg"
    kind: str | None = Field(None, description="what it is: overview, zoom, mask, overlay, …")
    region: Region | None = Field(None, description="the level-0 region it shows, if any")


class ArtifactStore:
    """Images on disk under ``root``, named by the hash of their bytes.

    Storing the same image twice costs nothing and gives the same id, so a run can be resumed
    or replayed without duplicating files. ``max_pixels`` bounds what ``get`` decodes (checked
    from the header first), for stores whose ids come from remote clients.
    """

    def __init__(self, root: str | Path, *, max_pixels: int = DEFAULT_MAX_PIXELS) -> None:
        self.root = Path(root)
        self.max_pixels = max_pixels
        self.root.mkdir(parents=True, exist_ok=True)

    def put(
        self,
        image: Image.Image,
        *,
        media_type: MediaType = "image/jpeg",
        kind: str | None = None,
        region: Region | None = None,
    ) -> ArtifactRef:
        """Store ``image`` (JPEG by default, PNG for masks that must stay lossless).

        ``kind`` and ``region`` travel with the reference, so whoever holds the id knows what
        the image shows without opening it.
        """
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
            write_atomic(path, data)
        ref = ArtifactRef(
            id=artifact_id,
            width=image.width,
            height=image.height,
            media_type=media_type,
            kind=kind,
            region=region,
        )
        # A sidecar keeps what the image shows, so an id alone (from a model) is enough.
        write_atomic(self.root / f"{artifact_id}.json", ref.model_dump_json())
        return ref

    def find(self, artifact_id: str) -> ArtifactRef:
        """The reference for an id, e.g. one a model quoted; ``InputError`` when unknown.

        Only this store's own files are looked at, and an id elsewhere on disk gets the same
        answer as an id nowhere: the reply cannot be used to probe for files.
        """
        if not isinstance(artifact_id, str) or not _ID.fullmatch(artifact_id):
            shown = artifact_id[:40] if isinstance(artifact_id, str) else type(artifact_id)
            raise InputError(f"{shown!r} is not an artifact id (32 hex digits, as returned)")
        sidecar = self.root / f"{artifact_id}.json"
        if sidecar.exists():
            try:
                return ArtifactRef.model_validate_json(sidecar.read_bytes())
            except ValidationError:
                raise InputError(
                    f"the record of artifact {artifact_id} is damaged; delete it from the "
                    "run's images and rerun",
                    path=str(sidecar),
                ) from None
        for media_type, suffix in _SUFFIX.items():
            path = self.root / f"{artifact_id}{suffix}"
            if path.exists():
                width, height = image_header_size(path, name=f"artifact {artifact_id}")
                return ArtifactRef(
                    id=artifact_id, width=width, height=height, media_type=media_type
                )
        raise _no_such(artifact_id)

    def resolve(self, ref: str | ArtifactRef) -> ArtifactRef:
        """This store's own reference for an id or a reference from outside.

        Only the id of an outside reference is used; size, media type and region come from the
        store's index, so a reference a client made up cannot point at anything but this
        store's images. ``InputError`` ("no such artifact") when the store does not hold it.
        """
        return self.find(ref.id if isinstance(ref, ArtifactRef) else ref)

    def path(self, ref: ArtifactRef) -> Path:
        """Where the artifact's bytes live: always a file directly inside ``root``.

        Checked again here, because a reference built without validation
        (``ArtifactRef.model_construct``) could otherwise name any file.
        """
        suffix = _SUFFIX.get(ref.media_type)
        if suffix is None or not isinstance(ref.id, str) or not _ID.fullmatch(ref.id):
            raise _no_such(ref.id if isinstance(ref.id, str) else "")
        return self.root / f"{ref.id}{suffix}"

    def read_bytes(self, ref: ArtifactRef) -> bytes:
        """The stored bytes; a one-line ``InputError`` when the file is gone."""
        path = self.path(ref)
        try:
            return path.read_bytes()
        except FileNotFoundError:
            raise InputError(
                f"artifact {ref.id} is missing from the run's images; was the run folder moved?",
                path=str(path),
            ) from None

    def get(self, ref: ArtifactRef) -> Image.Image:
        """The stored image, decoded."""
        try:
            data = self.read_bytes(ref)
            return decode_image(data, max_pixels=self.max_pixels, name=f"artifact {ref.id}").image
        except SlideOpenError as exc:
            raise InputError(
                f"{exc}; delete the file from the run's images and rerun", path=str(self.path(ref))
            ) from None

    def data_url(self, ref: ArtifactRef) -> str:
        """The artifact as a ``data:`` URL, built only when a request needs it."""
        return data_url(self.read_bytes(ref), ref.media_type)


def _no_such(artifact_id: str) -> InputError:
    # Say nothing of where the store lives or what else is on disk: the id may come from a
    # remote client.
    shown = artifact_id if _ID.fullmatch(artifact_id) else "with that id"
    return InputError(f"no such artifact {shown} in this run's images")
