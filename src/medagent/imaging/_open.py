"""``open_image``: one entry point for slides, plain images and DICOM, with one-line errors.

Opening runs inside the decoder boundary (``_guard``): whatever pydicom, PIL, OpenSlide,
wsidicom or a future reader raises is one ``SlideOpenError`` naming the file, and their
warnings become the slide's ``notes``. A file that opens is then sampled — the first and last
tile of every level — so a truncated or zero-filled pyramid fails here, naming the level, not
in the middle of a run.
"""

from __future__ import annotations

import os
from pathlib import Path

from PIL import Image, UnidentifiedImageError

from medagent.errors import SlideOpenError
from medagent.imaging._decode import DEFAULT_MAX_PIXELS, decode_image, magic_kind
from medagent.imaging._dicomweb import is_dicomweb_ref
from medagent.imaging._guard import captured_warnings, decoder_boundary
from medagent.imaging._modality import ModalityKind, modality
from medagent.imaging._region import Region
from medagent.imaging._roots import _os_reason
from medagent.imaging.base import Slide

__all__ = ["VOLUME_SOP_CLASSES", "holds_volume", "open_image"]

#: Extensions that promise a vendor whole-slide format: a file named so that OpenSlide does not
#: recognise is mislabelled or damaged, not a plain image to be read another way.
_SLIDE_SUFFIXES = {".svs", ".ndpi", ".mrxs", ".scn", ".vms", ".vmu", ".bif", ".svslide"}
_PIL_FORMATS = {"PNG": "png", "JPEG": "jpeg", "TIFF": "tiff", "BMP": "bmp", "WEBP": "webp"}
#: Side of the square read at two corners of every level when a file is opened (level pixels).
_SAMPLE = 256


def _fail(path: Path, reason: str) -> SlideOpenError:
    return SlideOpenError(f"{path}: {reason}", path=str(path))


def _sniff(path: Path) -> bytes:
    try:
        with path.open("rb") as handle:
            head = handle.read(132)
    except (FileNotFoundError, NotADirectoryError):
        reason = "is a link to a missing file" if path.is_symlink() else "no such file"
        raise _fail(path, f"{reason}; check the path") from None
    except OSError as exc:  # a symlink loop, a name too long, permission denied, …
        raise _fail(path, _os_reason(exc)) from None
    if not head:
        raise _fail(path, "is empty (0 bytes); the copy or download may have failed")
    return head


def _is_dicom(head: bytes) -> bool:
    return head[128:132] == b"DICM"


def _pil_kind(path: Path) -> str | None:
    try:
        with captured_warnings(), Image.open(path) as image:
            return image.format
    except (UnidentifiedImageError, OSError, ValueError, SyntaxError):
        return None


def _open_pil(path: Path, max_pixels: int, kind: ModalityKind | None = None) -> Slide:
    from medagent.imaging._pil import ImageSlide

    decoded = decode_image(path, max_pixels=max_pixels)
    slide = ImageSlide(
        decoded.image,
        path=path,
        format=_PIL_FORMATS.get(decoded.format, decoded.format.lower()),
        modality=modality(kind) if kind else None,
    )
    slide.add_notes(decoded.notes)
    return slide


def open_image(
    path: str | os.PathLike[str],
    *,
    max_pixels: int = DEFAULT_MAX_PIXELS,
    modality: ModalityKind | None = None,
) -> Slide:
    """Open a whole-slide image, a plain image or a DICOM image as a ``Slide``.

    OpenSlide is tried first for the vendor formats it claims; DICOM whole-slide images (a file,
    or a folder holding one series) open through wsidicom; plain images through PIL as
    one-level slides; DICOM radiology through pydicom. Any failure is a ``SlideOpenError``
    naming the file and the reason — a level that cannot be read included (the first and last
    tile of every level are read now). ``max_pixels`` bounds what a single-level image may
    decode to (checked from the header first); pass less for files from remote clients. What
    the decoders warned about is in ``Slide.notes``. A ``dicomweb+https://…`` string names a
    series in a DICOMweb archive, read frame by frame (``open_dicomweb``). A CT/MR series is a
    volume, refused here with a pointer to ``open_volume``.

    ``modality`` says what a plain image (PNG, JPEG, plain TIFF) shows — its file cannot —
    so prompts describe it truly (``Slide.modality``); whole-slide and DICOM files say it
    themselves, and for them it is ignored.
    """
    if isinstance(path, str) and is_dicomweb_ref(path):
        from medagent.imaging._dicomweb import open_dicomweb

        slide: Slide = open_dicomweb(path)
        _check_levels(slide)
        return slide
    path = Path(path)
    with decoder_boundary(path, "opening it") as notes:
        slide = _open(path, max_pixels, modality)
        try:
            _check_levels(slide)
        except BaseException:
            slide.close()
            raise
    slide.add_notes(notes)
    return slide


#: SOP classes of CT and MR images, single-frame and enhanced: a series of them is a volume.
VOLUME_SOP_CLASSES = frozenset(
    {
        "1.2.840.10008.5.1.4.1.1.2",  # CT Image Storage
        "1.2.840.10008.5.1.4.1.1.2.1",  # Enhanced CT Image Storage
        "1.2.840.10008.5.1.4.1.1.4",  # MR Image Storage
        "1.2.840.10008.5.1.4.1.1.4.1",  # Enhanced MR Image Storage
    }
)
_ENHANCED = frozenset({"1.2.840.10008.5.1.4.1.1.2.1", "1.2.840.10008.5.1.4.1.1.4.1"})
#: Files of a folder looked at to tell a volume from other content.
_VOLUME_PROBE = 8


def holds_volume(path: Path) -> bool:
    """Whether ``path`` is a CT/MR series (a folder) or an enhanced multi-frame CT/MR file:
    what ``open_volume`` opens, not ``open_image``."""
    try:
        with captured_warnings():  # pydicom warns about damaged headers: not for stderr
            return _holds_volume(path)
    except OSError:
        return False


def _holds_volume(path: Path) -> bool:
    from medagent.imaging._dicom import dicom_sop_class

    if path.is_dir():
        files = [f for f in sorted(path.iterdir()) if f.is_file()][:_VOLUME_PROBE]
    else:
        files = [path]
    for file in files:
        with file.open("rb") as handle:
            if not _is_dicom(handle.read(132)):
                continue
        try:
            sop = dicom_sop_class(file)
        except SlideOpenError:
            continue
        if sop in (VOLUME_SOP_CLASSES if path.is_dir() else _ENHANCED):
            return True
    return False


def _open_folder(path: Path) -> Slide:
    """A folder is one DICOM series: a whole slide's instances (a CT/MR series is a volume)."""
    from medagent.imaging._dicom_wsi import dicom_wsi_files, open_dicom_wsi

    if dicom_wsi_files(path):
        return open_dicom_wsi(path)
    if holds_volume(path):
        raise _fail(
            path,
            "holds a CT/MR series, a volume, not a slide; open it with "
            "medagent.imaging.open_volume (medagent slide info shows it)",
        )
    raise _fail(
        path,
        "is a folder and holds no DICOM whole-slide series; give the slide file itself "
        "(for MRXS, the .mrxs file)",
    )


def _open(path: Path, max_pixels: int, declared: ModalityKind | None) -> Slide:
    try:
        is_folder = path.is_dir()
    except OSError as exc:
        raise _fail(path, _os_reason(exc)) from None
    if is_folder:
        return _open_folder(path)
    head = _sniff(path)
    if _is_dicom(head):
        from medagent.imaging._dicom import WSI_SOP_CLASS, dicom_sop_class, open_dicom

        sop = dicom_sop_class(path)
        if sop in _ENHANCED:
            raise _fail(
                path,
                "is an enhanced multi-frame CT/MR image, a volume, not a slide; open it with "
                "medagent.imaging.open_volume (medagent slide info shows it)",
            )
        if sop == WSI_SOP_CLASS:
            from medagent.imaging._dicom_wsi import open_dicom_wsi

            return open_dicom_wsi(path)
        return open_dicom(path, max_pixels=max_pixels)
    from medagent.imaging._openslide import OpenSlideSlide, detect_openslide_format

    vendor = detect_openslide_format(path)
    if vendor is not None:
        try:
            return OpenSlideSlide(path)
        except SlideOpenError:
            # OpenSlide claims every tiled TIFF but refuses some (odd sample formats); PIL may
            # read their first image. Say so: for a damaged pyramid that is all that is left.
            if vendor == "generic-tiff" and _pil_kind(path) == "TIFF":
                slide = _open_pil(path, max_pixels, declared)
                slide.add_notes(
                    [
                        "OpenSlide cannot read it as a tiled pyramid (it may be truncated); "
                        "only its first image was opened"
                    ]
                )
                return slide
            raise
    if path.suffix.lower() in _SLIDE_SUFFIXES:
        kind = _pil_kind(path)
        if kind:
            found = f"it contains a {kind} image"
        elif magic_kind(head):
            found = f"it starts as a {magic_kind(head)} file but cannot be read"
        else:
            found = "its content is not a slide"
        raise _fail(
            path,
            f"named {path.suffix} but OpenSlide does not recognise it ({found}); "
            "check that the file is complete and correctly named",
        )
    return _open_pil(path, max_pixels, declared)


def _check_levels(slide: Slide) -> None:
    """Read the first and the last tile of every level: a cut or zero-filled file fails now,
    naming the level, rather than in the middle of a run. Damage between the two corners is
    still found when that part is read (one line, like this)."""
    for level, (size, downsample) in enumerate(
        zip(slide.level_dimensions, slide.level_downsamples, strict=True)
    ):
        l_width, l_height = min(_SAMPLE, size.width), min(_SAMPLE, size.height)
        if l_width < 1 or l_height < 1:
            raise _fail(slide.path, f"level {level} has no pixels ({size.width} x {size.height})")
        corners = {(0, 0), (size.width - l_width, size.height - l_height)}
        for l_x, l_y in sorted(corners):
            slide.read(
                Region(
                    x=int(l_x * downsample),
                    y=int(l_y * downsample),
                    width=max(1, int(l_width * downsample)),
                    height=max(1, int(l_height * downsample)),
                ),
                level,
            )
