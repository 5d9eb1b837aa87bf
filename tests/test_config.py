from pathlib import Path

import pytest

from sswe_node.config import DEFAULT_CONFIG_PATH, load_settings
from sswe_node.errors import ConfigError


def test_shipped_defaults_load() -> None:
    settings = load_settings(DEFAULT_CONFIG_PATH, environ={})
    assert settings.node.port == 11112
    assert settings.node.ae_title == "SSWE_NODE"
    assert settings.node.database_url.startswith("sqlite:///")
    assert settings.model.name


def test_environment_overrides_single_values() -> None:
    env = {
        "SSWE_NODE__NODE__PORT": "11999",
        "SSWE_NODE__NODE__ALLOWED_CALLING_AE_TITLES": '["SCANNER1", "PACS"]',
        "SSWE_NODE__MODEL__NAME": "thyroid-sim",
    }
    settings = load_settings(DEFAULT_CONFIG_PATH, environ=env)
    assert settings.node.port == 11999
    assert settings.node.allowed_calling_ae_titles == ["SCANNER1", "PACS"]
    assert settings.model.name == "thyroid-sim"


def test_unknown_key_names_key_and_file(tmp_path: Path) -> None:
    path = tmp_path / "node.toml"
    path.write_text("[node]\nprot = 104\n")
    with pytest.raises(ConfigError) as info:
        load_settings(path, environ={})
    message = str(info.value)
    assert "node.prot" in message and str(path) in message
    assert "\n" not in message


@pytest.mark.parametrize(
    ("text", "key"),
    [
        ('[node]\nport = "abc"\n', "node.port"),
        ("[node]\nport = 70000\n", "node.port"),
        ('[node]\nae_title = "THIS_TITLE_IS_FAR_TOO_LONG"\n', "node.ae_title"),
        ("[processing]\nbatch_size = 0\n", "processing.batch_size"),
        ('[logging]\nlevel = "LOUD"\n', "logging.level"),
        ('[[destinations]]\nae_title = "PACS"\nhost = ""\nport = 4242\n', "destinations[0].host"),
        ("[tls]\nenabled = true\n", "tls.enabled"),
    ],
)
def test_bad_values_fail_clearly(tmp_path: Path, text: str, key: str) -> None:
    path = tmp_path / "node.toml"
    path.write_text(text)
    with pytest.raises(ConfigError, match=key.replace("[", r"\[").replace("]", r"\]")):
        load_settings(path, environ={})


def test_bad_environment_value_is_reported() -> None:
    with pytest.raises(ConfigError, match="node.port") as info:
        load_settings(DEFAULT_CONFIG_PATH, environ={"SSWE_NODE__NODE__PORT": "many"})
    assert str(info.value).startswith("environment variable SSWE_NODE__NODE__PORT")


def test_unknown_environment_key_names_the_variable() -> None:
    with pytest.raises(ConfigError, match="node.prot") as info:
        load_settings(DEFAULT_CONFIG_PATH, environ={"SSWE_NODE__NODE__PROT": "1"})
    assert "SSWE_NODE__NODE__PROT" in str(info.value)


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="not found"):
        load_settings(tmp_path / "absent.toml", environ={})


def test_destinations_parse(tmp_path: Path) -> None:
    path = tmp_path / "node.toml"
    path.write_text('[[destinations]]\nae_title = "PACS"\nhost = "127.0.0.1"\nport = 4242\n')
    settings = load_settings(path, environ={})
    assert settings.destinations[0].name == "PACS"
    assert settings.destinations[0].port == 4242
