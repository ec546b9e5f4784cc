"""Secrets never reach a log: the token is rewritten in every record the server writes.

The access log prints each request line, so ``GET /?token=…`` (how a browser first opens a
server with a token) would put the token in every log file. A filter on uvicorn's handlers,
the root handlers and Python's last-resort handler rewrites ``token=…`` (query strings, the
cookie), ``Bearer …`` and the token itself, wherever it appears, including tracebacks.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Iterable

__all__ = ["REDACTED", "RedactSecrets", "redact_logs"]

REDACTED = "REDACTED"
_PATTERNS = (
    re.compile(r"(?i)(token=)[^&\s\"';,]+"),  # ?token=…, medagent_token=… (cookie)
    re.compile(r"(?i)(bearer\s+)[^\s\"';,]+"),  # Authorization: Bearer …
)
#: Loggers whose handlers write what the server logs (uvicorn's access and error logs, and the
#: root logger that medagent's own loggers propagate to).
_LOGGERS = ("uvicorn", "uvicorn.error", "uvicorn.access", "")


class RedactSecrets(logging.Filter):
    """Rewrites secrets in a record's message, arguments and traceback; never drops a record."""

    def __init__(self, secrets: Iterable[str] = ()) -> None:
        super().__init__()
        self._secrets = tuple(s for s in secrets if s)

    def clean(self, text: str) -> str:
        for secret in self._secrets:
            text = text.replace(secret, REDACTED)
        for pattern in _PATTERNS:
            text = pattern.sub(rf"\g<1>{REDACTED}", text)
        return text

    def _clean_value(self, value: object) -> object:
        return self.clean(value) if isinstance(value, str) else value

    def filter(self, record: logging.LogRecord) -> bool:
        if isinstance(record.msg, str):
            record.msg = self.clean(record.msg)
        # The argument tuple keeps its shape: uvicorn's access formatter unpacks it.
        if isinstance(record.args, tuple):
            record.args = tuple(self._clean_value(a) for a in record.args)
        elif isinstance(record.args, dict):
            record.args = {k: self._clean_value(v) for k, v in record.args.items()}
        if record.exc_info and not record.exc_text:
            record.exc_text = self.clean(logging.Formatter().formatException(record.exc_info))
        return True


def redact_logs(token: str | None) -> RedactSecrets:
    """Install the filter on every handler the server's logs go through; call it after
    uvicorn has configured logging (``uvicorn.Config(...)``), since that replaces handlers."""
    redact = RedactSecrets([token] if token else [])
    for name in _LOGGERS:
        logger = logging.getLogger(name)
        logger.addFilter(redact)
        for handler in logger.handlers:
            handler.addFilter(redact)
    if logging.lastResort is not None:
        logging.lastResort.addFilter(redact)
    return redact
