"""SlideBench-VQA (SlideChat, CVPR 2025): multiple-choice questions over whole slides, as CSV.

The authors publish two CSVs on Hugging Face (``General-Medical-AI/SlideChat`` and
``General-Medical-AI/SlideBench``), slides not included:

- TCGA (``SlideBench-VQA-TCGA.csv``, first released as ``SlideBench-VQA (TCGA).csv``): columns
  ``ID``, ``Slide`` (a TCGA slide barcode such as ``TCGA-05-4244-01Z-00-DX1``: the GDC file
  name up to its first dot), ``Tumor`` (the TCGA project), ``Broad Category`` (Microscopy,
  Diagnosis, Clinical), ``Narrow Category`` (13 of them), ``Question``, ``A`` to ``D`` and
  ``Answer`` (the right letter);
- BCNB (``SlideBench-VQA(BCNB).csv``): ``ID``, ``Slide`` (the BCNB patient id; the patient's
  slide is ``WSIs/<id>.jpg``), ``Task`` (7 tasks: tumour type, ER, PR, HER2 ...),
  ``Question``, ``A`` to ``D`` (``C`` and ``D`` empty for two-way questions) and ``Answer``.

The variant is told by its columns. The paper reports accuracy per broad category (TCGA) and
per task (BCNB), so that is an item's ``task`` (the narrow category stays in ``metadata``);
the metric is ``accuracy``, the options are the non-empty ``A``-``D`` texts and the reference
is the text of the answer's letter. Ids are ``tcga:<ID>`` / ``bcnb:<ID>`` (the row number
where a file has no ``ID`` column), made unique with '#2', '#3'... Slides are found under
``slide_roots`` by file name up to the first dot (`BenchmarkSlides`).
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from medagent.errors import ConfigError, InputError
from medagent.evals._records import EvalItem
from medagent.evals.datasets._base import (
    Dataset,
    MissingImage,
    absolute,
    check_options,
    check_tasks,
    disambiguate,
    file_sha256,
    select,
)
from medagent.evals.datasets._multipathqa import SLIDE_EXTENSIONS, SlideFinder
from medagent.evals.datasets._tables import open_table

__all__ = ["BenchmarkSlides", "load_slidebench"]

Variant = Literal["tcga", "bcnb"]

_LETTERS = ("A", "B", "C", "D")
_COMMON = ("Slide", "Question", *_LETTERS, "Answer")
_TASK_COLUMN: dict[Variant, str] = {"tcga": "Broad Category", "bcnb": "Task"}
#: BCNB's slides are JPEG files, not vendor pyramids.
_IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".tif", ".tiff")


class BenchmarkSlides(SlideFinder):
    """Slides named the way benchmarks name them: by file name up to its first dot.

    GDC names a TCGA slide ``<slide barcode>.<file uuid>.svs``; benchmarks give the barcode
    alone (``TCGA-05-4244-01Z-00-DX1``) or only the case (``TCGA-05-4244``). Only files with
    one of ``extensions`` count, so an annotation file beside a slide is never taken for it.
    Of several files with the same name the first in sorted walk order wins.
    """

    def __init__(self, roots: Sequence[Path], extensions: Sequence[str] = SLIDE_EXTENSIONS) -> None:
        super().__init__(roots)
        self.extensions = tuple(e.lower() for e in extensions)
        self._by_stem: dict[str, Path] | None = None
        self._by_case: dict[str, list[str]] | None = None

    def _stems(self) -> dict[str, Path]:
        if self._by_stem is None:
            self._by_stem = {}
            for name, path in self._index().items():  # in sorted walk order
                if name.lower().endswith(self.extensions):
                    self._by_stem.setdefault(name.split(".", 1)[0], path)
        return self._by_stem

    def by_stem(self, name: str) -> Path | None:
        """The slide file called ``name``, or whose name up to the first dot is ``name``."""
        if not self.roots:
            return None
        found = self._index().get(name) if name.lower().endswith(self.extensions) else None
        found = found or self._stems().get(name)
        return None if found is None else absolute(found)

    def by_case(self, case: str) -> Path | None:
        """A TCGA case's diagnostic slide: a file named after the case itself, else the case's
        ``DX1`` slide, else its first other ``DX`` slide (tissue slides are never taken)."""
        direct = self.by_stem(case)
        if direct is not None or not self.roots:
            return direct
        if self._by_case is None:
            self._by_case = {}
            for stem in self._stems():
                parts = stem.split("-")
                if len(parts) > 3 and parts[-1].upper().startswith("DX"):
                    self._by_case.setdefault("-".join(parts[:3]), []).append(stem)
        stems = self._by_case.get(case, [])
        ranked = sorted(stems, key=lambda s: (s.split("-")[-1].upper() != "DX1", s))
        return absolute(self._stems()[ranked[0]]) if ranked else None


@dataclass(frozen=True)
class _Row:
    where: str
    item_id: str
    cells: dict[str, str]


def _text(value: Any) -> str:
    """A cell as text: CSV cells are strings already; Parquet copies may hold ints or None."""
    return "" if value is None else str(value).strip()


def _variant(columns: Sequence[str], path: Path) -> Variant:
    variant: Variant = "tcga" if "Broad Category" in columns else "bcnb"
    needed = (*_COMMON, _TASK_COLUMN[variant])
    absent = [c for c in needed if c not in columns]
    if absent:
        raise InputError(
            f"{path} is not a SlideBench-VQA CSV: missing column(s) {', '.join(absent)} "
            "(the TCGA file has Broad Category, the BCNB file Task)",
            path=str(path),
        )
    return variant


def _reference(cells: dict[str, str], options: list[str], where: str) -> str:
    raw = cells["Answer"]
    letter = raw.rstrip(".):").upper()
    if letter in _LETTERS:
        text = cells[letter]
        if not text:
            raise InputError(f"{where}: the answer is {letter} but option {letter} is empty")
        return text
    # Some copies give the right option's text instead of its letter.
    matches = [o for o in options if o.casefold() == raw.casefold()]
    if raw and len(matches) == 1:
        return matches[0]
    raise InputError(f"{where}: answer {raw!r} is neither a letter A-D nor one of the options")


def _candidates(
    rows: list[_Row], variant: Variant, slides: BenchmarkSlides
) -> Iterator[tuple[EvalItem, list[MissingImage]]]:
    searched = [str(root) for root in slides.roots]
    for row in rows:
        cells = row.cells
        options = [cells[letter] for letter in _LETTERS if cells[letter]]
        if len(options) < 2:
            raise InputError(f"{row.where}: a question needs at least two options (A, B)")
        if not cells["Slide"]:
            raise InputError(f"{row.where}: the Slide cell is empty")
        slide = slides.by_stem(cells["Slide"])
        metadata: dict[str, Any] = {
            "slide_id": cells["Slide"],
            "raw_answer": cells["Answer"],
            "variant": variant,
        }
        for column in ("ID", "Tumor", "Narrow Category"):
            if cells.get(column):
                metadata[column.lower().replace(" ", "_")] = cells[column]
        item = EvalItem(
            id=row.item_id,
            task=cells[_TASK_COLUMN[variant]],
            slide=None if slide is None else str(slide),
            question=cells["Question"],
            options=options,
            answer=_reference(cells, options, row.where),
            metric="accuracy",
            metadata=metadata,
        )
        lost = (
            []
            if slide
            else [MissingImage(item_id=row.item_id, path=cells["Slide"], searched=searched)]
        )
        yield item, lost


def load_slidebench(
    path: Path | str,
    *,
    tasks: Sequence[str] | None = None,
    limit: int | None = None,
    skip_missing: bool = False,
    slide_roots: Sequence[Path | str] = (),
) -> Dataset:
    """Load SlideBench-VQA (the TCGA or the BCNB CSV), finding slides under ``slide_roots``.

    A TCGA slide is the file whose name up to its first dot is the ``Slide`` barcode (any of
    .svs .tiff .tif .ndpi .mrxs); a BCNB slide is ``<patient id>.jpg`` (or .jpeg .png .tif
    .tiff). ``tasks`` keeps those broad categories (TCGA) or tasks (BCNB); ``limit`` keeps the
    first N items in file order. Raises `InputError` for a file that is not a SlideBench CSV or
    a row that cannot be scored, or when a kept item's slide is missing (unless
    ``skip_missing``: then it is left out and listed in ``missing``); `ConfigError` for an
    unknown task, or when no slide folder is given without ``skip_missing``.
    """
    wanted = check_options(limit, tasks)
    table = open_table(path, what="SlideBench-VQA CSV")
    source = table.source_path
    if not slide_roots and not skip_missing:
        raise ConfigError(
            "SlideBench slides are not part of the CSV: pass --slides DIR (the folder holding "
            "the TCGA .svs files, or BCNB's WSIs folder; may be repeated) or --skip-missing"
        )
    read = [
        (where, {str(k).strip(): _text(v) for k, v in row.items()}) for where, row in table.rows()
    ]
    if not read:
        raise InputError(f"{source} holds no questions", path=str(source))
    variant = _variant(list(read[0][1]), source)
    column = _TASK_COLUMN[variant]
    check_tasks(wanted, (cells[column] for _, cells in read), f"SlideBench {variant.upper()}")
    has_ids = "ID" in read[0][1]
    ids = disambiguate(
        [f"{variant}:{cells['ID'] if has_ids else n}" for n, (_, cells) in enumerate(read, 1)]
    )
    rows = [
        _Row(f"{where} ({item_id})", item_id, cells)
        for (where, cells), item_id in zip(read, ids, strict=True)
        if wanted is None or cells[column] in wanted
    ]
    extensions = SLIDE_EXTENSIONS if variant == "tcga" else _IMAGE_EXTENSIONS
    slides = BenchmarkSlides([Path(root) for root in slide_roots], extensions)
    items, missing = select(
        _candidates(rows, variant, slides),
        limit=limit,
        skip_missing=skip_missing,
        source=f"SlideBench {variant.upper()}",
        hint="pass --slides DIR with the folder holding them, or --skip-missing to leave them out",
    )
    return Dataset(
        name=f"slidebench-{variant}",
        kind="slidebench",
        items=items,
        source_path=source,
        # One file's own digest, so `sha256sum` on the download gives the same.
        source_sha256=file_sha256(table.files[0]) if len(table.files) == 1 else table.sha256(),
        missing=missing,
    )
