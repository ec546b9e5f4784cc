"""Opening medical images and reading them: slides, plain images and DICOM as one ``Slide``.

Coordinates are level-0 pixels (``Region``); physical spacing is ``None`` when the file does not
record it — never guessed.
"""

from medagent.imaging._decode import (
    DEFAULT_MAX_PIXELS,
    REMOTE_MAX_PIXELS,
    Decoded,
    decode_image,
    image_header_size,
    magic_kind,
)
from medagent.imaging._demo_slide import build_demo_slide
from medagent.imaging._dicomweb import (
    DicomWebRef,
    is_dicomweb_ref,
    open_dicomweb,
    parse_dicomweb_ref,
)
from medagent.imaging._geojson import (
    AnnotatedShape,
    AnnotationLimits,
    Annotations,
    QuPathClass,
    QuPathFeature,
    QuPathFeatureCollection,
    QuPathGeometry,
    QuPathProperties,
    geometry_of,
    mask_geometry,
    read_annotations,
    region_geometry,
    write_feature_collection,
)
from medagent.imaging._modality import (
    MODALITIES,
    Modality,
    ModalityKind,
    dicom_modality,
    modality,
)
from medagent.imaging._open import holds_volume, open_image
from medagent.imaging._overlay import (
    GuideStyle,
    draw_boxes,
    draw_guides,
    draw_mask,
    draw_scale_bar,
)
from medagent.imaging._pil import ImageSlide
from medagent.imaging._region import Point, Region, Size
from medagent.imaging._render import (
    DEFAULT_LONG_SIDE,
    Rendered,
    Renderer,
    RenderPolicy,
    choose_level,
)
from medagent.imaging._roots import (
    SLIDE_SUFFIXES,
    PathHider,
    list_archive_series,
    list_under_roots,
    normalize_archive,
    resolve_slide_source,
    resolve_under_roots,
)
from medagent.imaging._tissue import (
    TissueMask,
    TissueParams,
    TissueTile,
    iter_tissue_tiles,
    tissue_mask,
    tissue_pixels,
)
from medagent.imaging._volume import (
    DEFAULT_MAX_VOXELS,
    Montage,
    Volume,
    VolumeAxis,
    VolumeView,
    VoxelPoint,
    open_volume,
)
from medagent.imaging._window import (
    WINDOW_PRESETS,
    Window,
    WindowPreset,
    percentile_window,
    window,
)
from medagent.imaging.base import Slide, SlideInfo

__all__ = [
    "AnnotatedShape",
    "AnnotationLimits",
    "Annotations",
    "DEFAULT_LONG_SIDE",
    "DEFAULT_MAX_PIXELS",
    "DEFAULT_MAX_VOXELS",
    "Decoded",
    "DicomWebRef",
    "GuideStyle",
    "ImageSlide",
    "MODALITIES",
    "Modality",
    "ModalityKind",
    "Montage",
    "PathHider",
    "Point",
    "QuPathClass",
    "QuPathFeature",
    "QuPathFeatureCollection",
    "QuPathGeometry",
    "QuPathProperties",
    "REMOTE_MAX_PIXELS",
    "Region",
    "RenderPolicy",
    "Rendered",
    "Renderer",
    "SLIDE_SUFFIXES",
    "Size",
    "Slide",
    "SlideInfo",
    "TissueMask",
    "TissueParams",
    "TissueTile",
    "Volume",
    "VolumeAxis",
    "VolumeView",
    "VoxelPoint",
    "WINDOW_PRESETS",
    "Window",
    "WindowPreset",
    "build_demo_slide",
    "choose_level",
    "decode_image",
    "dicom_modality",
    "draw_boxes",
    "draw_guides",
    "draw_mask",
    "draw_scale_bar",
    "geometry_of",
    "holds_volume",
    "image_header_size",
    "is_dicomweb_ref",
    "iter_tissue_tiles",
    "list_archive_series",
    "list_under_roots",
    "magic_kind",
    "mask_geometry",
    "modality",
    "normalize_archive",
    "open_dicomweb",
    "open_image",
    "open_volume",
    "parse_dicomweb_ref",
    "percentile_window",
    "read_annotations",
    "region_geometry",
    "resolve_slide_source",
    "resolve_under_roots",
    "tissue_mask",
    "tissue_pixels",
    "window",
    "write_feature_collection",
]
