import pytest

from agentstack.engines.embedded.weights import convert_gguf, default_gguf_path, resolve_model_dir
from agentstack.errors import ConfigError

pytestmark = pytest.mark.unit


def test_model_setting_errors_say_what_to_do(tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(ConfigError, match="no config.json"):
        resolve_model_dir(str(tmp_path / "empty"), tmp_path / "cache")
    with pytest.raises(ConfigError, match="never downloaded"):
        resolve_model_dir("HuggingFaceTB/SmolLM2-135M-Instruct", tmp_path / "cache")


def test_a_model_directory_is_used_as_is(tmp_path):
    (tmp_path / "m").mkdir()
    (tmp_path / "m" / "config.json").write_text("{}")
    assert resolve_model_dir(str(tmp_path / "m"), tmp_path / "cache") == (tmp_path / "m", "m")


def test_default_gguf_conversion_is_cached_with_a_manifest():
    from tests.conftest import MODEL_CACHE

    gguf = default_gguf_path()
    assert gguf.name.endswith(".gguf")
    target = convert_gguf(gguf, MODEL_CACHE, "SmolLM2-135M-Instruct")  # converted once per cache
    assert (target / "manifest.json").is_file() and (target / "model.safetensors").is_file()
    assert convert_gguf(gguf, MODEL_CACHE, "SmolLM2-135M-Instruct") == target
