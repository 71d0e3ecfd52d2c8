"""The Presidio scrubber on hand-written labelled examples: every entity, every operator,
allow-lists, thresholds, and reports that never carry values.

The first run builds the name/place gazetteer into the shared model cache (~20 s, once)."""

from __future__ import annotations

import logging
import os
import re
from pathlib import Path

import platformdirs
import pytest

from agentstack.config import PrivacySettings
from agentstack.ingest.pii.base import Scrubber
from agentstack.ingest.pii.policy import build_scrubber, load_policy

pytestmark = pytest.mark.unit

CACHE = Path(os.environ.get("AGENTSTACK_TEST_MODEL_CACHE")
             or Path(platformdirs.user_cache_dir("agentstack")) / "models")
SALT = PrivacySettings(hash_salt="unit-test-salt-0123456789")


def make(overrides: dict | None = None, privacy: PrivacySettings = SALT):
    return build_scrubber(load_policy(overrides=overrides), privacy, CACHE)


@pytest.fixture(scope="module")
def scrubber():
    s = make({"allow_list": [], "allow_patterns": []})
    s.warm_up()
    return s


# (text, entity, value): the value must disappear and the entity be counted once.
CASES = [
    ("Write to maria.lopez@northwind.io today.", "EMAIL_ADDRESS", "maria.lopez@northwind.io"),
    ("Call me on +44 20 7946 0958 after six.", "PHONE_NUMBER", "+44 20 7946 0958"),
    ("My phone number is (415) 555-0132.", "PHONE_NUMBER", "(415) 555-0132"),
    ("Office: 030 12345678", "PHONE_NUMBER", "030 12345678"),
    ("The server at 192.168.14.7 refused the connection.", "IP_ADDRESS", "192.168.14.7"),
    ("Ping 2001:db8:85a3::8a2e:370:7334 please.", "IP_ADDRESS", "2001:db8:85a3::8a2e:370:7334"),
    ("Charge card 4539 1488 0343 6467 now.", "CREDIT_CARD", "4539 1488 0343 6467"),
    ("Use card 2223000048400011 for it.", "CREDIT_CARD", "2223000048400011"),
    ("Wire it to DE89370400440532013000 by Friday.", "IBAN_CODE", "DE89370400440532013000"),
    ("my iban is gb82west12345698765432", "IBAN_CODE", "gb82west12345698765432"),
    ("His social security number is 536-22-8726.", "US_SSN", "536-22-8726"),
    ("Clone https://deploy:s3cr3tPass@git.internal.net/app.git to start.", "URL_CREDENTIALS",
     "deploy:s3cr3tPass"),
    ("My name is Johanna Lindqvist and I need help.", "PERSON", "Johanna Lindqvist"),
    ("I spoke with Mr. Okonkwo yesterday.", "PERSON", "Okonkwo"),
    ("Please ask Roberto M. Bianchi to sign.", "PERSON", "Roberto M. Bianchi"),
    ("Send it to 221 Baker Street, please.", "LOCATION", "221 Baker Street"),
    ("Our office is at Storgatan 12 in the centre.", "LOCATION", "Storgatan 12"),
    ("She moved here from Portugal last year.", "LOCATION", "Portugal"),
    ("We met in Rotterdam during the fair.", "LOCATION", "Rotterdam"),
]


@pytest.mark.parametrize("text, entity, value", CASES, ids=[f"{c[1]}-{i}" for i, c in enumerate(CASES)])
def test_each_entity_is_found_and_removed(scrubber, text, entity, value):
    out = scrubber.scrub(text)
    assert value not in out.text, out.text
    assert out.counts.get(entity, 0) >= 1, out.counts
    if entity not in {"PERSON", "LOCATION"}:
        assert f"<{entity}>" in out.text or "*" in out.text


@pytest.mark.parametrize("text", [
    "Please send the quarterly report by Monday.",
    "Card 4539 1488 0343 6468 failed the check.",  # Luhn-invalid
    "Account DE89370400440532013001 is wrong.",  # IBAN checksum fails
    "We shipped version 2.4.1 on 2024-05-01 to 40 users.",
    "Capitalized words like Wisdom and Discipline are not names.",
])
def test_no_false_positives_on_plain_text(scrubber, text):
    out = scrubber.scrub(text)
    assert out.counts == {} and out.text == text, out


def test_address_block_is_one_location(scrubber):
    text = "Ship to:\nAnna Berg\n28 Kungsgatan 14\nApt. 5\nUppsala\nSweden 75320"
    found = scrubber.analyze(text)
    places = [d for d in found if d.entity == "LOCATION"]
    assert len(places) == 1 and text[places[0].start:places[0].end].endswith("75320")
    assert any(d.entity == "PERSON" and text[d.start:d.end] == "Anna Berg" for d in found)


def test_operators_replace_mask_hash_keep():
    s = make({"entities": {"EMAIL_ADDRESS": {"operator": "replace", "label": "MAIL"},
                           "CREDIT_CARD": {"operator": "mask", "keep_last": 4},
                           "PERSON": {"operator": "hash"},
                           "PHONE_NUMBER": {"operator": "keep"}}, "mask_char": "#"})
    text = "My name is Johanna Lindqvist, mail jl@northwind.io, card 4539148803436467, phone +46 8 123 456 78."
    out = s.scrub(text)
    assert "<MAIL>" in out.text and "jl@northwind.io" not in out.text
    assert "############6467" in out.text
    assert "Johanna" not in out.text
    tag = re.search(r"<PERSON:([0-9a-f]{16})>", out.text)
    assert tag, out.text
    assert "+46 8 123 456 78" in out.text  # keep leaves it...
    assert out.counts == {"CREDIT_CARD": 1, "EMAIL_ADDRESS": 1, "PERSON": 1, "PHONE_NUMBER": 1}  # ...but counts it
    # Same value and salt -> same tag; another salt -> another tag.
    assert s.scrub(text).text == out.text
    other = make({"entities": {"PERSON": {"operator": "hash"}}},
                 PrivacySettings(hash_salt="another-salt-abcdefghij")).scrub(text).text
    assert tag.group(1) not in other


def test_allow_list_and_allow_patterns():
    text = "Contact Johanna Lindqvist at support@example.com or jl@northwind.io."
    base = make({"allow_list": [], "allow_patterns": []}).scrub(text)
    assert base.counts == {"EMAIL_ADDRESS": 2, "PERSON": 1}
    allowed = make({"allow_list": ["Johanna Lindqvist"],
                    "allow_patterns": [r"[a-z]+@example\.com"]}).scrub(text)
    assert "Johanna Lindqvist" in allowed.text and "support@example.com" in allowed.text
    assert "jl@northwind.io" not in allowed.text
    assert allowed.counts == {"EMAIL_ADDRESS": 1}


def test_thresholds_policy_wide_and_per_entity():
    text = "Ticket reference 5551234567 for Johanna Lindqvist."
    loose = make({"score_threshold": 0.15}).scrub(text)
    assert loose.counts.get("PHONE_NUMBER") == 1  # a bare digit run scores low without context
    strict = make({"score_threshold": 0.5}).scrub(text)
    assert "PHONE_NUMBER" not in strict.counts and strict.counts.get("PERSON") == 1
    no_people = make({"entities": {"PERSON": {"score_threshold": 1.0}}}).scrub(text)
    assert "PERSON" not in no_people.counts and "Johanna" in no_people.text


def test_entity_switched_off_is_not_looked_for():
    out = make({"entities": {"LOCATION": None}}).scrub("She moved here from Portugal last year.")
    assert out.counts == {} and "Portugal" in out.text


def test_reports_and_logs_never_carry_values(scrubber, caplog: pytest.LogCaptureFixture):
    values = [v for _, _, v in CASES]
    text = " ".join(t for t, _, _ in CASES)
    with caplog.at_level(logging.DEBUG):
        out = scrubber.scrub(text)
        many = scrubber.scrub_many([t for t, _, _ in CASES])
    assert all(isinstance(k, str) and isinstance(v, int) for k, v in out.counts.items())
    report = repr(out.counts) + repr([m.counts for m in many]) + scrubber.policy_id + caplog.text
    for value in values:
        for part in re.split(r"[\s:]+", value):
            if len(part) > 3:
                assert part not in report
    masked = {v for _, e, v in CASES if e in {"CREDIT_CARD", "IBAN_CODE"}}  # mask keeps the last 4
    for value in set(values) - masked:
        assert value not in out.text


def test_scrub_many_and_protocol(scrubber):
    texts = ["", "   ", "Write to maria.lopez@northwind.io today."]
    assert isinstance(scrubber, Scrubber)
    assert scrubber.scrub_many(texts) == [scrubber.scrub(t) for t in texts]
    assert scrubber.scrub("").counts == {}


# Rules of the name/place recognizer (names.py), one hand-written sentence each: (text, entity, value).
# The value must be covered by one detection of that entity.
RULE_CASES = [
    ("We borrowed Rebecca's car for the trip.", "PERSON", "Rebecca"),  # possessive split off the name
    ("Chloe: are you coming tonight?", "PERSON", "Chloe"),  # speaker label, first name that is also a word
    ("Are you still there, Molly?", "PERSON", "Molly"),  # vocative
    ("The coach shouted at Dennis during practice.", "PERSON", "Dennis"),  # "<verb> at" is about a person
    ("Yesterday my daughter Olive started school.", "PERSON", "Olive"),  # strong cue before a common word
    ("The album was made by producer Tamraz Okhurashvili.", "PERSON", "Tamraz Okhurashvili"),  # cue + unknown
    ("The bakery on Juniper Hollow Road closed.", "LOCATION", "Juniper Hollow Road"),  # name + street type
    ("Tariffs rose after talks with the United Kingdom failed.", "LOCATION", "United Kingdom"),  # "the" + country
    ("Invoice to:\nTeodor Marsh\n\nKvarnbo\nSweden 74193", "LOCATION", "Kvarnbo\nSweden 74193"),  # country line
    ("Delivered to 14 Larch Road\nFenwick\n+44 7700 900123 (mobile)", "LOCATION", "14 Larch Road\nFenwick"),
    ("Meet me at the corner of al. Róż 4 and Quarry Bypass", "LOCATION", "the corner of al. Róż 4 and Quarry Bypass"),
    ("Mail it to USNS Harkness\nFPO AP 96543 please.", "LOCATION", "USNS Harkness\nFPO AP 96543"),
    ("She lives at 2207 11 rue des Lilas near the park.", "LOCATION", "2207 11 rue des Lilas"),
    ("The office is at Petőfi u. 12. on the second floor.", "LOCATION", "Petőfi u. 12."),
    ("The convoy was sent to VRDOLJAKOVO before dawn.", "LOCATION", "VRDOLJAKOVO"),  # upper case after a cue
    ("Tomasz is originally from Wrzosówka and loves it.", "LOCATION", "Wrzosówka"),
    ("Our tickets to the Netherlands were refunded.", "LOCATION", "Netherlands"),
    ("The clinic is on Ostrava Nábřeží 212 now.", "LOCATION", "Ostrava Nábřeží 212"),
    ("The committee members: Okafor, Lindgren and Vasquez.", "PERSON", "Lindgren"),  # listed with people
]


@pytest.mark.parametrize("text, entity, value", RULE_CASES, ids=[f"{c[1]}-{i}" for i, c in enumerate(RULE_CASES)])
def test_name_and_place_rules(scrubber, text, entity, value):
    found = scrubber.analyze(text)
    start = text.index(value)
    end = start + len(value)
    assert any(d.entity == entity and d.start <= start and end <= d.end for d in found), \
        [(d.entity, text[d.start:d.end]) for d in found]


@pytest.mark.parametrize("text, value", [
    ("We had dinner at a small Estonian restaurant.", "Estonian"),  # nationality adjectives
    ("She spent two years at Quorvantix before that.", "Quorvantix"),  # unknown word after a bare "at"
    ("The press release from Zentrolyx was short.", "Zentrolyx"),
    ("Mark Lee and Hanna Berg of Glimmerpoint's Ada Novak.", "Glimmerpoint"),  # possessive before a name
])
def test_name_and_place_rules_leave_these(scrubber, text, value):
    found = scrubber.analyze(text)
    start = text.index(value)
    assert not any(d.start <= start < d.end for d in found), [(d.entity, text[d.start:d.end]) for d in found]


def test_location_is_trimmed_not_dropped_where_a_phone_overlaps():
    from agentstack.ingest.pii.presidio_scrubber import Detection, _resolve

    kept = _resolve([Detection("LOCATION", 0, 40, 0.8), Detection("PHONE_NUMBER", 30, 45, 0.9)])
    assert [(d.entity, d.start, d.end) for d in kept] == [("LOCATION", 0, 30), ("PHONE_NUMBER", 30, 45)]
