"""VLM presets: detection from any name a user or a config.json gives, token estimates, CLI."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from cli_support import medagent
from medagent.errors import ConfigError
from medagent.models import VLM_PRESETS, VLMPreset, build_model, detect_preset, preset_for
from medagent.settings import Settings


@pytest.mark.parametrize(
    ("key", "name"),
    [
        ("qwen2.5-vl", "qwen2.5-vl"),
        ("qwen2_5_vl", "qwen2.5-vl"),
        ("Qwen2_5_VLForConditionalGeneration", "qwen2.5-vl"),
        ("Qwen/Qwen2.5-VL-72B-Instruct", "qwen2.5-vl"),
        ("lingshu-medical-mllm/Lingshu-7B", "qwen2.5-vl"),
        ("qwen3_vl_moe", "qwen3-vl"),
        ("google/medgemma-27b-it", "gemma3"),
        ("Gemma3ForConditionalGeneration", "gemma3"),
        ("internvl", "internvl3"),
        ("llava_onevision", "llava-onevision"),
        ("HuggingFaceTB/SmolVLM2-2.2B-Instruct", "idefics3"),
        ("LlavaForConditionalGeneration", "llava"),
    ],
)
def test_preset_found_from_name_model_type_architecture_or_hub_id(key: str, name: str) -> None:
    preset = preset_for(key)
    assert preset is not None and preset.name == name


def test_unknown_model_has_no_preset() -> None:
    assert preset_for("meta-llama/Llama-3.1-8B-Instruct") is None


def test_every_preset_is_complete_and_names_are_unique() -> None:
    assert len({p.name for p in VLM_PRESETS}) == len(VLM_PRESETS)
    for preset in VLM_PRESETS:
        assert preset.hub_ids and preset.model_types and preset.architectures
        # One way to estimate tokens: native-resolution patches or tiles, never neither.
        assert (preset.token_side_px is None) != (preset.tokens_per_tile is None)
        assert preset.image_tokens(1000, 700) > 0


def test_token_estimates_follow_each_familys_rule() -> None:
    qwen = preset_for("qwen2.5-vl")
    gemma = preset_for("gemma3")
    internvl = preset_for("internvl3")
    assert isinstance(qwen, VLMPreset) and gemma and internvl
    assert qwen.image_tokens(560, 280) == 20 * 10  # 28-px tokens at native resolution
    assert qwen.image_tokens(4096, 2048) == 37 * 19  # capped to 1024 × 512 first
    assert gemma.image_tokens(4000, 100) == 256  # one fixed 896 px image
    assert internvl.image_tokens(448, 448) == 256  # one tile, no thumbnail
    assert internvl.image_tokens(896, 448) == 3 * 256  # two tiles and the thumbnail


def test_model_presets_command_prints_table_and_json() -> None:
    table = medagent("model", "presets")
    assert table.returncode == 0, table.stderr
    for preset in VLM_PRESETS:
        assert preset.name in table.stdout
    listed = json.loads(medagent("model", "presets", "--json").stdout)
    assert [VLMPreset.model_validate(p) for p in listed] == list(VLM_PRESETS)
    help_text = medagent("model", "presets", "--help").stdout
    assert "model_type" in help_text and "--json" in help_text


def test_a_folder_is_recognised_by_its_config_not_its_name(tmp_path: Path) -> None:
    folder = tmp_path / "my-finetune"
    folder.mkdir()
    config = {"architectures": ["Gemma3ForConditionalGeneration"], "model_type": "gemma3"}
    (folder / "config.json").write_text(json.dumps(config))
    found = detect_preset(str(folder))
    assert found is not None and found.name == "gemma3"
    (folder / "config.json").write_text("{not json")
    assert detect_preset(str(folder)) is None  # unreadable: nothing detected, nothing raised


def test_the_detected_family_caps_images_unless_told_otherwise(tmp_path: Path) -> None:
    def cap(**settings: Any) -> int | None:
        model = build_model(Settings(backend="openai", **settings))
        return getattr(model, "image_long_side", None)

    assert cap(model="google/medgemma-4b-it") == 896
    assert cap(model="Qwen/Qwen2.5-VL-7B-Instruct") == 1024
    assert cap(model="my-model") is None
    assert cap(model="my-model", preset="gemma3") == 896
    assert cap(model="google/medgemma-4b-it", preset="none") is None
    assert cap(model="google/medgemma-4b-it", image_long_side=512) == 512
    with pytest.raises(ConfigError, match="unknown preset 'nope'"):
        cap(model="m", preset="nope")


def test_the_preset_comes_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MEDAGENT_PRESET", "idefics3")
    model = build_model(Settings(backend="openai", model="served-name"))
    assert getattr(model, "image_long_side", None) == 1536
