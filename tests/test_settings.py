"""Settings: defaults < MEDAGENT_* environment < explicit values."""

from __future__ import annotations

import pytest

from medagent.errors import ConfigError
from medagent.settings import Settings


def test_environment_is_read(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MEDAGENT_BACKEND", "transformers")
    monkeypatch.setenv("MEDAGENT_MODEL", "/models/tiny")
    monkeypatch.setenv("MEDAGENT_BASE_URL", "http://a:1/v1, http://b:2/v1/")
    settings = Settings()
    assert settings.backend == "transformers"
    assert settings.model == "/models/tiny"
    assert settings.base_url == ["http://a:1/v1", "http://b:2/v1"]


def test_explicit_values_override_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MEDAGENT_MODEL", "from-env")
    assert Settings(model="from-flag").model == "from-flag"


def test_unknown_backend_is_refused() -> None:
    with pytest.raises(ValueError, match="backend"):
        Settings(backend="gpt")  # type: ignore[arg-type]


def test_cli_turns_validation_errors_into_config_errors() -> None:
    from medagent.cli import build_settings

    with pytest.raises(ConfigError, match="invalid --timeout: Input should be greater than 0"):
        build_settings(timeout_s=-1)
