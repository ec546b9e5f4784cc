"""What a run looked at, read back from any run folder medagent writes.

One reader for every kind of folder, so export and annotation metrics see the same regions:
a GIANT run (``trajectory.json``: each step's level-0 region, pyramid level and rendered size),
an insight run (``insights.json``: its tools' evidence regions, masks and measurements, per
input image), a chat session (its artifact store: each view and mask records its own region),
an eval item folder (one of those) and a whole eval run (one per item under ``items/``).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from medagent.agents.base import MANIFEST, RunManifest
from medagent.agents.giant import Trajectory
from medagent.agents.insight import InsightReport
from medagent.artifacts import ArtifactRef, ArtifactStore
from medagent.errors import InputError
from medagent.imaging import Region

__all__ = ["RunRegions", "ViewedRegion", "read_run_regions"]

RegionKind = Literal["view", "evidence", "finding", "mask"]
AgentKind = Literal["giant", "insight", "chat"]
#: GIANT step kinds that showed the model a region of the slide.
_VIEW_STEPS = frozenset({"zoom", "look", "patch", "thumbnail"})
#: Artifact kinds that are not a region the agent chose to look at.
_NOT_VIEWS = frozenset({"overview", "neighbour", "montage", "slice"})


class ViewedRegion(BaseModel):
    """One region of the slide a run used: a view the model saw, a tool's evidence, a finding
    of the root finder, or a mask a tool wrote (``mask`` is its artifact)."""

    model_config = ConfigDict(frozen=True)

    step: int = Field(description="order within the run, from 1")
    kind: RegionKind
    tool: str = Field(description="what produced it: zoom, look, segment, tissue, finding, …")
    region: Region
    level: int | None = Field(None, description="pyramid level read, when recorded")
    downsample: float | None = Field(
        None, description="level-0 pixels per pixel of the image shown (None: not an image)"
    )
    mpp: float | None = Field(None, description="µm per pixel of the image shown, if known")
    reasoning: str = Field("", description="why, as the run recorded it")
    measurements: dict[str, float] = Field(default_factory=dict)
    mask: ArtifactRef | None = None


class RunRegions(BaseModel):
    """The regions one run used on one slide."""

    model_config = ConfigDict(frozen=True)

    name: str = Field(description="a file-name-safe label: the folder's name, + image number")
    agent: AgentKind
    run_dir: Path
    slide: str = Field(description="the slide's path (or reference) as the run recorded it")
    slide_mpp: float | None = None
    regions: list[ViewedRegion] = Field(default_factory=list)

    @property
    def views(self) -> list[ViewedRegion]:
        """The regions shown to the model as images, in step order."""
        return [r for r in self.regions if r.kind == "view"]

    @property
    def slide_stem(self) -> str:
        """The slide's file name without its suffix, for finding its annotations."""
        return Path(self.slide.rstrip("/")).stem


def _downsample(region: Region, shown: ArtifactRef | None) -> float | None:
    if shown is None or shown.width < 1:
        return None
    return max(region.width / shown.width, region.height / shown.height)


def _damaged(path: Path, exc: ValidationError | ValueError | OSError) -> InputError:
    reason = (
        exc.strerror or str(exc)
        if isinstance(exc, OSError)
        else (str(exc).splitlines()[0] if str(exc) else type(exc).__name__)
    )
    return InputError(
        f"{path} cannot be read ({reason[:160]}); give a folder a run wrote, whole", path=str(path)
    )


def _giant(folder: Path) -> RunRegions:
    path = folder / "trajectory.json"
    try:
        trajectory = Trajectory.model_validate_json(path.read_bytes())
    except (ValidationError, ValueError, OSError) as exc:
        raise _damaged(path, exc) from None
    regions = []
    for record in trajectory.steps:
        if record.kind not in _VIEW_STEPS or record.region is None or record.slice is not None:
            continue
        regions.append(
            ViewedRegion(
                step=record.step,
                kind="view",
                tool=record.kind,
                region=record.region,
                level=record.level,
                downsample=_downsample(record.region, record.artifact),
                mpp=record.mpp,
                reasoning=record.reasoning,
            )
        )
    return RunRegions(
        name=folder.name,
        agent="giant",
        run_dir=folder,
        slide=trajectory.slide_path,
        slide_mpp=trajectory.slide.mpp_x,
        regions=regions,
    )


def _insight(folder: Path) -> list[RunRegions]:
    path = folder / "insights.json"
    try:
        report = InsightReport.model_validate_json(path.read_bytes())
    except (ValidationError, ValueError, OSError) as exc:
        raise _damaged(path, exc) from None
    per_image: dict[int, list[ViewedRegion]] = {i: [] for i in range(1, len(report.sources) + 1)}
    counter = 0
    for finding in report.findings:
        if finding.region is not None and finding.image in per_image:
            counter += 1
            per_image[finding.image].append(
                ViewedRegion(
                    step=counter,
                    kind="finding",
                    tool="finding",
                    region=finding.region,
                    downsample=_downsample(finding.region, finding.artifact),
                    reasoning=finding.text,
                )
            )
    for question in report.questions:
        for step in question.steps:
            evidence = step.evidence
            if evidence is None or evidence.region is None or evidence.image not in per_image:
                continue
            counter += 1
            shown = next((a for a in evidence.artifacts if a.kind != "mask"), None)
            found = per_image[evidence.image]
            found.append(
                ViewedRegion(
                    step=counter,
                    kind="view" if step.tool == "zoom" else "evidence",
                    tool=step.tool,
                    region=evidence.region,
                    downsample=_downsample(evidence.region, shown),
                    reasoning=f"{question.question} — {evidence.text}",
                    measurements={m.name: m.value for m in evidence.measurements},
                )
            )
            for mask in (a for a in evidence.artifacts if a.kind == "mask"):
                found.append(
                    ViewedRegion(
                        step=counter,
                        kind="mask",
                        tool=step.tool,
                        region=mask.region or evidence.region,
                        reasoning=question.question,
                        measurements={
                            f"{m.name} ({m.unit})" if m.unit else m.name: m.value
                            for m in evidence.measurements
                        },
                        mask=mask,
                    )
                )
    several = len(report.sources) > 1
    return [
        RunRegions(
            name=f"{folder.name}-image{index}" if several else folder.name,
            agent="insight",
            run_dir=folder,
            slide=source.path,
            slide_mpp=source.mpp,
            regions=per_image[index],
        )
        for index, source in enumerate(report.sources, start=1)
    ]


def _chat(folder: Path, manifest: RunManifest) -> RunRegions:
    """A chat keeps its conversation in a checkpointer, but every view and mask it made is in
    its artifact store with its region: steps follow the order the files were written."""
    store = ArtifactStore(folder / "artifacts")
    found: list[tuple[int, ArtifactRef]] = []
    for sidecar in store.root.glob("*.json"):
        try:
            ref = store.find(sidecar.stem)
            written = os.stat(store.path(ref)).st_mtime_ns
        except (InputError, OSError):
            continue  # not an artifact record, or its image is gone
        if ref.region is not None and ref.kind not in _NOT_VIEWS:
            found.append((written, ref))
    found.sort(key=lambda pair: (pair[0], pair[1].id))
    regions = []
    for step, (_, ref) in enumerate(found, start=1):
        assert ref.region is not None
        is_mask = ref.kind == "mask"
        regions.append(
            ViewedRegion(
                step=step,
                kind="mask" if is_mask else ("view" if ref.kind == "zoom" else "evidence"),
                tool=ref.kind or "view",
                region=ref.region,
                downsample=None if is_mask else _downsample(ref.region, ref),
                mask=ref if is_mask else None,
            )
        )
    return RunRegions(
        name=folder.name,
        agent="chat",
        run_dir=folder,
        slide=str(manifest.inputs.get("slide_path", "")),
        regions=regions,
    )


def _is_eval_run(folder: Path) -> bool:
    return (folder / "results.jsonl").is_file() and (folder / "items").is_dir()


def read_run_regions(folder: str | Path) -> list[RunRegions]:
    """The regions of every run in ``folder``: one entry for a GIANT run or chat session, one
    per input image for an insight run, one per item (that ran an agent) for an eval run.

    ``InputError`` when ``folder`` is none of these, or its record cannot be read.
    """
    root = Path(folder)
    if not root.is_dir():
        raise InputError(f"{root} is not a folder; give a run folder", path=str(root))
    if _is_eval_run(root):
        runs: list[RunRegions] = []
        for item in sorted(p for p in (root / "items").iterdir() if p.is_dir()):
            if (item / "trajectory.json").is_file() or (item / "insights.json").is_file():
                runs.extend(read_run_regions(item))
        return runs
    if (root / "trajectory.json").is_file():
        return [_giant(root)]
    if (root / "insights.json").is_file():
        return _insight(root)
    manifest = RunManifest.find(root)
    if manifest is not None and manifest.agent == "chat":
        return [_chat(root, manifest)]
    raise InputError(
        f"{root} is not a run folder medagent wrote (no trajectory.json, insights.json, chat "
        f"{MANIFEST} or eval results.jsonl); give the folder of a run, chat session or eval",
        path=str(root),
    )
