"""What the web app is allowed to do: slide roots, binding, token, limits, where state lives."""

from __future__ import annotations

import ipaddress
import os
from pathlib import Path
from urllib.parse import urlsplit

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from medagent._hosts import is_loopback
from medagent.errors import ConfigError, InputError
from medagent.imaging import REMOTE_MAX_PIXELS, normalize_archive

__all__ = ["ServerConfig", "is_loopback", "origin_netloc"]


def origin_netloc(origin: str) -> str:
    """``"http://127.0.0.1:8000"`` → ``"127.0.0.1:8000"``; the default port is dropped, so an
    Origin header compares equal to the Host header of the same server."""
    parts = urlsplit(origin.strip().lower())
    netloc = parts.netloc or parts.path  # "host:port" given without a scheme
    default = {"http": ":80", "https": ":443"}.get(parts.scheme)
    return netloc.removesuffix(default) if default else netloc


class ServerConfig(BaseModel):
    """Settings of one web app; the CLI builds it from flags, tests build it directly.

    The app refuses to exist on a non-loopback host without a token: anyone who can reach the
    port could otherwise read every slide under the roots.
    """

    model_config = ConfigDict(frozen=True)

    slide_roots: tuple[Path, ...] = Field(
        min_length=1, description="Folders whose slides may be opened; nothing outside them."
    )
    dicomweb_archives: tuple[str, ...] = Field(
        (),
        description="DICOMweb roots whose whole-slide series are listed beside the slide "
        "folders and may be opened (an exact root match; credentials from the settings).",
    )
    host: str = Field("127.0.0.1", description="Interface to bind; loopback needs no token.")
    port: int = Field(8000, ge=0, le=65535)
    token: str | None = Field(
        None,
        pattern=r"^[A-Za-z0-9._~+/=-]{16,}$",
        description="Shared secret, 16+ URL-safe characters; required off loopback.",
    )
    admin_token: str | None = Field(
        None,
        pattern=r"^[A-Za-z0-9._~+/=-]{16,}$",
        description="Secret of the admin routes (/api/admin/: every session listed, any "
        "deleted), 16+ URL-safe characters, not the token; None: those routes answer 404.",
    )
    data_dir: Path = Field(
        Path(".medagent/server"),
        description="Session table, SQLite checkpoints and crops (shared storage for replicas).",
    )
    checkpoint: str | None = Field(
        None,
        description="None: SQLite in data_dir; a file path: SQLite there; "
        "postgresql://...: Postgres (sessions table too), for several replicas.",
    )
    db_pool_min: int = Field(
        1, ge=0, description="Postgres connections a replica keeps open when idle."
    )
    db_pool_max: int = Field(
        10,
        ge=1,
        description="Most Postgres connections a replica opens for checkpoints and tables (one "
        "more holds its turn locks); replicas x (this + 1) must stay under max_connections.",
    )
    db_timeout_s: float = Field(
        5.0,
        gt=0,
        le=300,
        description="How long a request waits for the database before it is answered 503.",
    )
    allowed_hosts: tuple[str, ...] | None = Field(
        None,
        description="Host headers accepted; default without a token on loopback: localhost, "
        "127.0.0.1, ::1 (stops DNS-rebinding pages from reaching an unauthenticated server).",
    )
    allowed_origins: tuple[str, ...] = Field(
        (),
        description="Origins (scheme://host[:port]) besides the app's own whose pages may "
        "write, e.g. the public address behind a proxy that rewrites Host.",
    )
    trusted_proxies: tuple[str, ...] = Field(
        (),
        description="Addresses or networks of reverse proxies in front (e.g. 127.0.0.1) whose "
        "X-Forwarded-For names the client, so per-client limits apply per user, not to the "
        "proxy; needs a token (behind a proxy the network reaches the app).",
    )
    messages_per_minute: float = Field(20.0, gt=0, description="Per-session refill rate.")
    message_burst: int = Field(5, ge=1, description="Messages a session may send at once.")
    client_sessions_per_minute: float = Field(
        10.0, gt=0, description="Sessions one client address may open per minute, on average."
    )
    client_session_burst: int = Field(20, ge=1, description="Sessions a client may open at once.")
    client_messages_per_minute: float = Field(
        60.0, gt=0, description="Messages one client address may send per minute, all sessions."
    )
    client_message_burst: int = Field(30, ge=1, description="Messages a client may send at once.")
    max_body_kb: int = Field(
        1024, ge=1, description="Largest request body other than an upload, KiB (413 beyond)."
    )
    max_message_chars: int = Field(4000, ge=1)
    tile_size: int = Field(254, ge=64, le=1024, description="Deep Zoom tile side (+ overlap).")
    tile_overlap: int = Field(1, ge=0, le=8)
    tile_quality: int = Field(80, ge=30, le=95, description="JPEG quality of tiles.")
    tile_cache_mb: int = Field(64, ge=0, description="Encoded tiles kept in memory.")
    open_slides: int = Field(16, ge=1, description="Slides kept open for tiles.")
    open_slides_mb: int = Field(
        1024,
        ge=1,
        description="Memory the open slides may hold: a decoded plain image counts in full, "
        "an OpenSlide slide (read by tile) little.",
    )
    max_image_mpx: float = Field(
        REMOTE_MAX_PIXELS / 1e6,
        gt=0,
        description="Most megapixels a single-level image (PNG, JPEG, DICOM, untiled TIFF) may "
        "decode to, checked from its header; pyramidal slides are read by tile, unaffected.",
    )
    session_idle_hours: float = Field(
        72.0,
        ge=0,
        description="A session unused this long is deleted with its checkpoints and crops "
        "(a periodic sweep; one answering is never swept); 0: sessions never expire.",
    )
    client_max_sessions: int = Field(
        100,
        ge=0,
        description="Live sessions one client address may hold (429 beyond: delete one or let "
        "one expire); 0: no cap.",
    )
    open_agents: int = Field(256, ge=1, description="Session agents kept in memory.")
    active_turns: int = Field(
        32, ge=1, description="Turns running at once, all sessions; later ones wait their turn."
    )
    image_workers: int | None = Field(
        None,
        ge=1,
        description="Threads for the agents' image work (reading, rendering); default: one "
        "per CPU. More only take turns at the CPUs, and the event loop waits with them.",
    )
    upload_dir: Path | None = Field(
        None, description="Enables POST /api/uploads into this folder (also a slide root)."
    )
    runs_root: Path | None = Field(
        None,
        description="Folder of eval runs (manifest.json + results.jsonl) the review page lists "
        "and grades; nothing outside it is read. None: the review page is off.",
    )
    max_upload_mb: int = Field(4096, ge=1)
    upload_checks: int = Field(
        2, ge=1, description="Uploads checked (opened, decoded) at once; others wait their turn."
    )

    @field_validator("dicomweb_archives")
    @classmethod
    def _check_archives(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        for archive in value:
            try:
                normalize_archive(archive)
            except InputError as exc:
                raise ValueError(str(exc)) from None
        return tuple(dict.fromkeys(archive.strip().rstrip("/") for archive in value))

    @field_validator("trusted_proxies")
    @classmethod
    def _check_proxies(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        for proxy in value:
            try:  # an address or a network; never "*": any client could then name itself
                ipaddress.ip_network(proxy.strip(), strict=False)
            except ValueError:
                raise ValueError(
                    f"trusted proxy {proxy[:60]!r} is not an IP address or network; "
                    "give the proxy's address, e.g. 127.0.0.1 or 10.0.0.0/8"
                ) from None
        return tuple(proxy.strip() for proxy in value)

    @model_validator(mode="after")
    def _check(self) -> ServerConfig:
        if self.db_pool_min > self.db_pool_max:
            raise ValueError(
                f"db_pool_min {self.db_pool_min} is above db_pool_max {self.db_pool_max}; "
                "lower the first or raise the second"
            )
        if self.admin_token is not None and self.admin_token == self.token:
            # Every user holds the token: the admin routes would be everyone's.
            raise ValueError(
                "admin_token: it is the token every user holds; give the admin routes a "
                "secret of their own (--admin-token or MEDAGENT_ADMIN_TOKEN)"
            )
        if self.trusted_proxies and not self.token:
            raise ValueError(
                "trusted_proxies: behind a proxy the network reaches the app; set a token "
                "(--token or MEDAGENT_SERVER_TOKEN, at least 16 characters)"
            )
        if not is_loopback(self.host) and not self.token:
            raise ValueError(
                f"binding {self.host} exposes the slides to the network; set a token "
                "(--token or MEDAGENT_SERVER_TOKEN, at least 16 characters) or bind 127.0.0.1"
            )
        return self

    @classmethod
    def build(cls, **values: object) -> ServerConfig:
        """Like the constructor, but a bad value is one ``ConfigError`` line."""
        from pydantic import ValidationError

        try:
            return cls.model_validate(values)
        except ValidationError as exc:
            first = exc.errors()[0]
            where = ".".join(str(x) for x in first["loc"])
            message = str(first["msg"]).removeprefix("Value error, ")
            raise ConfigError(f"{where}: {message}" if where else message) from None

    @property
    def roots(self) -> tuple[Path, ...]:
        """Every folder slides may come from, resolved (uploads included)."""
        roots = [root.expanduser().resolve() for root in self.slide_roots]
        if self.upload_dir is not None:
            roots.append(self.upload_dir.expanduser().resolve())
        return tuple(dict.fromkeys(roots))

    @property
    def runs(self) -> Path | None:
        """The runs root, resolved; ``None`` when reviews are off."""
        return None if self.runs_root is None else self.runs_root.expanduser().resolve()

    @property
    def hosts(self) -> frozenset[str] | None:
        """Host names (without port) the app answers, or ``None`` for any."""
        if self.allowed_hosts is not None:
            return frozenset(h.lower() for h in self.allowed_hosts)
        # Without a token, a page elsewhere whose name resolves to 127.0.0.1 could otherwise
        # read everything; with one, it lacks the token (the cookie is SameSite=Strict).
        if is_loopback(self.host) and not self.token:
            return frozenset({"localhost", "127.0.0.1", "::1", self.host.strip("[]").lower()})
        return None

    @property
    def session_idle_s(self) -> float | None:
        """Seconds of disuse after which a session is swept; ``None``: never."""
        return self.session_idle_hours * 3600 if self.session_idle_hours > 0 else None

    @property
    def sweep_interval_s(self) -> float:
        """How often the sweep runs: a tenth of the idle time, between 0.5 s and 10 min."""
        idle = self.session_idle_s
        return 600.0 if idle is None else min(600.0, max(0.5, idle / 10))

    @property
    def touch_interval_s(self) -> float:
        """How often a replica writes that a session it keeps open was used: at most once a
        minute (tiles come by the hundred), and well inside the idle time, so a session
        swept elsewhere is noticed here before anything of it is served again."""
        idle = self.session_idle_s
        return 60.0 if idle is None else min(60.0, idle / 4)

    @property
    def image_threads(self) -> int:
        return self.image_workers or os.cpu_count() or 1

    @property
    def max_body_bytes(self) -> int:
        return self.max_body_kb * 1024

    @property
    def max_upload_bytes(self) -> int:
        return self.max_upload_mb * 1024 * 1024

    @property
    def max_image_pixels(self) -> int:
        return int(self.max_image_mpx * 1_000_000)

    @property
    def origins(self) -> frozenset[str]:
        """``host[:port]`` of the extra origins allowed to write (see ``allowed_origins``)."""
        return frozenset(origin_netloc(o) for o in self.allowed_origins)

    @property
    def uses_postgres(self) -> bool:
        return bool(self.checkpoint) and str(self.checkpoint).startswith(
            ("postgresql://", "postgres://")
        )
