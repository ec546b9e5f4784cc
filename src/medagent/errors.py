"""Every error medagent raises on purpose.

The hierarchy::

    MedagentError                 anything medagent reports to a user
    ├── ConfigError               a setting, flag or argument is wrong
    ├── DependencyMissingError    an optional extra is not installed
    ├── InputError                a file or path the user gave cannot be used
    │   ├── SlideOpenError        an image or slide file cannot be opened
    │   └── PathRefusedError      a path from a client would leave the allowed folders
    ├── RegionError               a region to read is empty, outside the image or too large
    ├── PHIRefusedError           an associated image (label, macro) was asked for without consent
    ├── DatabaseUnavailableError  the server's database (Postgres) cannot be reached right now
    └── ModelError                talking to a model failed
        ├── ModelUnavailableError the server cannot be reached (after retries)
        ├── ModelTimeoutError     the server did not answer in time (after retries)
        └── ModelResponseError    the server answered, but with an error or an unreadable body

Each message says what was wrong and what to do, on one line. The CLI prints the message and
exits 2; anything that is not a ``MedagentError`` is a bug and keeps its traceback. A model that
*answers* badly (invalid JSON, wrong schema) is not an exception: the structured-output helper
returns a typed failure instead (see ``medagent.models.StructuredFailure``).
"""

from __future__ import annotations

__all__ = [
    "ConfigError",
    "DatabaseUnavailableError",
    "DependencyMissingError",
    "InputError",
    "MedagentError",
    "ModelError",
    "ModelResponseError",
    "ModelTimeoutError",
    "ModelUnavailableError",
    "PHIRefusedError",
    "PathRefusedError",
    "RegionError",
    "SlideOpenError",
]


class MedagentError(Exception):
    """Root of every error medagent raises on purpose; its message is meant for a user."""


class ConfigError(MedagentError):
    """A setting, CLI flag or argument is missing, contradictory or out of range."""


class DependencyMissingError(MedagentError):
    """An optional dependency is missing; the message names the extra that provides it."""

    def __init__(self, package: str, extra: str, purpose: str) -> None:
        self.package = package
        self.extra = extra
        super().__init__(
            f"{purpose} needs the Python package '{package}', which is not installed; "
            f"install it with: pip install 'medagent[{extra}]'"
        )


class InputError(MedagentError):
    """A file or path given by the user is missing, unreadable or of the wrong kind."""

    def __init__(self, message: str, *, path: str | None = None) -> None:
        self.path = path
        super().__init__(message)


class PathRefusedError(InputError):
    """A path from a client (web request, MCP call) would leave the allowed folders: ``..``,
    an absolute path elsewhere, percent-encoded traversal, a symlink that leads out."""


class SlideOpenError(InputError):
    """An image or slide file cannot be opened; the message names the file and the reason."""


class RegionError(MedagentError):
    """A region cannot be read: zero area, entirely outside the image, or over the read budget."""


class PHIRefusedError(MedagentError):
    """Associated images (label, macro) may show patient identifiers and were not allowed."""


class DatabaseUnavailableError(MedagentError):
    """The database holding sessions and checkpoints cannot be reached (down, restarting, out
    of connections); the web app answers 503 and reconnects by itself when it is back."""


class ModelError(MedagentError):
    """Talking to a model backend failed; ``endpoint`` names where, when there is one."""

    def __init__(self, message: str, *, endpoint: str | None = None) -> None:
        self.endpoint = endpoint
        super().__init__(message)


class BudgetExhaustedError(ModelError):
    """The spend cap (``--budget-usd``) would be exceeded by the next model call: the run stops
    there, keeping what it finished; a rerun with a higher budget resumes it."""


class ModelUnavailableError(ModelError):
    """The model server could not be reached, even after retries."""


class ModelTimeoutError(ModelError):
    """The model server did not answer within the timeout, even after retries."""


class ModelResponseError(ModelError):
    """The server answered with an error status or a body that is not a chat completion."""

    def __init__(
        self,
        message: str,
        *,
        endpoint: str | None = None,
        status_code: int | None = None,
        body: str | None = None,
    ) -> None:
        self.status_code = status_code
        self.body = body
        super().__init__(message, endpoint=endpoint)
