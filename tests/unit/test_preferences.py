"""Feedback → pairs and unpaired thumbs, with deduplication, caps, the held-out split and the
minimum counts. The scrubber is switched off here (PII scrubbing is tested end to end through the
export and the job in tests/integration)."""

from __future__ import annotations

import pytest

from agentstack.config import PreferenceSettings
from agentstack.history.store import ResponseRecord, ResponseStore

pytestmark = pytest.mark.unit


@pytest.fixture
def db(settings):
    from agentstack.db import open_db

    database = open_db(settings)
    yield database
    database.close()


@pytest.fixture
def store(db):
    from agentstack.feedback.store import FeedbackStore

    return FeedbackStore(db)


def builder(store, settings, **options):
    from agentstack.alignment.preferences import PreferenceBuilder
    from agentstack.feedback.scrub import TextScrubber

    opts = PreferenceSettings(**{"heldout_fraction": 0.0, **options})
    return PreferenceBuilder(store, TextScrubber(settings, enabled=False), opts)


def answer(db, store, rid, prompt, text, rating=None, *, user="u1", key="app1", parent=None, correction=None):
    ResponseStore(db).record(ResponseRecord(id=rid, key_id=key, user_id=user, endpoint="chat", model="agentstack",
                                            model_version="base", messages=[{"role": "user", "content": prompt}],
                                            params={}, answer=text, parent_id=parent))
    if rating:
        store.vote(response_id=rid, key_id=key, user_id=user, rating=rating, correction=correction)


def test_sibling_corrections_revisions_and_unpaired(db, store, settings):
    answer(db, store, "a0", "What is 2+2?", "4.", "up")
    answer(db, store, "a1", "What is 2+2?", "It is five, I think.", "down", parent="a0")
    answer(db, store, "a2", "What is 2+2?", "Never voted on.", parent="a0")
    answer(db, store, "b0", "Capital of France?", "Lyon.", "down", correction="Paris.")
    answer(db, store, "c0", "Say hi.", "Go away.", "down")
    data = builder(store, settings).build(revisions={"c0": "Hi there!"})
    by_source = {p.source: p for p in data.pairs}
    assert set(by_source) == {"siblings", "correction", "revision"}
    assert (by_source["siblings"].chosen, by_source["siblings"].rejected) == ("4.", "It is five, I think.")
    assert (by_source["correction"].chosen, by_source["correction"].rejected) == ("Paris.", "Lyon.")
    assert (by_source["revision"].chosen, by_source["revision"].rejected) == ("Hi there!", "Go away.")
    assert by_source["siblings"].prompt[-1] == {"role": "user", "content": "What is 2+2?"}
    labels = sorted((u.completion, u.label, u.source) for u in data.unpaired)
    assert ("Paris.", True, "correction") in labels and ("Go away.", False, "thumb") in labels
    assert len(data.unpaired) == 5  # four votes and one correction; the unvoted sibling is not used
    assert data.stats["votes"] == 4 and data.stats["up"] == 1


def test_duplicates_conflicts_and_caps(db, store, settings):
    for i in range(3):  # the same exchange voted by three users: one pair kept
        answer(db, store, f"d{i}", "Same question", "Good.", "up", user=f"u{i}")
        answer(db, store, f"e{i}", "Same question", "Bad.", "down", user=f"u{i}", parent=f"d{i}")
    answer(db, store, "f0", "Split vote", "Maybe.", "up", user="x1")
    answer(db, store, "f1", "Split vote", "Maybe.", "down", user="x2")
    data = builder(store, settings).build()
    assert len(data.pairs) == 1 and data.stats["dropped"]["duplicate_pairs"] == 2
    assert data.stats["dropped"]["conflicting_unpaired"] == 2
    assert all(u.completion != "Maybe." for u in data.unpaired)

    for i in range(6):
        answer(db, store, f"g{i}", f"Question {i}", f"Answer {i}.", "up", user="spammer", key="app9",
               correction=f"Better {i}.")
    capped = builder(store, settings, max_per_user=2).build()
    spam = [p for p in capped.pairs if p.key_id == "app9"]
    assert len(spam) == 2 and capped.stats["dropped"]["over_cap_pairs"] == 4
    assert {p.chosen for p in spam} == {"Better 5.", "Better 4."}  # the newest are kept
    by_key = builder(store, settings, max_per_key=3).build()
    assert len([p for p in by_key.pairs if p.key_id == "app9"]) == 3


def test_heldout_split_is_stable_and_disjoint_by_prompt(db, store, settings):
    from agentstack.alignment.preferences import prompt_key

    for i in range(40):
        answer(db, store, f"h{i}", f"Prompt number {i}", "Yes.", "up", correction=f"Yes, {i}.")
        answer(db, store, f"k{i}", f"Prompt number {i}", "No.", "down", correction=f"No, {i}.")
    b = builder(store, settings, heldout_fraction=0.25)
    one, two = b.build(), b.build()
    train_prompts = {prompt_key(p.prompt) for p in one.pairs}
    held_prompts = {prompt_key(p.prompt) for p in one.pairs_heldout}
    assert held_prompts and train_prompts and not train_prompts & held_prompts
    assert 0.05 < len(held_prompts) / 40 < 0.5
    assert [p.chosen for p in one.pairs_heldout] == [p.chosen for p in two.pairs_heldout]
    assert not {prompt_key(u.prompt) for u in one.unpaired} & {prompt_key(u.prompt) for u in one.unpaired_heldout}


def test_small_rounds_still_hold_out_one_prompt(db, store, settings):
    answer(db, store, "a", "First", "x", "up", correction="y")
    answer(db, store, "b", "Second", "x", "up", correction="z")
    data = builder(store, settings, heldout_fraction=0.01).build()
    assert len(data.pairs) == 1 and len(data.pairs_heldout) == 1


def test_too_little_data_says_how_much_is_needed(db, store, settings):
    from agentstack.alignment.preferences import InsufficientDataError, require

    answer(db, store, "a", "Q", "A.", "up", correction="B.")
    data = builder(store, settings).build()
    with pytest.raises(InsufficientDataError, match=r"needs at least 50 training pairs.*found 1") as info:
        require("dpo", data, PreferenceSettings())
    assert info.value.needed == 50 and info.value.found == 1
    with pytest.raises(InsufficientDataError, match=r"KTO round needs at least 50 thumbs"):
        require("kto", data, PreferenceSettings())
    require("dpo", data, PreferenceSettings(min_pairs=1))


def test_truncation_keeps_the_system_message_and_last_turn():
    from agentstack.alignment.preferences import truncate_prompt

    msgs = [{"role": "system", "content": "S" * 300}, {"role": "user", "content": "old " * 100},
            {"role": "assistant", "content": "reply " * 100}, {"role": "user", "content": "the question"}]
    out = truncate_prompt(msgs, 250)
    assert out[0]["role"] == "system" and out[-1]["content"] == "the question"
    assert sum(len(m["content"]) for m in out) <= 250 and len(out) == 2


def test_reward_pairs_from_unpaired_keep_each_side_with_its_own_prompt():
    from agentstack.alignment.preferences import PreferenceData, Unpaired, reward_pairs_from_unpaired

    data = PreferenceData(unpaired=[Unpaired([{"role": "user", "content": "p1"}], "good", True, "thumb"),
                                    Unpaired([{"role": "user", "content": "p2"}], "bad", False, "thumb"),
                                    Unpaired([{"role": "user", "content": "p3"}], "fine", True, "thumb")])
    pairs = reward_pairs_from_unpaired(data)
    assert [(p.chosen, p.rejected) for p in pairs] == [("good", "bad"), ("fine", "bad")]
    assert pairs[0].rejected_prompt[0]["content"] == "p2" and pairs[0].row()["rejected_prompt"]


def test_unsupported_answers_become_negative_data_and_are_exported_with_their_verdict(db, store, settings):
    """A voted answer whose raw text had a sentence the sources did not support: the raw text is an
    undesirable completion (and the rejected side of a pair when the checked answer was voted up);
    the verdict is stored with the response and exported with the vote."""
    from agentstack.feedback.export import export_records
    from agentstack.feedback.scrub import TextScrubber

    raw = "Paris is the capital [1]. It has 90 million people [1]."
    grounding = {"decision": "answered", "raw_answer": raw, "version": "grounding-1",
                 "claims": [{"text": "Paris is the capital [1].", "support": 0.9, "answers": 0.6, "supported": True},
                            {"text": "It has 90 million people [1].", "support": 0.0, "answers": 0.5,
                             "supported": False}]}
    ResponseStore(db).record(ResponseRecord(id="g0", key_id="app1", user_id="u1", endpoint="chat", model="agentstack",
                                            model_version="base", messages=[{"role": "user", "content": "Paris?"}],
                                            params={}, answer="Paris is the capital [1].", grounding=grounding))
    store.vote(response_id="g0", key_id="app1", user_id="u1", rating="up")
    answer(db, store, "g1", "Lyon?", "Lyon is a city.", "up")  # no verdict stored (before the verifier)
    assert ResponseStore(db).get("g0").grounding == grounding and ResponseStore(db).get("g1").grounding is None
    data = builder(store, settings).build()
    negatives = [u for u in data.unpaired if u.source == "grounding"]
    assert [(u.completion, u.label) for u in negatives] == [(raw, False)]
    assert [(p.chosen, p.rejected) for p in data.pairs if p.source == "grounding"] == [("Paris is the capital [1].", raw)]
    rows = {r["response_id"]: r for r in export_records(store, TextScrubber(settings, enabled=False))}
    assert rows["g0"]["grounding"]["unsupported_claims"] == 1 and rows["g0"]["grounding"]["raw_answer"] == raw
    assert rows["g1"]["grounding"] is None


def test_a_looping_answer_is_negative_data(db, store, settings):
    """Every sentence supported, but the model repeated one: the raw text (the loop) is rejected and
    the checked answer, voted up, is chosen."""
    from agentstack.feedback.export import export_records
    from agentstack.feedback.scrub import TextScrubber

    raw = "Paris is the capital [1]. Paris is the capital. Paris is the capital [1]."
    claims = [{"text": "Paris is the capital [1].", "support": 0.9, "answers": 0.6, "supported": True}] + [
        {"text": t, "support": 0.9, "answers": 0.6, "supported": True, "kept": False, "repeats": 0}
        for t in ("Paris is the capital.", "Paris is the capital [1].")]
    ResponseStore(db).record(ResponseRecord(
        id="r0", key_id="app1", user_id="u1", endpoint="chat", model="agentstack", model_version="base",
        messages=[{"role": "user", "content": "Paris?"}], params={}, answer="Paris is the capital [1].",
        grounding={"decision": "answered", "raw_answer": raw, "version": "grounding-1", "claims": claims}))
    store.vote(response_id="r0", key_id="app1", user_id="u1", rating="up")
    data = builder(store, settings).build()
    assert [(u.completion, u.label) for u in data.unpaired if u.source == "grounding"] == [(raw, False)]
    assert [(p.chosen, p.rejected) for p in data.pairs if p.source == "grounding"] == [("Paris is the capital [1].", raw)]
    exported = next(export_records(store, TextScrubber(settings, enabled=False)))["grounding"]
    assert (exported["unsupported_claims"], exported["repeated_claims"]) == (0, 2)
    assert [c["repeats"] for c in exported["claims"]] == [None, 0, 0]
