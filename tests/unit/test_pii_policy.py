"""PII policy loading, overrides, validation, the salt rule and the resource resolver."""

from __future__ import annotations

from pathlib import Path

import pytest

from agentstack.config import PrivacySettings
from agentstack.errors import ConfigError
from agentstack.ingest.pii.policy import SUPPORTED_ENTITIES, PiiPolicy, build_scrubber, deep_merge, load_policy
from agentstack.resources import resource_dir, resource_file, shipped_dir

pytestmark = pytest.mark.unit

SALT = "s" * 24


def test_default_policy_loads_and_covers_every_entity():
    policy = load_policy()
    assert isinstance(policy, PiiPolicy)
    assert set(policy.entities) == set(SUPPORTED_ENTITIES)
    assert policy.entities["PERSON"].operator == "replace"
    assert 0 < policy.score_threshold < 1


def test_overrides_deep_merge_and_can_switch_an_entity_off():
    policy = load_policy(overrides={"entities": {"PERSON": {"operator": "hash"}, "LOCATION": None},
                                    "allow_list": ["Acme"], "score_threshold": 0.7})
    assert policy.entities["PERSON"].operator == "hash"
    assert "LOCATION" not in policy.entities
    assert policy.entities["EMAIL_ADDRESS"].operator == "replace"  # untouched entries survive
    assert policy.allow_list == ["Acme"]  # lists replace
    assert policy.threshold("PHONE_NUMBER") == 0.7


def test_deep_merge_does_not_mutate_inputs():
    base = {"a": {"b": 1, "c": [1]}}
    out = deep_merge(base, {"a": {"c": [2]}})
    assert out == {"a": {"b": 1, "c": [2]}} and base == {"a": {"b": 1, "c": [1]}}


@pytest.mark.parametrize("override, needle", [
    ({"entities": {"PASSPORT": {}}}, "PASSPORT"),
    ({"entities": {"PERSON": {"operator": "shred"}}}, "shred"),
    ({"entities": {"PERSON": {"score_threshold": 1.5}}}, "score_threshold"),
    ({"allow_patterns": ["(unclosed"]}, "(unclosed"),
    ({"surprise": 1}, "surprise"),
])
def test_invalid_policies_are_refused_naming_the_field(override, needle):
    with pytest.raises(ConfigError) as err:
        load_policy(overrides=override)
    assert needle in str(err.value)
    assert err.value.fix


def test_policy_from_settings_policies_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    folder = tmp_path / "mypolicies"
    folder.mkdir()
    (folder / "pii.yaml").write_text("name: strict\nentities:\n  EMAIL_ADDRESS: {operator: mask}\n")
    monkeypatch.setenv("AGENTSTACK_POLICIES_DIR", str(folder))
    policy = load_policy()
    assert policy.name == "strict" and list(policy.entities) == ["EMAIL_ADDRESS"]


def test_missing_and_malformed_policy_files(tmp_path: Path):
    with pytest.raises(ConfigError, match="does not exist"):
        load_policy(tmp_path / "nope.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("entities: [unclosed\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_policy(bad)
    listy = tmp_path / "list.yaml"
    listy.write_text("- a\n- b\n")
    with pytest.raises(ConfigError, match="mapping"):
        load_policy(listy)


def test_hash_without_salt_is_refused_clearly():
    policy = load_policy(overrides={"entities": {"PERSON": {"operator": "hash"}}})
    with pytest.raises(ConfigError) as err:
        build_scrubber(policy, PrivacySettings())
    assert "PERSON" in str(err.value) and "AGENTSTACK_PRIVACY__HASH_SALT" in str(err.value)
    with pytest.raises(ConfigError, match="at least 16"):
        build_scrubber(policy, PrivacySettings(hash_salt="short"))


def test_no_salt_needed_without_hash_and_constructor_is_cheap(tmp_path: Path):
    scrubber = build_scrubber(load_policy(), PrivacySettings(), tmp_path)
    assert scrubber.policy_id.startswith("pii-default-")
    assert not (tmp_path / "pii").exists()  # nothing loaded or built before first use


def test_policy_id_tracks_policy_and_salt(tmp_path: Path):
    hashing = load_policy(overrides={"entities": {"PERSON": {"operator": "hash"}}})
    a = build_scrubber(hashing, PrivacySettings(hash_salt=SALT), tmp_path).policy_id
    b = build_scrubber(hashing, PrivacySettings(hash_salt=SALT), tmp_path).policy_id
    c = build_scrubber(hashing, PrivacySettings(hash_salt="t" * 24), tmp_path).policy_id
    d = build_scrubber(load_policy(), PrivacySettings(hash_salt=SALT), tmp_path).policy_id
    assert a == b and len({a, c, d}) == 3
    assert SALT not in a


def test_resource_resolver(tmp_path: Path):
    assert (shipped_dir("policies") / "pii.yaml").is_file()
    assert resource_dir("policies", tmp_path) == tmp_path
    with pytest.raises(ConfigError, match="does not exist"):
        resource_dir("policies", tmp_path / "missing")
    with pytest.raises(ConfigError, match="does not exist"):
        resource_file("policies", "absent.yaml", tmp_path)
    with pytest.raises(ValueError):
        shipped_dir("secrets")
