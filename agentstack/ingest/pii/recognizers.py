"""Pattern recognizers for the structured PII entities, built on Presidio's ``PatternRecognizer``.

Presidio's own recognizers are used where they fit (IBAN with its checksum, IP v4/v6, US SSN with
its invalidation rules). Four are replaced, each for a measured reason:

* e-mail: Presidio validates the domain with ``tldextract``, which fetches the public-suffix list
  over the network on first use; here it uses tldextract's bundled snapshot only.
* credit card: Presidio's regex only accepts numbers starting 1, 3, 4, 5 or 6 and so misses the
  Mastercard 2-series, JCB 2131 and Maestro; here any 12-19 digit number passing Luhn counts.
* phone: Presidio runs ``phonenumbers``' matcher once per region over the whole text (about 3.5 ms
  per 1,000 characters, half the scrubbing budget) and finds only numbers valid in those regions;
  here a regex proposes digit groups, their shape sets the score and context words raise it.
* URL credentials: a URL whose authority carries ``user:password@`` (no Presidio recognizer).

This module knows nothing about policies, operators or names and places (see ``names.py``).
"""

from __future__ import annotations

import re
from functools import lru_cache

from presidio_analyzer import Pattern, PatternRecognizer
from presidio_analyzer.predefined_recognizers import (
    EmailRecognizer,
    IbanRecognizer,
    IpRecognizer,
    UsSsnRecognizer,
)


@lru_cache(maxsize=1)
def _offline_tld_extractor():
    import tldextract

    # No suffix-list URLs: tldextract uses the snapshot shipped inside the package, no network.
    return tldextract.TLDExtract(suffix_list_urls=(), cache_dir=None)


class OfflineEmailRecognizer(EmailRecognizer):
    """Presidio's e-mail regex; the domain is checked against tldextract's bundled snapshot."""

    def validate_result(self, pattern_text: str):  # noqa: D102
        domain = pattern_text.rsplit("@", 1)[-1]
        return bool(_offline_tld_extractor()(domain).suffix)


def luhn_ok(digits: str) -> bool:
    total, parity = 0, len(digits) % 2
    for i, ch in enumerate(digits):
        d = ord(ch) - 48
        if i % 2 == parity:
            d *= 2
            if d > 9:
                d -= 9
        total += d
    return total % 10 == 0


class LuhnCreditCardRecognizer(PatternRecognizer):
    """12-19 digits, optionally grouped by single spaces or dashes, passing the Luhn check."""

    PATTERNS = [Pattern("card number", r"(?<![\w.+-])\d(?:[ -]?\d){11,18}(?![\w]|[.-]\d)", 0.3)]
    CONTEXT = ["card", "credit", "debit", "cc", "visa", "mastercard", "amex", "maestro", "jcb", "discover"]

    def __init__(self) -> None:
        super().__init__(supported_entity="CREDIT_CARD", patterns=self.PATTERNS, context=self.CONTEXT,
                         name="LuhnCreditCardRecognizer")

    def validate_result(self, pattern_text: str):  # noqa: D102
        digits = re.sub(r"\D", "", pattern_text)
        if len(set(digits)) == 1:
            return False
        return luhn_ok(digits)


# Context is checked here rather than by Presidio's enhancer, which drops spaCy stop words ("call").
_PHONE_BEFORE = re.compile(r"\b(?:phone|telephone|tel|call|calls|mobile|cell|fax|office|desk|number|contact|reach|"
                           r"text|sms|whatsapp|answering|dial|landline|messages?|registered)\b\W*(?:\w+\W+){0,3}$",
                           re.IGNORECASE)
_PHONE_AFTER = re.compile(r"^\W{0,3}(?:office|fax|mobile|cell|phone|tel|desk|home|work)\b", re.IGNORECASE)


class PhoneRecognizer(PatternRecognizer):
    """Phone numbers in international and national formats.

    Scores by shape: a ``+country`` prefix, an area code in parentheses or an extension is strong;
    a NANP ``3-3-4`` grouping is medium; other grouped or bare 7-12 digit runs are weak and need a
    context word (``call``, ``phone``, ``fax``...) to pass the default threshold.
    """

    _G = r"(?:[ .-]?\d{2,4})"
    PATTERNS = [
        Pattern("international", r"(?<![\w+])\+\d{1,3}(?:[ .-]?\(0\))?(?:[ .-]?\(?\d{1,4}\)?)(?:[ .-]?\d{2,4}){1,4}"
                r"(?:\s?(?:x|ext\.?)\s?\d{1,5})?(?!\w|-\d)", 0.65),
        Pattern("parenthesised area", r"(?<![\w)])\(\d{2,4}\)[ .-]?\d{2,4}(?:[ .-]?\d{2,4}){1,2}"
                r"(?:\s?(?:x|ext\.?)\s?\d{1,5})?(?!\w|-\d)", 0.6),
        Pattern("nanp", r"(?<![\w.+-])(?:001[ .-]|1[ .-])?\d{3}[.-]\d{3}[.-]\d{4}(?:\s?(?:x|ext\.?)\s?\d{1,5})?"
                r"(?!\w|-\d)", 0.55),
        Pattern("grouped", r"(?<![\w.+-])\d{2,5}(?:[ .-]\d{2,6}){1,4}(?:\s?(?:x|ext\.?)\s?\d{1,5})?(?!\w|-\d|[.]\d)",
                0.3),
        Pattern("bare", r"(?<![\w.+-])\d{7,12}(?![\w-]|[.]\d)", 0.2),
    ]

    def __init__(self) -> None:
        super().__init__(supported_entity="PHONE_NUMBER", patterns=self.PATTERNS, context=[],
                         name="FastPhoneRecognizer")

    def analyze(self, text, entities, nlp_artifacts=None, regex_flags=None):  # noqa: D102
        results = super().analyze(text, entities, nlp_artifacts, regex_flags)
        for r in results:
            if _PHONE_BEFORE.search(text[max(0, r.start - 40):r.start]) or _PHONE_AFTER.match(text[r.end:r.end + 12]):
                r.score = min(1.0, r.score + 0.35)
        return results

    def invalidate_result(self, pattern_text: str):  # noqa: D102
        main = re.split(r"\s?(?:x|ext\.?)\s?(?=\d)", pattern_text)[0]
        digits = re.sub(r"\D", "", main)
        if not 7 <= len(digits) <= 15 or len(set(digits)) == 1:
            return True
        if re.fullmatch(r"\d{3}-\d{2}-\d{4}", main):  # US SSN shape
            return True
        if re.fullmatch(r"(?:19|20)\d\d[.-]\d\d?[.-]\d\d?|\d\d?[.-]\d\d?[.-](?:19|20)\d\d", main):  # dates
            return True
        return False


class CaseInsensitiveIbanRecognizer(PatternRecognizer):
    """IBANs written in lower or mixed case (Presidio's recognizer only accepts upper case):
    two letters, two check digits, 11-30 alphanumerics, and a valid ISO 13616 mod-97 checksum."""

    PATTERNS = [Pattern("iban any case, compact", r"\b[A-Za-z]{2}\d{2}[A-Za-z0-9]{11,30}\b", 0.3),
                Pattern("iban any case, grouped", r"\b[A-Za-z]{2}\d{2}(?: [A-Za-z0-9]{4}){2,7}(?: \d{1,3})?\b", 0.3)]

    def __init__(self) -> None:
        super().__init__(supported_entity="IBAN_CODE", patterns=self.PATTERNS, context=["iban"],
                         name="CaseInsensitiveIbanRecognizer")

    def validate_result(self, pattern_text: str):  # noqa: D102
        code = pattern_text.replace(" ", "").upper()
        digits = "".join(str(int(ch, 36)) for ch in code[4:] + code[:4])
        return int(digits) % 97 == 1


class UrlCredentialsRecognizer(PatternRecognizer):
    """``scheme://user:password@host...``: the whole URL is the entity."""

    PATTERNS = [Pattern("url with credentials",
                        r"\b[a-z][a-z0-9+.-]{1,15}://[^\s/:@]+:[^\s/@]+@[^\s/?#]+[^\s\"'<>]*", 0.95)]

    def __init__(self) -> None:
        super().__init__(supported_entity="URL_CREDENTIALS", patterns=self.PATTERNS, context=[],
                         name="UrlCredentialsRecognizer")


def pattern_recognizers(entities: set[str]) -> list[PatternRecognizer]:
    """The pattern recognizers needed for ``entities``."""
    factories = [
        ("EMAIL_ADDRESS", OfflineEmailRecognizer),
        ("PHONE_NUMBER", PhoneRecognizer),
        ("IP_ADDRESS", IpRecognizer),
        ("CREDIT_CARD", LuhnCreditCardRecognizer),
        ("IBAN_CODE", IbanRecognizer),
        ("IBAN_CODE", CaseInsensitiveIbanRecognizer),
        ("US_SSN", UsSsnRecognizer),
        ("URL_CREDENTIALS", UrlCredentialsRecognizer),
    ]
    return [factory() for entity, factory in factories if entity in entities]
