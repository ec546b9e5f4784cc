"""The ``medagent`` command line.

Errors medagent expects are printed as one line with exit code 2; ``--debug`` shows the
traceback. Commands live in one module per group (``_model``, ``_slide``, ``_ask``, ``_eval``).
"""

from __future__ import annotations

import signal
import sys
import threading

from pydantic import ValidationError

from medagent.cli import (  # noqa: F401 - register
    _ask,
    _chat,
    _data,
    _eval,
    _export,
    _insight,
    _model,
    _optimize,
    _retrieval,
    _serve,
    _sessions,
    _slide,
)
from medagent.cli._app import app, build_settings, err_console, validation_line
from medagent.errors import MedagentError

__all__ = ["app", "build_settings", "main"]


def _interruptible() -> None:
    """Make Ctrl-C / ``kill -INT`` stop any command cleanly however it was started.

    A job started in the background of a non-interactive shell (``cmd &``, many CI runners)
    inherits SIGINT as ignored, and Python then installs no KeyboardInterrupt handler: ``kill
    -INT`` would do nothing. Every command leaves resumable state on disk, so each takes the
    signal back.
    """
    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGINT, signal.default_int_handler)


def main() -> None:
    """Entry point of the ``medagent`` console script."""
    debug = "--debug" in sys.argv[1:]
    _interruptible()
    try:
        app()
    except MedagentError as exc:
        if debug:
            raise
        err_console.print(f"error: {exc}", markup=False, highlight=False, soft_wrap=True)
        sys.exit(2)
    except ValidationError as exc:
        # A value from the user no command checked first: still one line, not a pydantic dump.
        if debug:
            raise
        err_console.print(
            f"error: {validation_line(exc)}", markup=False, highlight=False, soft_wrap=True
        )
        sys.exit(2)
    except KeyboardInterrupt:
        err_console.print("interrupted", markup=False)
        sys.exit(130)
