"""The boundary between decoders and the rest of medagent: one-line errors, warnings as notes.

Decoders fail in their own ways: pydicom returns an empty dataset for a cut header, PIL raises
half a dozen exception types, OpenSlide raises its own, tifffile others, and several of them
print warnings on the way. ``decoder_boundary`` wraps every call into a decoder (``open_image``
and every ``Slide.read``): a ``MedagentError`` passes through, anything else becomes one
``SlideOpenError`` naming the file and what failed, and Python warnings raised inside are kept
as notes instead of reaching stderr.

Warnings are captured per thread (the tile server reads in worker threads): a filter whose
message matcher is true only in a capturing thread makes the warning show "always" there, and
a ``showwarning`` hook hands it to that thread's notes. Other threads keep their own filters.
"""

from __future__ import annotations

import threading
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, TextIO, cast

from medagent.errors import MedagentError, SlideOpenError

__all__ = ["captured_warnings", "decoder_boundary", "failure_reason", "one_line"]

#: Longest reason or note kept from a library's message.
_MAX_TEXT = 160


def one_line(text: str, *, hide: str | None = None) -> str:
    """The first line of ``text``, shortened, with ``hide`` (a full path) cut to its name."""
    line = text.strip().splitlines()[0].strip() if text.strip() else ""
    if hide:
        line = line.replace(hide, Path(hide).name)
    return line if len(line) <= _MAX_TEXT else line[: _MAX_TEXT - 1] + "…"


def failure_reason(exc: BaseException, *, hide: str | None = None) -> str:
    """What a decoder's exception says, on one line (its type when it says nothing)."""
    if isinstance(exc, MemoryError):
        return "not enough memory to decode it"
    return one_line(str(exc), hide=hide) or type(exc).__name__


class _Capture(threading.local):
    """Per thread: the note lists of the captures now open, innermost last."""

    def __init__(self) -> None:
        self.stack: list[list[str]] = []


_capture = _Capture()
_install_lock = threading.Lock()
_users = 0
_previous_show: Any = None


class _CapturingThread:
    """Stands in for a filter's message regex: matches only in a thread that captures."""

    def match(self, text: str) -> bool:
        return bool(_capture.stack)


_FILTER = ("always", _CapturingThread(), Warning, None, 0)


def _show(
    message: Warning | str,
    category: type[Warning],
    filename: str,
    lineno: int,
    file: TextIO | None = None,
    line: str | None = None,
) -> None:
    if _capture.stack:
        text = one_line(str(message))
        for notes in _capture.stack:  # outer captures see what inner ones saw
            if text and text not in notes:
                notes.append(text)
        return
    previous = _previous_show or warnings._showwarning_orig  # type: ignore[attr-defined]
    previous(message, category, filename, lineno, file, line)


def _filters() -> list[Any]:
    return cast(list[Any], warnings.filters)


def _install() -> None:
    global _users, _previous_show
    with _install_lock:
        if _users == 0:
            # Another catch_warnings may have saved and restored our hook and filter meanwhile.
            if warnings.showwarning is not _show:
                _previous_show = warnings.showwarning
                warnings.showwarning = _show
            if _FILTER not in _filters():
                _filters().insert(0, _FILTER)
            warnings._filters_mutated()  # type: ignore[attr-defined]
        _users += 1


def _uninstall() -> None:
    global _users, _previous_show
    with _install_lock:
        _users -= 1
        if _users == 0:
            if warnings.showwarning is _show:
                warnings.showwarning = _previous_show or warnings._showwarning_orig  # type: ignore[attr-defined]
            _previous_show = None
            if _FILTER in _filters():
                _filters().remove(_FILTER)
                warnings._filters_mutated()  # type: ignore[attr-defined]


@contextmanager
def captured_warnings() -> Iterator[list[str]]:
    """Warnings raised in this thread inside the block, as one-line notes (not on stderr)."""
    notes: list[str] = []
    _install()
    _capture.stack.append(notes)
    try:
        yield notes
    finally:
        _capture.stack.pop()
        _uninstall()


@contextmanager
def decoder_boundary(path: str | Path, doing: str) -> Iterator[list[str]]:
    """Run a decoder: any failure that is not a ``MedagentError`` becomes one ``SlideOpenError``
    ("PATH: DOING failed (REASON); …"); warnings become the yielded notes."""
    label = str(path)
    with captured_warnings() as notes:
        try:
            yield notes
        except MedagentError:
            raise
        except Exception as exc:  # every decoder raises its own types; none may escape
            raise SlideOpenError(
                f"{label}: {doing} failed ({failure_reason(exc, hide=label)}); the file may be "
                "truncated or corrupt: check that it is complete",
                path=label,
            ) from exc
        # A library may name the file in full; notes may be shown to remote clients.
        notes[:] = [one_line(note, hide=label) for note in notes]
