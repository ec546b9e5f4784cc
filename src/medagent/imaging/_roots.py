"""Slide paths from outside (a web request, an MCP call) resolved under configured roots.

Anything that takes a path from a client — the web app, the MCP server — goes through
``resolve_under_roots``, so one set of rules decides what may be opened: ``..`` parts,
absolute paths outside the roots, percent-encoded traversal and symlinks that lead out are
refused. The check is made on the fully resolved path (symlinks followed), so a link inside a
root that points elsewhere cannot be used to escape.

A client may also name a series in a DICOMweb archive (``dicomweb+https://…``):
``resolve_slide_source`` accepts it only when its archive root is, exactly, one the server
allows — never a prefix, so ``https://pacs.example.evil`` is not ``https://pacs.example`` —
because the server sends its own archive credentials with every request it makes there.
"""

from __future__ import annotations

import errno
import logging
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlsplit

from medagent.errors import InputError, MedagentError, PathRefusedError
from medagent.imaging._dicomweb import DicomWebRef, is_dicomweb_ref, parse_dicomweb_ref

__all__ = [
    "SLIDE_SUFFIXES",
    "PathHider",
    "list_archive_series",
    "list_under_roots",
    "normalize_archive",
    "resolve_slide_source",
    "resolve_under_roots",
]

_MAX_DECODES = 4
_LOG = logging.getLogger("medagent.paths")

#: What a slide listing offers: whole-slide formats, plain images, DICOM.
SLIDE_SUFFIXES = frozenset(
    {".svs", ".ndpi", ".mrxs", ".scn", ".vms", ".vmu", ".bif", ".svslide", ".tif", ".tiff"}
    | {".png", ".jpg", ".jpeg", ".bmp", ".webp", ".dcm"}
)


def _decoded_forms(requested: str) -> list[str]:
    """The text and each successive percent-decoding of it (double encoding included)."""
    forms = [requested]
    for _ in range(_MAX_DECODES):
        decoded = unquote(forms[-1])
        if decoded == forms[-1]:
            break
        forms.append(decoded)
    return forms


def _has_parent_part(text: str) -> bool:
    return any(part == ".." for part in text.replace("\\", "/").split("/"))


def resolve_under_roots(requested: str, roots: Sequence[Path]) -> Path:
    """The existing file or folder ``requested`` names under one of ``roots``, resolved.

    ``requested`` is relative to a root (tried in order) or absolute inside one. Raises
    ``PathRefusedError`` for paths that would leave the roots and ``InputError`` when nothing
    by that name exists under them; both messages are one line.
    """
    if not roots:
        raise InputError("no slide folders are configured; pass --slides DIR")
    if not requested or not requested.strip():
        raise PathRefusedError("an empty slide path was given; name a file under the slide folder")
    if "\x00" in requested:
        raise PathRefusedError("the slide path contains a NUL byte")
    if any(_has_parent_part(form) for form in _decoded_forms(requested)):
        raise PathRefusedError(f"slide path {requested!r} contains '..'; give a path inside")
    resolved_roots = [Path(root).expanduser().resolve() for root in roots]
    shown = _shown(requested)
    if os.path.isabs(requested):
        candidates = [Path(requested)]
    else:
        candidates = [root / requested for root in resolved_roots]
    outside = False
    for candidate in candidates:
        try:
            resolved = candidate.resolve()
            if not any(resolved.is_relative_to(root) for root in resolved_roots):
                outside = True
                continue
            if resolved.exists():
                return resolved
        except (OSError, RuntimeError) as exc:  # RuntimeError: a symlink loop (Python 3.11)
            raise InputError(f"slide path {shown}: {_os_reason(exc)}") from None
    # The roots are server paths: a reply to a client never names them.
    if outside:
        raise PathRefusedError(
            f"slide path {shown} is outside the slide folders; give a path inside one of them"
        )
    raise InputError(f"no file {shown} under the slide folders")


def normalize_archive(url: str) -> str:
    """A DICOMweb root as compared: scheme and host in lower case, no trailing slash.

    Anything but a plain ``http(s)://HOST[:PORT]/PATH`` is an ``InputError``: a user, a query, a
    fragment, percent-encoding, a backslash, ``.``/``..`` parts or control characters — forms
    that could make two spellings of one archive differ, or two archives look alike.
    """
    text = url.strip()
    shown = _shown(text)
    if any(not 0x21 <= ord(c) <= 0x7E or c in "\\%@" for c in text):
        raise InputError(
            f"DICOMweb root {shown}: plain ASCII only, no spaces, '\\', '%' or '@' in it"
        )
    parts = urlsplit(text)
    if parts.scheme.lower() not in ("http", "https") or not parts.hostname:
        raise InputError(f"DICOMweb root {shown}: give http(s)://HOST/PATH")
    if parts.query or parts.fragment or "?" in text or "#" in text:
        raise InputError(f"DICOMweb root {shown}: no query or fragment in it")
    if any(part in (".", "..") for part in parts.path.split("/")):
        raise InputError(f"DICOMweb root {shown}: no '.' or '..' parts in it")
    return f"{parts.scheme.lower()}://{parts.netloc.lower()}{parts.path.rstrip('/')}"


def resolve_slide_source(
    requested: str, roots: Sequence[Path], archives: Sequence[str]
) -> Path | DicomWebRef:
    """What a client's ``slide`` names: a file under ``roots`` (``resolve_under_roots``) or a
    series in one of ``archives`` (DICOMweb roots), refused unless its root equals one of them.

    The returned reference carries the archive root as configured. Refusals are one-line
    ``PathRefusedError``s and malformed references ``InputError``s; neither names the allowed
    archives, which are the server's business.
    """
    if not is_dicomweb_ref(requested):
        return resolve_under_roots(requested, roots)
    if not archives:
        raise PathRefusedError(
            "this server opens no DICOMweb archive; give a path under the slide folders"
        )
    ref = parse_dicomweb_ref(requested)
    refused = PathRefusedError(
        f"DICOMweb archive {_shown(ref.base_url)} is not one this server may open"
    )
    try:
        wanted = normalize_archive(ref.base_url)
    except InputError:
        raise refused from None
    allowed = {normalize_archive(archive): archive.strip().rstrip("/") for archive in archives}
    if wanted not in allowed:
        raise refused
    return ref.model_copy(update={"base_url": allowed[wanted]})


class PathHider:
    """Takes a server's own folders out of text meant for a remote client.

    ``folders`` maps each folder to how a client is told of it (``"."``, "the slide folder");
    a path inside one shows relative to it. Both the spelling given and the resolved one are
    matched, the longest first, so a nested folder is replaced before its parent.
    """

    def __init__(self, folders: Mapping[Path, str]) -> None:
        found: dict[str, str] = {}
        for folder, shown in folders.items():
            for form in (folder.expanduser().absolute(), folder.expanduser().resolve()):
                found.setdefault(str(form), shown)
        self._folders = sorted(found.items(), key=lambda item: len(item[0]), reverse=True)

    def __call__(self, text: str) -> str:
        for folder, shown in self._folders:
            text = text.replace(folder + os.sep, "").replace(folder, shown)
        return text


def _shown(requested: str) -> str:
    """The requested path as quoted in a message: bounded, whatever a client sent."""
    return repr(requested if len(requested) <= 120 else requested[:117] + "...")


def _os_reason(exc: OSError | RuntimeError) -> str:
    """One line for what the filesystem said, without the server paths it names."""
    if isinstance(exc, RuntimeError) or exc.errno == errno.ELOOP:
        return "is a symlink loop; fix or remove the link"
    if exc.errno == errno.ENAMETOOLONG:
        return "a name in it is too long for the filesystem (255 bytes at most)"
    if exc.errno == errno.EACCES:
        return "permission denied"
    return f"cannot be read ({exc.strerror or type(exc).__name__})"


def _log_walk_error(exc: OSError) -> None:
    _LOG.warning("slide listing skips %s: %s", exc.filename, exc.strerror or exc)


def list_under_roots(
    roots: Sequence[Path], *, limit: int = 500, contains: str | None = None
) -> list[str]:
    """Slide files under ``roots`` (and DICOM WSI series folders, one entry each), as names
    ``resolve_under_roots`` accepts, sorted per root, at most ``limit``: what a client may
    open, and nothing it would be refused.

    Hidden files and folders are skipped, linked folders are not entered, and a file linking
    out of the roots is left out. A name an earlier root shadows is given as its absolute path.
    """
    found: list[str] = []
    for root in (Path(r).expanduser().resolve() for r in roots):
        # Neither walk errors nor a bad entry may fail the whole listing: log and go on.
        for folder, dirs, files in os.walk(root, onerror=_log_walk_error):
            dirs[:] = sorted(d for d in dirs if not d.startswith("."))
            names = sorted(files)
            if Path(folder) != root and _is_dicom_wsi_series(Path(folder)):
                # A DICOM WSI series is one slide: its folder, not each level's file.
                dirs[:], names = [], [""]
            for name in names:
                if name and (Path(name).suffix.lower() not in SLIDE_SUFFIXES or name[0] == "."):
                    continue
                path = Path(folder) / name if name else Path(folder)
                relative = path.relative_to(root).as_posix()
                if contains and contains.lower() not in relative.lower():
                    continue
                try:
                    resolved = resolve_under_roots(relative, roots)
                    real = path.resolve()
                except (InputError, OSError, RuntimeError) as exc:
                    # refused (a link out), vanished, a symlink loop: not listed, but said
                    _LOG.warning("slide listing skips %s: %s", relative, exc)
                    continue
                found.append(relative if resolved == real else str(real))
                if len(found) >= limit:
                    return found
    return found


def _is_dicom_wsi_series(folder: Path) -> bool:
    from medagent.imaging._dicom_wsi import dicom_wsi_files

    return bool(dicom_wsi_files(folder))


#: DICOM JSON tags QIDO-RS answers carry: Study / Series Instance UID.
_STUDY_UID, _SERIES_UID = "0020000D", "0020000E"


def _uids(answer: Any, tag: str) -> list[str]:
    """The UIDs under ``tag`` in a QIDO-RS answer (DICOM JSON); nothing from a malformed one."""
    found: list[str] = []
    for entry in answer if isinstance(answer, list) else []:
        value = entry.get(tag, {}).get("Value") if isinstance(entry, dict) else None
        if isinstance(value, list) and value and isinstance(value[0], str):
            found.append(value[0])
    return found


def list_archive_series(
    archives: Sequence[str], *, limit: int = 200, timeout_s: float = 10.0
) -> list[str]:
    """The whole-slide series (Modality SM) in ``archives``, as ``dicomweb+`` references that
    ``resolve_slide_source`` accepts, at most ``limit``: QIDO-RS ``/studies``, then each
    study's ``/series?Modality=SM``.

    Credentials come from the settings, as for reading. An archive that refuses, is down or
    answers nonsense is left out and logged: a listing never fails.
    """
    from medagent.imaging._dicomweb import FrameCounter, _session
    from medagent.settings import Settings

    found: list[str] = []
    if not archives or limit <= 0:
        return found
    settings = Settings()
    try:
        session = _session(
            settings.dicomweb_token, settings.dicomweb_basic, timeout_s, FrameCounter()
        )
    except ImportError:
        _LOG.warning("slide listing skips DICOMweb archives: requests is not installed")
        return found
    session.headers["Accept"] = "application/dicom+json"
    for archive in archives:
        root = archive.strip().rstrip("/")
        try:
            studies = _qido(session, f"{root}/studies", {"limit": str(limit)})
            for study in _uids(studies, _STUDY_UID):
                series = _qido(session, f"{root}/studies/{study}/series", {"Modality": "SM"})
                for uid in _uids(series, _SERIES_UID):
                    try:
                        ref = DicomWebRef(base_url=root, study_uid=study, series_uid=uid)
                    except ValueError:  # not a UID: an archive's data, not ours to serve
                        continue
                    found.append(ref.url)
                    if len(found) >= limit:
                        return found
        except (OSError, ValueError, MedagentError) as exc:  # requests' errors are OSErrors
            # The archive's address is the server's own business: logged, never replied.
            _LOG.warning("slide listing skips DICOMweb archive %s: %s", root, exc)
    return found


def _qido(session: Any, url: str, params: dict[str, str]) -> Any:
    """One QIDO-RS search: its DICOM JSON, ``[]`` for 204 (no matches)."""
    response = session.get(url, params=params)
    if response.status_code == 204:
        return []
    if response.status_code != 200:
        raise InputError(f"QIDO-RS {url} answered HTTP {response.status_code}")
    return response.json()
