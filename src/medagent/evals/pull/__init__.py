"""Fetching MultiPathQA's slides from where their authors publish them: resumable and verified.

MultiPathQA ships questions, not slides: TCGA slides come from the GDC (by the CSV's
``file_id``), GTEx slides from the GTEx image service (by slide id), PANDA slides from the
Kaggle competition (credentials needed). Each file lands in the output folder under the CSV's
own file name, where ``eval run --slides DIR`` looks for it.

Why each rule:

- an interrupted file stays ``NAME.part`` and is never counted as done; the next attempt (a
  retry, or a rerun) asks for the rest with ``Range: bytes=N-`` (206: append; 200: the server
  ignores ranges, start over);
- the GDC publishes md5 and size per file, so both are checked; GTEx and Kaggle publish
  nothing, so the file must open as a slide. A file that fails its check is removed;
- verified files are recorded (``.medagent-pull.json``: size and mtime), so a rerun skips them
  without hashing gigabytes again and touches only what is missing or wrong;
- sizes from a server (Content-Length, GDC ``file_size``) above ``max_bytes`` are refused, and
  bodies stream to disk, never held whole in memory.
"""

from medagent.evals.pull._fetch import PullEvents, PullPolicy, pull_files
from medagent.evals.pull._plan import (
    KAGGLE_HINT,
    PULL_SOURCES,
    PullFile,
    PullOutcome,
    PullSources,
    kaggle_credentials,
    plan_multipathqa,
)

__all__ = [
    "KAGGLE_HINT",
    "PULL_SOURCES",
    "PullEvents",
    "PullFile",
    "PullOutcome",
    "PullPolicy",
    "PullSources",
    "kaggle_credentials",
    "plan_multipathqa",
    "pull_files",
]
