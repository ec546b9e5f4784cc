"""QuPath's GeoJSON, both ways: shapes medagent writes for QuPath, annotations read back.

QuPath (File → Object data → Export/Import GeoJSON) exchanges objects as a ``FeatureCollection``
of ``Feature``s in level-0 pixels, origin top-left: ``geometry`` a Polygon or MultiPolygon,
``properties`` with ``objectType`` ("annotation"), ``name``, ``classification`` (``name`` and an
``[r, g, b]`` ``color``), ``isLocked``, ``measurements`` (name → number) and ``metadata``
(name → text). The models here are that schema; the writer emits nothing else.

An annotation file comes from outside, so ``read_annotations`` reads it through one guard:
a byte cap checked before reading, a nesting-depth cap, caps on features and points, finite
coordinates within the range of a ``Region``; each refusal is one ``InputError`` line.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from medagent._files import write_atomic
from medagent.errors import InputError
from medagent.imaging._region import Region

if TYPE_CHECKING:
    from shapely.geometry.base import BaseGeometry

__all__ = [
    "AnnotatedShape",
    "AnnotationLimits",
    "Annotations",
    "QuPathClass",
    "QuPathFeature",
    "QuPathFeatureCollection",
    "QuPathGeometry",
    "QuPathProperties",
    "geometry_of",
    "mask_geometry",
    "read_annotations",
    "region_geometry",
    "write_feature_collection",
]

#: The largest coordinate a level-0 ``Region`` holds; anything beyond is not on a slide.
_LIMIT = 2**31 - 1

Coordinate = Annotated[float, Field(allow_inf_nan=False, ge=-_LIMIT, le=_LIMIT)]
Position = tuple[Coordinate, Coordinate]
Ring = Annotated[list[Position], Field(min_length=4)]
Channel = Annotated[int, Field(ge=0, le=255)]
RGB = tuple[Channel, Channel, Channel]


class QuPathClass(BaseModel):
    """A classification: its name and display colour (QuPath's ``PathClass``).

    QuPath before 0.4 wrote ``colorRGB`` (one packed integer) and derived classes as
    ``names``; both are read, and written the current way.
    """

    model_config = ConfigDict(frozen=True)

    name: str = Field(min_length=1, max_length=200)
    color: RGB | None = None

    @classmethod
    def _legacy(cls, value: Any) -> Any:
        if not isinstance(value, dict):
            return value
        value = dict(value)
        if "name" not in value and isinstance(value.get("names"), list):
            value["name"] = ": ".join(str(n) for n in value.pop("names"))
        packed = value.pop("colorRGB", None)
        if "color" not in value and isinstance(packed, int):
            value["color"] = ((packed >> 16) & 255, (packed >> 8) & 255, packed & 255)
        value.pop("names", None)
        return value


class QuPathProperties(BaseModel):
    """A feature's ``properties`` as QuPath writes and reads them (camelCase on the wire)."""

    model_config = ConfigDict(frozen=True, populate_by_name=True, extra="ignore")

    object_type: Literal["annotation", "detection", "cell", "tile", "tmaCore", "root"] = Field(
        "annotation", alias="objectType"
    )
    name: str | None = Field(None, max_length=10_000)
    color: RGB | None = None
    classification: QuPathClass | None = None
    is_locked: bool = Field(False, alias="isLocked")
    measurements: dict[str, Annotated[float, Field(allow_inf_nan=False)]] = Field(
        default_factory=dict
    )
    metadata: dict[str, str] = Field(default_factory=dict)

    @field_validator("classification", mode="before")
    @classmethod
    def _old_classification(cls, value: Any) -> Any:
        return QuPathClass._legacy(value)

    @field_validator("measurements", mode="before")
    @classmethod
    def _old_measurements(cls, value: Any) -> Any:
        # Before 0.4 QuPath wrote a list of {"name": ..., "value": ...}.
        if isinstance(value, list):
            return {
                str(m.get("name")): m.get("value")
                for m in value
                if isinstance(m, dict) and isinstance(m.get("value"), int | float)
            }
        return value


class PolygonGeometry(BaseModel):
    model_config = ConfigDict(frozen=True)

    type: Literal["Polygon"]
    coordinates: Annotated[list[Ring], Field(min_length=1)]


class MultiPolygonGeometry(BaseModel):
    model_config = ConfigDict(frozen=True)

    type: Literal["MultiPolygon"]
    coordinates: Annotated[list[Annotated[list[Ring], Field(min_length=1)]], Field(min_length=1)]


QuPathGeometry = Annotated[PolygonGeometry | MultiPolygonGeometry, Field(discriminator="type")]


class QuPathFeature(BaseModel):
    """One QuPath object: an id (a UUID, optional), its outline and its properties."""

    model_config = ConfigDict(frozen=True)

    type: Literal["Feature"] = "Feature"
    id: str | None = Field(None, max_length=200)
    geometry: QuPathGeometry
    properties: QuPathProperties = Field(default_factory=QuPathProperties)

    def shape(self) -> BaseGeometry:
        """The outline as a valid shapely geometry (a self-crossing ring is repaired)."""
        return geometry_of(self.geometry)


class QuPathFeatureCollection(BaseModel):
    """What QuPath's "Export as GeoJSON" writes with "FEATURE_COLLECTION", and reads back."""

    model_config = ConfigDict(frozen=True)

    type: Literal["FeatureCollection"] = "FeatureCollection"
    features: list[QuPathFeature] = Field(default_factory=list)

    def to_json(self) -> str:
        """The collection as QuPath reads it: camelCase keys, no empty fields."""
        return self.model_dump_json(by_alias=True, exclude_none=True, indent=1)


def geometry_of(geometry: PolygonGeometry | MultiPolygonGeometry) -> BaseGeometry:
    """A GeoJSON geometry as a valid shapely geometry."""
    import shapely
    from shapely.geometry import shape

    found = shape(geometry.model_dump())
    return found if found.is_valid else shapely.make_valid(found)


def _as_geometry(found: BaseGeometry) -> PolygonGeometry | MultiPolygonGeometry | None:
    """Polygons of ``found`` (outer rings anticlockwise, as RFC 7946 asks), or ``None``."""
    from shapely.geometry import Polygon
    from shapely.geometry.polygon import orient

    polygons = [g for g in getattr(found, "geoms", [found]) if isinstance(g, Polygon)]
    polygons = [orient(p, 1.0) for p in polygons if not p.is_empty and p.area > 0]
    if not polygons:
        return None

    def rings(p: Polygon) -> list[list[tuple[float, float]]]:
        return [
            [(round(x, 2), round(y, 2)) for x, y in ring.coords]
            for ring in [p.exterior, *p.interiors]
        ]

    if len(polygons) == 1:
        return PolygonGeometry(type="Polygon", coordinates=rings(polygons[0]))
    return MultiPolygonGeometry(
        type="MultiPolygon",
        coordinates=[rings(p) for p in polygons],
    )


def region_geometry(region: Region) -> PolygonGeometry:
    """A level-0 region as a closed rectangle."""
    from shapely.geometry import box

    outline = box(region.x, region.y, region.x_end, region.y_end)
    found = _as_geometry(outline)
    if not isinstance(found, PolygonGeometry):
        raise InputError(f"the region {region} has no area; it cannot be drawn")
    return found


def mask_geometry(
    mask: np.ndarray, region: Region, *, max_objects: int = 5000
) -> PolygonGeometry | MultiPolygonGeometry | None:
    """The objects of a binary ``mask`` that shows ``region``, as level-0 polygons.

    Each 8-connected object becomes one polygon (holes kept), simplified to within one mask
    pixel; the ``max_objects`` largest are kept. ``None`` when the mask is empty.
    """
    import shapely
    from shapely.geometry import MultiPolygon, Polygon
    from skimage.measure import find_contours, label, regionprops

    height, width = mask.shape
    if not height or not width:
        return None
    sx, sy = region.width / width, region.height / height
    labels = label(mask > 0, connectivity=2)
    props = sorted(regionprops(labels), key=lambda p: -p.area)[:max_objects]
    polygons: list[Any] = []
    for prop in props:
        top, left, _, _ = prop.bbox
        # Padded so every contour closes; contour points sit half a pixel from pixel centres.
        padded = np.pad(prop.image, 1).astype(np.float32)
        rings = []
        for contour in find_contours(padded, 0.5):
            xs = region.x + (contour[:, 1] + left - 1 + 0.5) * sx
            ys = region.y + (contour[:, 0] + top - 1 + 0.5) * sy
            ring = Polygon(np.column_stack([xs, ys]))
            if ring.area > 0:
                rings.append(ring)
        if not rings:
            continue
        rings.sort(key=lambda r: -r.area)
        outer, holes = rings[0], [r for r in rings[1:] if rings[0].contains(r)]
        outline = Polygon(outer.exterior.coords, [h.exterior.coords for h in holes])
        simple = outline.simplify(max(sx, sy), preserve_topology=True)
        polygons.append(simple if simple.is_valid else shapely.make_valid(simple))
    parts = [p for g in polygons for p in getattr(g, "geoms", [g]) if isinstance(p, Polygon)]
    return _as_geometry(MultiPolygon(parts)) if parts else None


def write_feature_collection(path: str | Path, collection: QuPathFeatureCollection) -> Path:
    """Write ``collection`` (atomically) where QuPath can import it; the folder is made."""
    target = Path(path)
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        write_atomic(target, collection.to_json() + "\n")
    except OSError as exc:
        reason = (exc.strerror or str(exc)).lower()
        raise InputError(f"cannot write {target}: {reason}", path=str(target)) from None
    return target


# -- reading a pathologist's annotations ----------------------------------------------------


class AnnotationLimits(BaseModel):
    """What an annotation file may hold; beyond any of these it is refused unparsed."""

    model_config = ConfigDict(frozen=True)

    max_bytes: int = Field(64 * 2**20, ge=1, description="file size")
    max_depth: int = Field(16, ge=4, description="nesting of JSON arrays and objects")
    max_features: int = Field(100_000, ge=1)
    max_points: int = Field(2_000_000, ge=1, description="vertices over all features")


class AnnotatedShape(BaseModel):
    """One annotated region: its class, name and outline (level-0 pixels)."""

    model_config = ConfigDict(frozen=True)

    classification: str | None
    name: str | None
    geometry: QuPathGeometry

    def shape(self) -> BaseGeometry:
        return geometry_of(self.geometry)


class Annotations(BaseModel):
    """The annotated regions of one slide's file, and what of the file was left out."""

    model_config = ConfigDict(frozen=True)

    path: str
    shapes: list[AnnotatedShape]
    skipped: int = Field(0, description="features that are not annotated polygons")

    def union(self) -> BaseGeometry:
        """Every annotated region as one geometry (overlaps counted once)."""
        import shapely

        return shapely.unary_union([s.shape() for s in self.shapes])

    @property
    def classes(self) -> list[str]:
        return sorted({s.classification for s in self.shapes if s.classification})


def _refuse(path: Path, why: str) -> InputError:
    return InputError(
        f"{path.name}: refused: {why}; export the annotations from QuPath again (File → "
        "Export objects as GeoJSON)",
        path=str(path),
    )


def _not_finite(text: str) -> Any:
    raise ValueError(f"{text} is not a finite number")


def _shape_of_json(data: Any, path: Path, limits: AnnotationLimits) -> None:
    """Depth and point count, walked without recursion, against the limits."""
    stack: list[tuple[Any, int]] = [(data, 1)]
    points = 0
    while stack:
        value, depth = stack.pop()
        if depth > limits.max_depth:
            raise _refuse(path, f"nested deeper than {limits.max_depth} levels")
        if isinstance(value, dict):
            stack.extend((v, depth + 1) for v in value.values())
        elif isinstance(value, list):
            if value and all(isinstance(v, int | float) for v in value):
                points += 1
                if points > limits.max_points:
                    raise _refuse(path, f"more than {limits.max_points:,} points")
            else:
                stack.extend((v, depth + 1) for v in value)


def _features(data: Any, path: Path) -> list[Any]:
    """QuPath writes a FeatureCollection, a bare list of features, or a single feature."""
    if isinstance(data, dict) and data.get("type") == "FeatureCollection":
        features = data.get("features")
        if isinstance(features, list):
            return features
    if isinstance(data, list):
        return data
    if isinstance(data, dict) and data.get("type") == "Feature":
        return [data]
    raise _refuse(path, "not a GeoJSON FeatureCollection, feature list or Feature")


def read_annotations(path: str | Path, limits: AnnotationLimits | None = None) -> Annotations:
    """The annotated polygons of a QuPath GeoJSON export, through the file guard.

    Polygon and MultiPolygon annotations are kept; other geometries (points, lines) and other
    object types (detections, cells) are counted in ``skipped``. ``InputError`` (one line) for
    a file that is missing, too large, too deep, not JSON, or with a bad coordinate.
    """
    limits = limits or AnnotationLimits()
    source = Path(path)
    try:
        size = source.stat().st_size
        if not source.is_file():
            raise _refuse(source, "not a file")
        if size > limits.max_bytes:
            raise _refuse(source, f"{size:,} bytes, over the {limits.max_bytes:,}-byte cap")
        with source.open("rb") as handle:
            raw = handle.read(limits.max_bytes + 1)
    except OSError as exc:
        reason = (exc.strerror or str(exc)).lower()
        raise InputError(f"cannot read {source}: {reason}", path=str(source)) from None
    if len(raw) > limits.max_bytes:
        raise _refuse(source, f"over the {limits.max_bytes:,}-byte cap")
    try:
        data = json.loads(raw.decode("utf-8-sig"), parse_constant=_not_finite)
    except RecursionError:
        raise _refuse(source, f"nested deeper than {limits.max_depth} levels") from None
    except UnicodeDecodeError:
        raise _refuse(source, "not UTF-8 text") from None
    except ValueError as exc:
        raise _refuse(source, f"not valid JSON ({str(exc).splitlines()[0][:120]})") from None
    _shape_of_json(data, source, limits)
    features = _features(data, source)
    if len(features) > limits.max_features:
        raise _refuse(
            source, f"{len(features):,} features, over the cap of {limits.max_features:,}"
        )
    shapes: list[AnnotatedShape] = []
    skipped = 0
    for index, raw_feature in enumerate(features):
        geometry = raw_feature.get("geometry") if isinstance(raw_feature, dict) else None
        kind = geometry.get("type") if isinstance(geometry, dict) else None
        if kind not in ("Polygon", "MultiPolygon"):
            skipped += 1
            continue
        try:
            feature = QuPathFeature.model_validate(raw_feature)
        except ValidationError as exc:
            first = exc.errors()[0]
            where = ".".join(str(p) for p in first["loc"])
            raise _refuse(source, f"feature {index + 1}: {where}: {first['msg']}") from None
        if feature.properties.object_type != "annotation":
            skipped += 1
            continue
        classification = feature.properties.classification
        shapes.append(
            AnnotatedShape(
                classification=classification.name if classification else None,
                name=feature.properties.name,
                geometry=feature.geometry,
            )
        )
    return Annotations(path=str(source), shapes=shapes, skipped=skipped)
