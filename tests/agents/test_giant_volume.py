"""GIANT over a CT/MR volume: it starts from a labelled slice montage, goes to slices (the
``slice`` action), zooms into the slice it is on, and the trajectory names every slice.

The phantom (``CT_PHANTOM``) holds a 16 mm bone sphere (700 HU) centred on axial slice 12 and
a fat sphere on slice 26, so where to look is known; the scripted model plays the VLM.
"""

from __future__ import annotations

import asyncio
import json
import logging
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from cli_support import medagent
from medagent.agents.giant import GiantConfig, GiantNavigator, Trajectory
from medagent.artifacts import ArtifactStore
from medagent.errors import ConfigError
from medagent.imaging import Region, Volume, open_volume
from medagent.models import Message, ScriptedModel, parse_structured
from medagent.testing import CT_PHANTOM, write_ct_phantom
from medagent.tools import ToolContext, zoom

BONE = CT_PHANTOM.spheres[0]
QUESTION = "Is there a bone-dense lesion?"
OPTIONS = ["yes", "no"]


def reply(**fields: Any) -> dict[str, Any]:
    return {"json": {"reasoning": "looking", **fields}}


ANSWER = reply(action="answer", answer="1")


@pytest.fixture(scope="module")
def ct_folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_ct_phantom(tmp_path_factory.mktemp("ct") / "series")


@pytest.fixture(scope="module")
def volume(ct_folder: Path) -> Volume:
    return open_volume(ct_folder)


def bone_box(volume: Volume) -> Region:
    """Where the bone sphere shows on its axial slice through the bone window, in pixels."""
    slide = volume.slice("axial", BONE.centre[0], "bone")
    pixels = np.asarray(slide.read(Region.whole(slide.dimensions), 0).convert("L"))
    rows, cols = np.nonzero(pixels > 150)  # 700 HU; water is ~71, air 0
    return Region(
        x=int(cols.min()),
        y=int(rows.min()),
        width=int(cols.max() - cols.min() + 1),
        height=int(rows.max() - rows.min() + 1),
    )


def first_user(model: ScriptedModel) -> Message:
    return next(m for m in model.requests[0].messages if m.role == "user")


def system_text(model: ScriptedModel) -> str:
    return next(m for m in model.requests[0].messages if m.role == "system").text


def test_the_overview_is_a_labelled_montage_stated_in_mm(volume: Volume, tmp_path: Path) -> None:
    model = ScriptedModel([ANSWER])
    result = GiantNavigator(model, runs_dir=tmp_path).run(volume, QUESTION, options=OPTIONS)
    assert result.status == "answered"
    user = first_user(model)
    assert len(user.images) == 1
    text = user.text
    assert "CT volume of 40 slices of 128 x 128 px" in text
    assert "voxels 0.8 x 0.8 x 2.5 mm" in text
    assert "montage of every 2nd axial slice (slices 0 to 38)" in text
    assert "labelled with its slice number" in text and "soft_tissue window" in text
    system = system_text(model)
    assert "radiologist" in system and "CT volume" in system and '"action": "slice"' in system
    for words in (text, system):
        assert "µm" not in words and "level-0" not in words and "slide" not in words
    # The image sent is the volume's own montage at the run's long side.
    trajectory = Trajectory.model_validate_json(result.trajectory_path.read_text())
    assert trajectory.overview is not None and trajectory.overview.kind == "montage"
    grid = volume.montage(2, long_side=1000)
    assert (trajectory.overview.width, trajectory.overview.height) == grid.image.size


def test_slice_to_the_bone_then_zoom_then_answer(volume: Volume, tmp_path: Path) -> None:
    box = bone_box(volume)
    around = Region(x=box.x - 4, y=box.y - 4, width=box.width + 8, height=box.height + 8)
    model = ScriptedModel(
        [
            reply(action="slice", index=BONE.centre[0], window="bone"),
            reply(action="zoom", **around.model_dump()),
            ANSWER,
        ]
    )
    config = GiantConfig(guides_on_crops=False)
    result = GiantNavigator(model, config, runs_dir=tmp_path).run(volume, QUESTION, options=OPTIONS)
    assert result.status == "answered" and result.prediction == "yes"
    trajectory = Trajectory.model_validate_json(result.trajectory_path.read_text())
    slice_step, zoom_step, answer_step = trajectory.steps
    assert [s.kind for s in trajectory.steps] == ["slice", "zoom", "answer"]
    for step in (slice_step, zoom_step):
        assert step.slice is not None
        assert (step.slice.axis, step.slice.index, step.slice.count) == ("axial", 12, 40)
        assert step.slice.position_mm == pytest.approx(-40.0 + 12 * 2.5)
        assert "bone window" in step.slice.window
    assert slice_step.region == Region(x=0, y=0, width=128, height=128)
    assert zoom_step.region == around

    # The image the model got for the slice is ``volume.slice(...)`` rendered (same bytes).
    expected = zoom(
        ToolContext(
            artifacts=ArtifactStore(tmp_path / "expected"),
            slide=volume.slice("axial", 12, "bone"),
            guides=None,
        ),
        x=0,
        y=0,
        width=128,
        height=128,
        long_side=1000,
    ).artifact
    assert slice_step.artifact is not None and slice_step.artifact.id == expected.id
    sent = model.requests[1].messages[-1]
    assert [p.artifact.id for p in sent.images if p.artifact] == [expected.id]
    assert "axial slice 12 of 0-39 (z = -10.0 mm), bone window" in sent.text
    assert "the whole slice (128 x 128 pixels), shown at 0.8 mm per pixel" in sent.text
    # The zoom shows the sphere, and the next turn is told it is still on slice 12.
    store = ArtifactStore(result.run_dir / "artifacts")
    assert zoom_step.artifact is not None
    crop = np.asarray(store.get(zoom_step.artifact).convert("L"))
    assert crop.shape == (around.height, around.width)  # never upscaled
    assert (crop > 150).mean() > 0.15  # the sphere (the scale bar covers a corner)
    assert f"region x={around.x}, y={around.y}" in model.requests[2].messages[-1].text
    assert "axial slice 12" in model.requests[2].messages[-1].text
    assert answer_step.slice is None


def test_an_index_past_the_axis_is_corrected_not_a_crash(volume: Volume, tmp_path: Path) -> None:
    model = ScriptedModel(
        [
            reply(action="zoom", x=0, y=0, width=10, height=10),  # still on the montage
            reply(action="slice", index=40),  # axial slices are 0..39
            reply(action="slice", index=130, axis="coronal"),
            reply(action="slice", index=127, axis="coronal"),
            ANSWER,
        ]
    )
    config = GiantConfig(max_corrections=3)
    result = GiantNavigator(model, config, runs_dir=tmp_path).run(volume, QUESTION, options=OPTIONS)
    assert result.status == "answered"
    trajectory = Trajectory.model_validate_json(result.trajectory_path.read_text())
    step = trajectory.steps[0]
    assert step.kind == "slice" and step.slice is not None
    assert (step.slice.axis, step.slice.index, step.slice.count) == ("coronal", 127, 128)
    assert len(step.errors) == 3
    assert "go to a slice first" in step.errors[0]
    assert "slice 40 is outside the volume: axial slices are 0 to 39" in step.errors[1]
    assert "coronal slices are 0 to 127" in step.errors[2]
    correction = model.requests[2].messages[-1].text
    assert "slice 40 is outside the volume" in correction


def test_regions_of_a_slice_are_clamped_and_revisits_nudged_per_slice(
    volume: Volume, tmp_path: Path
) -> None:
    model = ScriptedModel(
        [
            reply(action="slice", index=5, x=100, y=100, width=60, height=60),
            reply(action="slice", index=5, x=100, y=100, width=28, height=28),
            reply(action="slice", index=6, x=100, y=100, width=28, height=28),
            reply(action="slice", index=5, x=500, y=500, width=10, height=10),
            ANSWER,
        ]
    )
    result = GiantNavigator(model, runs_dir=tmp_path).run(volume, QUESTION, options=OPTIONS)
    assert result.status == "answered"
    steps = Trajectory.model_validate_json(result.trajectory_path.read_text()).steps
    assert steps[0].clamped and steps[0].region == Region(x=100, y=100, width=28, height=28)
    assert "clamped to the slice" in model.requests[1].messages[-1].text
    assert "you already looked at almost the same region" in model.requests[2].messages[-1].text
    assert "already looked" not in model.requests[3].messages[-1].text  # another slice
    assert steps[3].kind == "rejected" and "entirely outside the slice" in steps[3].notes[0]


def test_trajectory_page_and_manifest_name_the_slices(
    volume: Volume, ct_folder: Path, tmp_path: Path
) -> None:
    model = ScriptedModel(
        [reply(action="slice", index=12), reply(action="slice", index=26), ANSWER]
    )
    navigator = GiantNavigator(model, runs_dir=tmp_path)
    result = navigator.run(ct_folder, QUESTION, options=OPTIONS)  # a folder opens as a volume
    assert result.status == "answered"
    trajectory = Trajectory.model_validate_json(result.trajectory_path.read_text())
    assert trajectory.volume is not None and trajectory.volume.shape == (40, 128, 128)
    assert [s.slice.index for s in trajectory.steps if s.slice] == [12, 26]
    assert result.html_path is not None
    page = result.html_path.read_text()
    assert "2 slices looked at" in page
    assert "axial slice 12 of 0-39" in page and "axial slice 26 of 0-39" in page
    assert "axial 26</span>" in page and "volume size" in page
    manifest = json.loads((result.run_dir / "manifest.json").read_text())
    facts = manifest["inputs"]["volume"]
    assert facts["path"] == str(ct_folder) and facts["shape"] == [40, 128, 128]
    assert facts["spacing_mm"] == pytest.approx([2.5, 0.8, 0.8])
    assert "giant/system_volume" in manifest["prompts"]
    # Resuming the finished run reopens the volume from the manifest and reports it again.
    again = asyncio.run(navigator.aresume(result.run_dir))
    assert again.status == "answered" and again.answer == result.answer


def test_a_resumed_run_is_still_on_its_slice(
    volume: Volume, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    from model_support import KillAt, Killed

    run_dir = tmp_path / "run"
    first = ScriptedModel([reply(action="slice", index=26, window="lung")])
    with pytest.raises(Killed):
        GiantNavigator(KillAt(first, 2), runs_dir=tmp_path).run(  # type: ignore[arg-type]
            volume, QUESTION, options=OPTIONS, run_dir=run_dir
        )
    resumed = ScriptedModel([reply(action="zoom", x=60, y=60, width=40, height=40), ANSWER])
    with caplog.at_level(logging.WARNING):
        result = GiantNavigator(resumed, runs_dir=tmp_path).run(
            volume, QUESTION, options=OPTIONS, run_dir=run_dir
        )
    assert "unregistered type" not in caplog.text  # the state's slice revives typed
    assert result.status == "answered"
    zoomed = Trajectory.model_validate_json(result.trajectory_path.read_text()).steps[1]
    assert zoomed.kind == "zoom" and zoomed.slice is not None
    assert (zoomed.slice.index, zoomed.slice.window.split()[0]) == (26, "lung")


def test_the_last_turn_summary_names_slices(volume: Volume, tmp_path: Path) -> None:
    model = ScriptedModel([reply(action="slice", index=12), ANSWER])
    result = GiantNavigator(model, GiantConfig(max_steps=2), runs_dir=tmp_path).run(
        volume, QUESTION, options=OPTIONS
    )
    assert result.status == "answered_at_limit"
    assert "step 1: axial slice 12 of 0-39" in model.requests[1].messages[-1].text


def test_an_mr_volume_has_no_hu_presets(tmp_path: Path) -> None:
    mr = open_volume(write_ct_phantom(tmp_path / "mr", modality="MR", rescale=(1.0, -1024.0)))
    model = ScriptedModel(
        [reply(action="slice", index=3, window="bone"), reply(action="slice", index=3), ANSWER]
    )
    result = GiantNavigator(model, runs_dir=tmp_path).run(mr, QUESTION, options=OPTIONS)
    assert result.status == "answered"
    assert "MR volume" in first_user(model).text and "HU" not in first_user(model).text
    assert '"window" must be null' in system_text(model)
    steps = Trajectory.model_validate_json(result.trajectory_path.read_text()).steps
    assert "an MR has no HU window presets" in steps[0].errors[0]


def test_a_reformat_across_a_gap_spends_the_turn_readably(ct_folder: Path, tmp_path: Path) -> None:
    import pydicom

    gapped = tmp_path / "gapped"
    shutil.copytree(ct_folder, gapped)
    for file in gapped.iterdir():  # drop slice 20: a gap in the positions
        if float(pydicom.dcmread(file).ImagePositionPatient[2]) == pytest.approx(-40 + 20 * 2.5):
            file.unlink()
    volume = open_volume(gapped, allow_gaps=True)
    model = ScriptedModel([reply(action="slice", index=64, axis="coronal"), ANSWER])
    result = GiantNavigator(model, runs_dir=tmp_path).run(volume, QUESTION, options=OPTIONS)
    assert result.status == "answered"
    step = Trajectory.model_validate_json(result.trajectory_path.read_text()).steps[0]
    assert step.kind == "rejected" and "missing slices" in step.notes[0]
    assert "That slice cannot be shown" in model.requests[1].messages[-1].text


@pytest.mark.parametrize("method", ["thumbnail", "patches", "random-region"])
def test_only_giant_navigates_a_volume(volume: Volume, method: Any, tmp_path: Path) -> None:
    navigator = GiantNavigator(ScriptedModel([ANSWER]), method=method, runs_dir=tmp_path)
    with pytest.raises(ConfigError, match="only giant navigates a CT/MR volume"):
        navigator.run(volume, QUESTION)


def test_a_slide_run_keeps_its_own_actions(nav_slide: Path, tmp_path: Path) -> None:
    model = ScriptedModel([ANSWER])
    result = GiantNavigator(model, runs_dir=tmp_path).run(nav_slide, QUESTION, options=OPTIONS)
    assert result.status == "answered"
    assert '"slice"' not in system_text(model) and "montage" not in first_user(model).text
    assert model.requests[0].schema_name == "GiantAction"
    manifest = json.loads((result.run_dir / "manifest.json").read_text())
    assert "volume" not in manifest["inputs"] and "giant/system_volume" not in manifest["prompts"]
    trajectory = Trajectory.model_validate_json(result.trajectory_path.read_text())
    assert trajectory.volume is None


def test_cli_asks_about_a_ct_folder(ct_folder: Path, tmp_path: Path) -> None:
    script = tmp_path / "script.jsonl"
    lines = [reply(action="slice", index=12, window="bone"), ANSWER]
    script.write_text("".join(json.dumps(line) + "\n" for line in lines))
    done = medagent(
        "ask",
        str(ct_folder),
        QUESTION,
        "--options",
        "yes;no",
        "--backend",
        "scripted",
        "--script",
        str(script),
        "--out",
        str(tmp_path / "run"),
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert "axial slice 12 of 0-39" in done.stdout and "answer" in done.stdout
    assert (tmp_path / "run" / "trajectory.html").is_file()


def test_cli_refuses_a_baseline_on_a_volume_in_one_line(ct_folder: Path, tmp_path: Path) -> None:
    done = medagent(
        "ask",
        str(ct_folder),
        QUESTION,
        "--method",
        "patches",
        "--backend",
        "scripted",
        "--script",
        str(tmp_path / "none.jsonl"),
    )
    assert done.returncode == 2, done.stdout + done.stderr
    assert "only giant navigates a CT/MR volume" in done.stderr
    assert len(done.stderr.strip().splitlines()) == 1


@pytest.fixture(scope="module")
def tiny_vlm(tmp_path_factory: pytest.TempPathFactory) -> Any:
    from medagent.models import TransformersBackend
    from medagent.testing import build_tiny_vlm

    # Seed 5 happens to go to slices with regions: the slice schema's every part decodes.
    return TransformersBackend(build_tiny_vlm(tmp_path_factory.mktemp("tiny-vlm"), seed=5))


@pytest.mark.slow
@pytest.mark.hf
def test_tiny_vlm_navigates_a_volume_with_valid_actions(
    tiny_vlm: Any, volume: Volume, tmp_path: Path
) -> None:
    navigator = GiantNavigator(
        tiny_vlm, GiantConfig(max_steps=3, max_tokens=1200), runs_dir=tmp_path
    )
    result = navigator.run(volume, QUESTION, options=OPTIONS)
    trajectory = Trajectory.model_validate_json(result.trajectory_path.read_text())
    # Constrained decoding with the volume's schema: every turn parsed on the first attempt.
    assert result.status in ("answered", "answered_at_limit"), result.error
    assert trajectory.steps and all(not s.errors for s in trajectory.steps)
    assert all(s.kind in ("slice", "zoom", "answer", "final") for s in trajectory.steps)
    for step in trajectory.steps:
        if step.kind in ("slice", "zoom"):
            assert step.slice is not None and step.artifact is not None


@pytest.mark.slow
@pytest.mark.hf
def test_tiny_vlm_decodes_a_slice_within_the_axis(tiny_vlm: Any, volume: Volume) -> None:
    """Whatever a seed prefers, the decoding schema's slice forms alone still decode to a
    slice the checked schema accepts (index within the axis it names)."""
    from typing import Union, get_args

    from pydantic import RootModel

    from medagent.agents.giant._actions import volume_schemas
    from medagent.agents.giant._volume import counts as axis_counts

    counts = axis_counts(volume)
    checked, decoding = volume_schemas(counts, 160, hu=True, on=None)
    forms = tuple(
        f for f in get_args(decoding.model_fields["root"].annotation) if "Slice" in f.__name__
    )
    only_slices: Any = RootModel[Union[forms]]  # type: ignore[valid-type]  # noqa: UP007
    prompt = [Message.user("Go to a slice of this CT volume. Reply with one JSON object.")]
    reply = asyncio.run(tiny_vlm.generate(prompt, schema=only_slices))
    value, error = parse_structured(reply.text, checked)  # as the navigator reads replies
    assert value is not None, error
    action = value.root  # type: ignore[attr-defined]
    assert action.action == "slice" and 0 <= action.index < counts[action.axis]
