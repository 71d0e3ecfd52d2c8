"""The Presidio-based :class:`~agentstack.ingest.pii.base.Scrubber`.

Presidio's ``AnalyzerEngine`` runs the pattern recognizers (``recognizers.py``) and the gazetteer
recognizer for names and places (``names.py``) over a blank spaCy English tokenizer (no model, no
download); Presidio's ``AnonymizerEngine`` applies the policy's operator to each entity. Between the
two, this module applies the policy's thresholds and allow-lists and resolves overlaps.

The constructor is cheap; :meth:`PresidioScrubber.warm_up` (called on first use) imports Presidio
and loads the cached gazetteer. It knows nothing about documents, chunks or storage.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import re
import threading
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

from agentstack.errors import require
from agentstack.ingest.pii.base import ScrubResult
from agentstack.ingest.pii.policy import PiiPolicy

log = logging.getLogger(__name__)

#: Bumped whenever detection changes, so indexes scrubbed by an older scrubber are recognisable.
SCRUBBER_VERSION = 2

# When two different entities overlap, the more specific wins before the score is compared.
_PRIORITY = {"URL_CREDENTIALS": 9, "EMAIL_ADDRESS": 8, "IBAN_CODE": 7, "CREDIT_CARD": 6, "US_SSN": 5,
             "IP_ADDRESS": 5, "PHONE_NUMBER": 3, "PERSON": 1, "LOCATION": 1}


# Entities whose span is cut back, rather than dropped, where a more specific entity overlaps it.
_TRIMMABLE = {"LOCATION"}


@dataclass(frozen=True)
class Detection:
    """One entity found in a text (offsets into it). Never logged, never reported."""

    entity: str
    start: int
    end: int
    score: float


class _WithholdMessages(logging.Filter):
    """Presidio logs matched text and context words (DEBUG) and unvalidated values (ERROR); keep
    the record's level and logger but withhold its message, which may carry personal data."""

    def filter(self, record: logging.LogRecord) -> bool:
        if record.levelno < logging.WARNING:
            return False
        record.msg, record.args = "%s: message withheld (may contain personal data)", (record.name,)
        return True


def _silence_presidio_values() -> None:
    for name in ("presidio-analyzer", "presidio-anonymizer"):
        logger = logging.getLogger(name)
        if not any(isinstance(f, _WithholdMessages) for f in logger.filters):
            logger.addFilter(_WithholdMessages())


def _lemma_engine_class():
    from presidio_analyzer.nlp_engine import NlpArtifacts, SpacyNlpEngine

    class BlankSpacyNlpEngine(SpacyNlpEngine):
        """spaCy's rule-based English tokenizer with no trained components; lower-cased tokens stand
        in for lemmas so Presidio's context words still work."""

        def load(self) -> None:
            import spacy

            self.nlp = {"en": spacy.blank("en")}

        def _doc_to_nlp_artifact(self, doc, language: str) -> NlpArtifacts:
            lemmas = [t.lower_[:-1] if t.lower_.endswith("s") and len(t) > 3 else t.lower_ for t in doc]
            return NlpArtifacts(entities=[], tokens=doc, tokens_indices=[t.idx for t in doc], lemmas=lemmas,
                                nlp_engine=self, language=language, scores=[])

    return BlankSpacyNlpEngine


class PresidioScrubber:
    """Scrubs text according to a :class:`PiiPolicy`. Thread-safe after :meth:`warm_up`."""

    def __init__(self, policy: PiiPolicy, *, salt: bytes | None, model_cache: Path) -> None:
        if policy.uses_hash and not salt:
            raise ValueError("a policy that hashes needs a salt (use build_scrubber)")
        self.policy = policy
        self._salt = salt
        self._model_cache = Path(model_cache)
        self._lock = threading.Lock()
        self._analyzer = None
        self._anonymizer = None
        self._operators: dict = {}
        self._allow_re: re.Pattern[str] | None = None
        from agentstack.ingest.pii.gazetteer import GAZETTEER_VERSION

        salt_id = hmac.new(salt, b"agentstack-pii-salt-id", hashlib.sha256).hexdigest()[:8] if salt else "none"
        self.policy_id = (f"pii-{policy.name}-{policy.fingerprint()}-s{salt_id}"
                          f"-v{SCRUBBER_VERSION}.{GAZETTEER_VERSION}")

    # Loading ----------------------------------------------------------------------------------
    def warm_up(self) -> None:
        """Import Presidio, load the gazetteer (building its cache once) and build the engines."""
        with self._lock:
            if self._analyzer is not None:
                return
            _silence_presidio_values()
            require("presidio_analyzer", package="presidio-analyzer")
            require("presidio_anonymizer", package="presidio-anonymizer")
            from presidio_analyzer import AnalyzerEngine, RecognizerRegistry
            from presidio_anonymizer import AnonymizerEngine

            from agentstack.ingest.pii.recognizers import pattern_recognizers

            entities = set(self.policy.entities)
            registry = RecognizerRegistry(supported_languages=["en"])
            for recognizer in pattern_recognizers(entities):
                registry.add_recognizer(recognizer)
            if entities & {"PERSON", "LOCATION"}:
                from agentstack.ingest.pii.gazetteer import load_gazetteer
                from agentstack.ingest.pii.names import NameLocationRecognizer

                registry.add_recognizer(NameLocationRecognizer(load_gazetteer(self._model_cache)))
            analyzer = AnalyzerEngine(registry=registry, nlp_engine=_lemma_engine_class()(),
                                      supported_languages=["en"])
            self._operators = self._build_operators()
            allow = [f"(?:{p})" for p in self.policy.allow_patterns] + [re.escape(s) for s in self.policy.allow_list]
            self._allow_re = re.compile("|".join(allow)) if allow else None
            self._anonymizer = AnonymizerEngine()
            self._analyzer = analyzer
            log.info("PII scrubber %s ready (%d recognizers)", self.policy_id, len(registry.recognizers))

    def _build_operators(self) -> dict:
        from presidio_anonymizer.entities import OperatorConfig

        ops = {}
        for entity, rule in self.policy.entities.items():
            label = rule.label or entity
            if rule.operator == "replace":
                ops[entity] = OperatorConfig("replace", {"new_value": f"<{label}>"})
            elif rule.operator == "keep":
                ops[entity] = OperatorConfig("keep")
            elif rule.operator == "mask":
                ops[entity] = OperatorConfig("custom", {"lambda": _masker(self.policy.mask_char, rule.keep_last)})
            else:
                ops[entity] = OperatorConfig("custom", {"lambda": _hasher(self._salt, label, self.policy.hash_chars)})
        return ops

    # Scrubbing --------------------------------------------------------------------------------
    def analyze(self, text: str) -> list[Detection]:
        """The entities the policy would act on, after thresholds, allow-lists and overlap resolution."""
        if self._analyzer is None:
            self.warm_up()
        if not text or not text.strip():
            return []
        policy = self.policy
        low = min(policy.threshold(e) for e in policy.entities)
        raw = self._analyzer.analyze(text, language="en", entities=list(policy.entities), score_threshold=low)
        kept = [r for r in raw if r.entity_type in policy.entities and r.score >= policy.threshold(r.entity_type)]
        if self._allow_re is not None:
            kept = [r for r in kept if not self._allow_re.fullmatch(text[r.start:r.end])]
        return _resolve([Detection(r.entity_type, r.start, r.end, r.score) for r in kept])

    def scrub(self, text: str) -> ScrubResult:
        found = self.analyze(text)
        if not found:
            return ScrubResult(text=text, counts={})
        from presidio_anonymizer.entities import RecognizerResult

        results = [RecognizerResult(d.entity, d.start, d.end, d.score) for d in found]
        out = self._anonymizer.anonymize(text=text, analyzer_results=results, operators=self._operators)
        counts = Counter(item.entity_type for item in out.items)
        return ScrubResult(text=out.text, counts=dict(sorted(counts.items())))

    def scrub_many(self, texts: list[str]) -> list[ScrubResult]:
        return [self.scrub(t) for t in texts]


def _resolve(found: list[Detection]) -> list[Detection]:
    """Merge overlapping detections of one entity; between entities keep the more specific, then
    the higher score, then the longer span."""
    by_entity: dict[str, list[Detection]] = {}
    for d in sorted(found, key=lambda d: (d.entity, d.start, -d.end)):
        group = by_entity.setdefault(d.entity, [])
        if group and d.start < group[-1].end:
            last = group[-1]
            group[-1] = Detection(d.entity, last.start, max(last.end, d.end), max(last.score, d.score))
        else:
            group.append(d)
    ranked = sorted((d for g in by_entity.values() for d in g),
                    key=lambda d: (-_PRIORITY.get(d.entity, 0), -d.score, -(d.end - d.start)))
    chosen: list[Detection] = []
    for d in ranked:
        if all(d.end <= c.start or d.start >= c.end for c in chosen):
            chosen.append(d)
        elif d.entity in _TRIMMABLE:
            # A long address that swallowed a phone number keeps its part before (or after) it.
            clash = [c for c in chosen if not (d.end <= c.start or d.start >= c.end)]
            head_end = min(c.start for c in clash)
            tail_start = max(c.end for c in clash)
            for s, e in ((d.start, head_end), (tail_start, d.end)):
                if e - s >= 3 and all(e <= c.start or s >= c.end for c in chosen):
                    chosen.append(Detection(d.entity, s, e, d.score))
                    break
    return sorted(chosen, key=lambda d: d.start)


def _masker(char: str, keep_last: int):
    def mask(value: str) -> str:
        visible = min(keep_last, max(len(value) - 1, 0))
        cut = len(value) - visible
        return "".join(ch if ch.isspace() else char for ch in value[:cut]) + value[cut:]

    return mask


def _hasher(salt: bytes | None, label: str, chars: int):
    assert salt, "hash operator without a salt"

    def digest(value: str) -> str:
        return f"<{label}:{hmac.new(salt, value.encode('utf-8'), hashlib.sha256).hexdigest()[:chars]}>"

    return digest
