"""Pieces of the self-contained HTML pages agents write next to a run (GIANT's trajectory,
MedInsight's report): one escaping rule, one way to inline a stored image, one policy.

The pages open from disk, offline, and are often mailed around, so they carry every image as a
data URL and forbid everything else (no scripts, no fetches).
"""

from __future__ import annotations

import html

from medagent.artifacts import ArtifactRef, ArtifactStore
from medagent.errors import InputError

__all__ = ["CSP", "escape", "image_tag", "missing_image"]

CSP = "default-src 'none'; img-src data:; style-src 'unsafe-inline'"
"""Content-Security-Policy of every page: inline styles and data-URL images only."""


def escape(value: object) -> str:
    """Escaped text, quotes included, so it is safe in element content and attributes alike."""
    return html.escape(str(value), quote=True)


def missing_image(artifact_id: str, why: str) -> str:
    """What stands in for an image whose file is gone: the page still opens."""
    return f'<div class="missing">image {escape(artifact_id)} is missing: {escape(why)}</div>'


def image_tag(artifacts: ArtifactStore, ref: ArtifactRef, alt: str) -> str:
    """The stored image as an ``<img>``; a placeholder when its file is gone or unreadable."""
    try:
        src = artifacts.data_url(ref)
    except (InputError, KeyError) as exc:  # KeyError: a media type the store does not know
        return missing_image(ref.id, str(exc))
    return (
        f'<img src="{escape(src)}" alt="{escape(alt)}" width="{ref.width}" height="{ref.height}">'
    )
