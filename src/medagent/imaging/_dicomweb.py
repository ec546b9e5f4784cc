"""Slides in a DICOMweb archive, read frame by frame: nothing is downloaded but what a view needs.

A series is named by a reference, ``dicomweb+https://HOST/PATH/studies/UID/series/UID`` (``PATH``
is the archive's DICOMweb root, e.g. ``/dicom-web``), or by ``DicomWebRef`` in code. wsidicom
reads the series' metadata (QIDO-RS, instance metadata) and then, for every region read, only
the frames (tiles) the region covers (WADO-RS); frames decoded are kept in wsidicom's bounded
cache, so going back to a region costs nothing.

Credentials come from settings (``MEDAGENT_DICOMWEB_TOKEN``, a bearer token, or
``MEDAGENT_DICOMWEB_BASIC``, ``user:password``) and never from the reference: a reference with
``user@`` in it is refused, and neither is written in a manifest, a log or an error.
Connection errors and 429/5xx answers are retried with backoff; a 401, a missing series and an
archive that stays away are one-line errors.
"""

from __future__ import annotations

import re
import threading
from typing import Any
from urllib.parse import urlsplit

from pydantic import BaseModel, ConfigDict, Field, SecretStr

from medagent.errors import DependencyMissingError, InputError, SlideOpenError

__all__ = [
    "DICOMWEB_SCHEME",
    "DicomWebRef",
    "FrameCounter",
    "archive_read_error",
    "is_dicomweb_ref",
    "open_dicomweb",
    "parse_dicomweb_ref",
]

DICOMWEB_SCHEME = "dicomweb+"
_UID = r"[0-9]+(?:\.[0-9]+)*"
_REF = re.compile(
    rf"^(?P<base>https?://.+?)/studies/(?P<study>{_UID})/series/(?P<series>{_UID})/?$",
    re.IGNORECASE,
)
_MAX_REF = 2048
_RETRIES = 3
_BACKOFF_S = 0.5
#: Retried answers: a busy or restarting archive. A 500 is not among them: archives answer it
#: for what they will never do (Orthanc 1.10: "cannot transcode image").
_RETRY_STATUS = (429, 502, 503, 504)


class DicomWebRef(BaseModel):
    """One series in a DICOMweb archive: the archive's DICOMweb root and two UIDs."""

    model_config = ConfigDict(frozen=True)

    base_url: str = Field(description="the archive's DICOMweb root, http(s)://host/path")
    study_uid: str = Field(pattern=rf"^{_UID}$", max_length=64)
    series_uid: str = Field(pattern=rf"^{_UID}$", max_length=64)

    @property
    def url(self) -> str:
        """The reference as typed on the command line (no credentials: they never are in it)."""
        return f"{DICOMWEB_SCHEME}{self.base_url}/studies/{self.study_uid}/series/{self.series_uid}"

    @property
    def name(self) -> str:
        """A short name for prompts and pages: the series UID's last parts."""
        return "series " + ".".join(self.series_uid.split(".")[-2:])


def is_dicomweb_ref(text: str) -> bool:
    """Whether ``text`` is meant as a DICOMweb reference (malformed ones included)."""
    return text.strip().lower().startswith(DICOMWEB_SCHEME)


def parse_dicomweb_ref(text: str) -> DicomWebRef:
    """The series ``text`` names; ``InputError`` with the expected form when it names none."""
    raw = text.strip()
    if len(raw) > _MAX_REF:
        raise InputError(f"a DICOMweb reference is at most {_MAX_REF} characters")
    form = f"{DICOMWEB_SCHEME}https://HOST/DICOMWEB-ROOT/studies/STUDY-UID/series/SERIES-UID"
    if not is_dicomweb_ref(raw):
        raise InputError(f"not a DICOMweb reference; the form is {form}")
    url = raw[len(DICOMWEB_SCHEME) :]
    parts = urlsplit(url)
    if parts.username or parts.password:
        raise InputError(
            "a DICOMweb reference must not hold credentials; set MEDAGENT_DICOMWEB_TOKEN "
            "(bearer) or MEDAGENT_DICOMWEB_BASIC (user:password) instead"
        )
    if parts.query or parts.fragment:
        raise InputError(f"a DICOMweb reference has no query or fragment; the form is {form}")
    found = _REF.match(url)
    if found is None:
        raise InputError(f"cannot read the DICOMweb reference; the form is {form}")
    base = urlsplit(found["base"].rstrip("/"))
    # Scheme and host are case-blind; the path is not.
    root = f"{base.scheme.lower()}://{base.netloc.lower()}{base.path}"
    return DicomWebRef(base_url=root, study_uid=found["study"], series_uid=found["series"])


class FrameCounter:
    """How many WADO-RS frame requests and bytes a slide has fetched (for benchmarks)."""

    def __init__(self) -> None:
        self.requests = 0
        self.frames = 0
        self.bytes = 0
        self._lock = threading.Lock()

    def add(self, frames: int, size: int) -> None:
        with self._lock:
            self.requests += 1
            self.frames += frames
            self.bytes += size


def _session(
    token: SecretStr | None, basic: SecretStr | None, timeout_s: float, counter: FrameCounter
) -> Any:
    """A requests session with the credentials, a timeout, retries, and a frame counter."""
    import requests
    from requests.adapters import HTTPAdapter
    from urllib3.util.retry import Retry

    class _Adapter(HTTPAdapter):
        def send(self, request: Any, **kwargs: Any) -> Any:  # type: ignore[override]
            kwargs["timeout"] = timeout_s  # ours, not dicomweb-client's fixed 20 s
            response = super().send(request, **kwargs)
            url = str(request.url or "")
            if "/frames/" in url and response.status_code == 200:
                numbers = url.rsplit("/frames/", 1)[1].split("?")[0]
                counter.add(len(numbers.split(",")), len(response.content))
            return response

    retry = Retry(
        total=_RETRIES,
        backoff_factor=_BACKOFF_S,
        status_forcelist=_RETRY_STATUS,
        allowed_methods=frozenset({"GET"}),
        raise_on_status=False,
    )
    session = requests.Session()
    adapter = _Adapter(max_retries=retry)
    session.mount("http://", adapter)
    session.mount("https://", adapter)
    if token is not None:
        session.headers["Authorization"] = f"Bearer {token.get_secret_value()}"
    elif basic is not None:
        user, _, password = basic.get_secret_value().partition(":")
        session.auth = (user, password)
    return session


def _open_error(ref: DicomWebRef, exc: BaseException) -> SlideOpenError:
    """One line for a series that cannot be opened: what happened and what to do."""
    import requests

    where = ref.url
    status = getattr(getattr(exc, "response", None), "status_code", None)
    if status in (401, 403):
        reason = (
            f"the archive refused the credentials (HTTP {status}); set MEDAGENT_DICOMWEB_TOKEN "
            "(bearer) or MEDAGENT_DICOMWEB_BASIC (user:password)"
        )
    elif status == 404:
        reason = "the archive has no such study or series (HTTP 404); check the UIDs"
    elif type(exc).__name__ == "WsiDicomNotFoundError":
        reason = "the archive has no whole-slide image in that study and series; check the UIDs"
    elif isinstance(exc, requests.ConnectionError | requests.Timeout):
        reason = (
            f"cannot reach the archive at {ref.base_url} ({type(exc).__name__}, after "
            f"{_RETRIES} retries); check the address and that it is up"
        )
    elif status is not None:
        reason = f"the archive answered HTTP {status}"
    else:
        text = " ".join(str(exc).split())[:200]
        reason = f"cannot read the series ({type(exc).__name__}: {text})"
    return SlideOpenError(f"{where}: {reason}", path=where)


def archive_read_error(source: str, region: object, exc: BaseException) -> SlideOpenError:
    """One line for frames an archive did not deliver: down, slow or refusing, not a bad file."""
    status = getattr(getattr(exc, "response", None), "status_code", None)
    kind = f"HTTP {status}" if status else type(exc).__name__
    reason = " ".join(str(exc).split())
    if "timed out" in reason.lower() or "timeout" in kind.lower():
        kind = "no answer in time"
    elif "connection" in reason.lower():
        kind = "connection failed"
    return SlideOpenError(
        f"{source}: the archive did not deliver the frames of {region} ({kind}, after "
        f"{_RETRIES} retries); it may be down or slow: try again, or check the archive",
        path=source,
    )


def open_dicomweb(
    ref: DicomWebRef | str,
    *,
    token: SecretStr | str | None = None,
    basic: SecretStr | str | None = None,
    timeout_s: float = 30.0,
) -> Any:
    """The whole-slide series ``ref`` names, as a ``Slide`` that fetches frames as read.

    ``token``/``basic`` default to the settings (``MEDAGENT_DICOMWEB_TOKEN`` /
    ``MEDAGENT_DICOMWEB_BASIC``). The slide's ``frames`` counts what it fetched.
    """
    try:
        from wsidicom import WsiDicom, WsiDicomWebClient
    except ImportError:
        raise DependencyMissingError("wsidicom", "dicom", "Reading DICOMweb archives") from None
    from medagent.imaging._dicom_wsi import DicomWsiSlide
    from medagent.settings import Settings

    parsed = parse_dicomweb_ref(ref) if isinstance(ref, str) else ref
    if token is None and basic is None:
        settings = Settings()
        token, basic = settings.dicomweb_token, settings.dicomweb_basic
    token = SecretStr(token) if isinstance(token, str) else token
    basic = SecretStr(basic) if isinstance(basic, str) else basic
    counter = FrameCounter()
    session = _session(token, basic, timeout_s, counter)

    class _Client(WsiDicomWebClient):  # type: ignore[misc]
        """Takes a 500/501 to a probe for a transfer syntax as "not offered", like a 406:
        archives that cannot transcode (Orthanc 1.10) say so that way."""

        def is_transfer_syntax_supported(self, *args: Any) -> bool:
            from requests import HTTPError

            try:
                return bool(super().is_transfer_syntax_supported(*args))
            except HTTPError as exc:
                if getattr(exc.response, "status_code", None) in (500, 501):
                    return False
                raise

    try:
        client = _Client.create_client(parsed.base_url, auth=session)
        # The session retries (urllib3, bounded); dicomweb-client's own retries on top would
        # multiply the wait for an archive that is down (45 s per item, measured).
        client._client.set_http_retry_params(retry=False)
        wsi = WsiDicom.open_web(client, parsed.study_uid, parsed.series_uid)
    except Exception as exc:  # requests, dicomweb-client and wsidicom raise many kinds
        raise _open_error(parsed, exc) from None
    slide = DicomWsiSlide(wsi, parsed.name, format="dicomweb")
    slide.remote_source = parsed.url
    slide.frames = counter
    return slide
