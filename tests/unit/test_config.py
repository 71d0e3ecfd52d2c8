import pytest

from agentstack.config import describe_fields, load_settings
from agentstack.errors import ConfigError

pytestmark = pytest.mark.unit


def test_env_and_nested_env(monkeypatch, tmp_path):
    monkeypatch.setenv("AGENTSTACK_ENGINE__MAX_BATCH_SIZE", "4")
    monkeypatch.setenv("AGENTSTACK_SERVER__PORT", "9001")
    s = load_settings()
    assert s.engine.max_batch_size == 4 and s.server.port == 9001
    assert s.data_dir == tmp_path / "data"  # the autouse fixture's temp dir


def test_toml_file_and_env_precedence(monkeypatch, tmp_path):
    (tmp_path / "agentstack.toml").write_text('[engine]\nmax_batch_size = 6\nmax_queue = 3\n'
                                              '[[auth.keys]]\nid = "a"\nrole = "app"\nkey = "0123456789abcdef"\n')
    monkeypatch.setenv("AGENTSTACK_ENGINE__MAX_QUEUE", "5")
    s = load_settings()
    assert s.engine.max_batch_size == 6  # from the file
    assert s.engine.max_queue == 5  # env wins over the file
    assert s.auth.keys[0].id == "a"


def test_errors_name_field_env_and_value(monkeypatch):
    monkeypatch.setenv("AGENTSTACK_ENGINE__MAX_BATCH_SIZE", "lots")
    with pytest.raises(ConfigError) as info:
        load_settings()
    message = str(info.value)
    assert "engine.max_batch_size" in message and "AGENTSTACK_ENGINE__MAX_BATCH_SIZE" in message and "'lots'" in message


def test_cross_field_and_key_checks():
    with pytest.raises(ConfigError, match="max_running"):
        load_settings(engine={"max_batch_size": 16, "max_running": 4})
    with pytest.raises(ConfigError, match="exactly one of"):
        load_settings(auth={"keys": [{"id": "a", "role": "app"}]})
    with pytest.raises(ConfigError, match="at least 16"):
        load_settings(auth={"keys": [{"id": "a", "role": "app", "key": "short"}]})
    with pytest.raises(ConfigError, match="duplicate"):
        load_settings(auth={"keys": [{"id": "a", "role": "app", "key": "x" * 16},
                                     {"id": "a", "role": "operator", "key": "y" * 16}]})
    with pytest.raises(ConfigError) as info:
        load_settings(auth={"keys": [{"id": "a", "role": "root", "key": "x" * 16}]})
    assert "x" * 16 not in str(info.value)  # secrets are never echoed back


def test_missing_config_file_is_named(monkeypatch, tmp_path):
    monkeypatch.setenv("AGENTSTACK_CONFIG", str(tmp_path / "nope.toml"))
    with pytest.raises(ConfigError, match="nope.toml"):
        load_settings()


def test_key_digest_lets_files_hold_no_plaintext():
    import hashlib

    digest = hashlib.sha256(b"a-long-secret-key-123").hexdigest()
    s = load_settings(auth={"keys": [{"id": "a", "role": "app", "sha256": digest}]})
    from server.auth import KeyStore

    assert KeyStore(s.auth).authenticate("a-long-secret-key-123", "u1").key_id == "a"


def test_every_field_is_documented():
    rows = describe_fields()
    assert len(rows) > 30
    undocumented = [env for env, _, _, doc in rows if not doc]
    assert undocumented == []


def test_configuration_doc_is_current():
    from pathlib import Path

    from agentstack.cli.config_cmd import markdown

    doc = Path(__file__).resolve().parents[2] / "docs" / "configuration.md"
    assert doc.read_text() == markdown(), "regenerate: agentstack config --markdown > docs/configuration.md"


def test_index_backend_follows_the_database_and_pgvector_needs_postgres():
    from agentstack.config import load_settings
    from agentstack.errors import ConfigError

    assert load_settings().index_backend == "faiss"  # make serve: no service
    pg = {"url": "postgresql://u:p@db:5432/agentstack"}
    assert load_settings(database=pg).index_backend == "pgvector"
    assert load_settings(database=pg, index={"backend": "faiss"}).index_backend == "faiss"
    with pytest.raises(ConfigError, match="index.backend = 'pgvector' keeps indexes in PostgreSQL"):
        load_settings(index={"backend": "pgvector"})
