"""The PII policy: which entities to look for, what to do with each, and what to leave alone.

A policy is data (``policies/pii.yaml``, overridable per index); the hashing salt is a secret and
lives in settings (``settings.privacy.hash_salt``), never here. :func:`load_policy` reads and
validates a policy; :func:`build_scrubber` turns a policy plus the privacy settings into a
:class:`~agentstack.ingest.pii.base.Scrubber`. This module knows nothing about Presidio: the
scrubber lives in ``presidio_scrubber.py`` and is imported lazily.
"""

from __future__ import annotations

import copy
import hashlib
import json
import re
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import yaml
from pydantic import BaseModel, Field, ValidationError, field_validator, model_validator

from agentstack.errors import ConfigError

if TYPE_CHECKING:
    from agentstack.config import PrivacySettings
    from agentstack.ingest.pii.base import Scrubber

POLICY_FILE = "pii.yaml"

#: Entities the scrubber can find. Names follow Presidio's, plus URL_CREDENTIALS (a URL whose
#: authority carries ``user:password@``).
SUPPORTED_ENTITIES: tuple[str, ...] = (
    "PERSON", "LOCATION", "EMAIL_ADDRESS", "PHONE_NUMBER", "IP_ADDRESS", "CREDIT_CARD",
    "IBAN_CODE", "US_SSN", "URL_CREDENTIALS",
)

Operator = Literal["replace", "mask", "hash", "keep"]
MIN_SALT_CHARS = 16


class EntityRule(BaseModel):
    """What to do with one entity type."""

    model_config = {"extra": "forbid"}

    operator: Operator = Field(default="replace", description="replace: `<ENTITY>`; mask: every character "
                               "but the last `keep_last` becomes `mask_char`; hash: `<ENTITY:hex>` with a "
                               "salted HMAC-SHA256; keep: leave the text, but still count it.")
    score_threshold: float | None = Field(default=None, ge=0.0, le=1.0, description="Minimum detector "
                                          "score for this entity; unset = the policy's score_threshold.")
    keep_last: int = Field(default=0, ge=0, le=8, description="mask: characters left visible at the end.")
    label: str | None = Field(default=None, min_length=1, max_length=40,
                              description="replace/hash: the tag written, default the entity type.")


class PiiPolicy(BaseModel):
    """A validated PII policy. Build it with :func:`load_policy`."""

    model_config = {"extra": "forbid"}

    name: str = Field(default="default", pattern=r"^[A-Za-z0-9_.-]{1,64}$",
                      description="Name recorded in the policy id and in manifests.")
    language: Literal["en"] = Field(default="en", description="Text language (only English is supported).")
    score_threshold: float = Field(default=0.5, ge=0.0, le=1.0,
                                   description="Minimum detector score for entities without their own.")
    entities: dict[str, EntityRule] = Field(description="Entity type -> rule; types not listed are not "
                                            "looked for.")
    allow_list: list[str] = Field(default_factory=list, description="Exact strings never scrubbed "
                                  "(case-sensitive, the whole detected span must match).")
    allow_patterns: list[str] = Field(default_factory=list, description="Regular expressions; a detected "
                                      "span that fully matches one is never scrubbed.")
    mask_char: str = Field(default="*", min_length=1, max_length=1, description="mask: the replacement char.")
    hash_chars: int = Field(default=16, ge=8, le=64, description="hash: hex characters of the HMAC kept.")

    @field_validator("entities", mode="before")
    @classmethod
    def _drop_nulls(cls, v: Any) -> Any:
        # An override may switch an entity off with `ENTITY: null`.
        if isinstance(v, dict):
            return {k: ({} if r is True else r) for k, r in v.items() if r is not None and r is not False}
        return v

    @field_validator("entities", mode="after")
    @classmethod
    def _known_entities(cls, v: dict[str, EntityRule]) -> dict[str, EntityRule]:
        unknown = sorted(set(v) - set(SUPPORTED_ENTITIES))
        if unknown:
            raise ValueError(f"unknown entity type(s) {unknown}; supported: {list(SUPPORTED_ENTITIES)}")
        return v

    @field_validator("allow_patterns", mode="after")
    @classmethod
    def _patterns_compile(cls, v: list[str]) -> list[str]:
        for pattern in v:
            try:
                re.compile(pattern)
            except re.error as exc:
                raise ValueError(f"allow_patterns entry {pattern!r} is not a valid regular expression: {exc}")
        return v

    @model_validator(mode="after")
    def _allow_list_clean(self) -> "PiiPolicy":
        if any(not s for s in self.allow_list):
            raise ValueError("allow_list contains an empty string")
        return self

    # Derived ------------------------------------------------------------------------------
    def threshold(self, entity: str) -> float:
        rule = self.entities[entity]
        return self.score_threshold if rule.score_threshold is None else rule.score_threshold

    @property
    def uses_hash(self) -> bool:
        return any(r.operator == "hash" for r in self.entities.values())

    def fingerprint(self) -> str:
        """A short content hash of the policy (stable across key order)."""
        blob = json.dumps(self.model_dump(mode="json"), sort_keys=True).encode()
        return hashlib.sha256(blob).hexdigest()[:12]


def deep_merge(base: dict[str, Any], override: dict[str, Any]) -> dict[str, Any]:
    """``override`` merged into a copy of ``base``: mappings merge key by key, anything else
    (lists, scalars, ``None``) replaces the base value."""
    out = copy.deepcopy(base)
    for key, value in override.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = deep_merge(out[key], value)
        else:
            out[key] = copy.deepcopy(value)
    return out


def default_policy_path(policies_dir: Path | None = None) -> Path:
    """``pii.yaml`` in ``policies_dir`` (``settings.policies_dir``) or in the shipped policies."""
    from agentstack.resources import resource_file

    return resource_file("policies", POLICY_FILE, policies_dir)


def load_policy(path: Path | None = None, overrides: dict | None = None) -> PiiPolicy:
    """Read and validate a PII policy.

    ``path`` None means the default ``pii.yaml``: in ``settings.policies_dir`` when set, else the
    shipped one. ``overrides`` (for example the ``pii:`` section of an index spec) is deep-merged
    over the file before validation; see :func:`deep_merge`. Raises :class:`ConfigError` naming
    the file and each bad field.
    """
    if path is None:
        from agentstack.config import load_settings

        path = default_policy_path(load_settings().policies_dir)
    path = Path(path)
    try:
        raw = yaml.safe_load(path.read_text("utf-8")) or {}
    except FileNotFoundError:
        raise ConfigError(f"PII policy file {path} does not exist",
                          fix="create it, or pass path=None for the default policy") from None
    except yaml.YAMLError as exc:
        raise ConfigError(f"PII policy file {path} is not valid YAML: {exc}", fix="correct the YAML") from None
    if not isinstance(raw, dict):
        raise ConfigError(f"PII policy file {path} must hold a mapping, got {type(raw).__name__}",
                          fix="see policies/pii.yaml for the format")
    if overrides:
        if not isinstance(overrides, dict):
            raise ConfigError(f"PII policy overrides must be a mapping, got {type(overrides).__name__}",
                              fix="give overrides as a dict, e.g. {'entities': {'PERSON': {'operator': 'keep'}}}")
        raw = deep_merge(raw, overrides)
    try:
        return PiiPolicy.model_validate(raw)
    except ValidationError as exc:
        lines = [f"{'.'.join(str(p) for p in e['loc']) or '(policy)'} = {e.get('input')!r}: {e['msg']}"
                 for e in exc.errors()]
        where = f"{path}" + (" with overrides" if overrides else "")
        raise ConfigError(f"invalid PII policy {where}:\n  " + "\n  ".join(lines),
                          fix="correct the fields named above (see policies/pii.yaml for the format)") from None


def salt_bytes(policy: PiiPolicy, privacy: "PrivacySettings") -> bytes | None:
    """The hashing salt if the policy needs one; refuses clearly when it is missing or short."""
    if not policy.uses_hash:
        return None
    hashed = sorted(k for k, r in policy.entities.items() if r.operator == "hash")
    secret = privacy.hash_salt.get_secret_value() if privacy.hash_salt is not None else ""
    if not secret:
        raise ConfigError(f"PII policy {policy.name!r} hashes {hashed} but no hashing salt is set",
                          fix="set AGENTSTACK_PRIVACY__HASH_SALT (or [privacy] hash_salt in agentstack.toml) "
                              f"to a random secret of at least {MIN_SALT_CHARS} characters, or change "
                              "those entities' operator")
    if len(secret) < MIN_SALT_CHARS:
        raise ConfigError(f"the PII hashing salt is {len(secret)} characters; at least {MIN_SALT_CHARS} are "
                          "required", fix="set AGENTSTACK_PRIVACY__HASH_SALT to a longer random secret")
    return secret.encode("utf-8")


def build_scrubber(policy: PiiPolicy, privacy: "PrivacySettings",
                   model_cache: Path | None = None) -> "Scrubber":
    """The Presidio-based scrubber for ``policy``.

    ``model_cache`` (``settings.model_cache``) is where the compiled name and place gazetteers are
    cached; None means the settings' default. Raises :class:`ConfigError` if the policy hashes and
    no salt is set, and :class:`~agentstack.errors.DependencyMissingError` if Presidio is missing.
    """
    salt = salt_bytes(policy, privacy)
    if model_cache is None:
        from agentstack.config import load_settings

        model_cache = load_settings().model_cache
    from agentstack.ingest.pii.presidio_scrubber import PresidioScrubber

    return PresidioScrubber(policy, salt=salt, model_cache=Path(model_cache))
