"""Votes on stored responses (one per user per response), statistics, user deletion, retention."""

from __future__ import annotations

import time

import pytest

from agentstack.errors import InvalidRequestError, NotFoundError
from agentstack.history.store import ResponseRecord, ResponseStore

pytestmark = pytest.mark.unit


@pytest.fixture
def db(settings):
    from agentstack.db import open_db

    database = open_db(settings)
    yield database
    database.close()


def record(db, rid: str, *, user: str = "u1", key: str = "app1", version: str = "base", parent: str | None = None,
           answer: str = "an answer", created: float | None = None, conversation: str | None = None) -> ResponseRecord:
    rec = ResponseRecord(id=rid, key_id=key, user_id=user, endpoint="chat.completions", model="agentstack",
                         model_version=version, messages=[{"role": "user", "content": f"question {rid}"}],
                         params={}, answer=answer, parent_id=parent, conversation_id=conversation)
    if created is not None:
        rec.created_at = created
    ResponseStore(db).record(rec)
    return rec


def test_vote_then_revote_updates_the_same_row(db):
    from agentstack.feedback.store import FeedbackStore

    record(db, "r1", version="v1")
    store = FeedbackStore(db)
    first, created = store.vote(response_id="r1", key_id="app1", user_id="u1", rating="up")
    assert created and first.model_version == "v1"
    second, created = store.vote(response_id="r1", key_id="app1", user_id="u1", rating="down",
                                 correction="  a better answer  ", comment="")
    assert not created and second.id == first.id and second.created_at == first.created_at
    stored = store.get(first.id)
    assert stored.rating == "down" and stored.correction == "a better answer" and stored.comment is None
    assert db.query("SELECT count(*) AS n FROM feedback")[0]["n"] == 1


def test_unknown_or_foreign_response_is_not_found_and_bad_rating_is_refused(db):
    from agentstack.feedback.store import FeedbackStore

    record(db, "r1", user="u1")
    store = FeedbackStore(db)
    with pytest.raises(NotFoundError):
        store.vote(response_id="nope", key_id="app1", user_id="u1", rating="up")
    with pytest.raises(NotFoundError):  # another user of the same key
        store.vote(response_id="r1", key_id="app1", user_id="u2", rating="up")
    with pytest.raises(NotFoundError):  # another key
        store.vote(response_id="r1", key_id="app2", user_id="u1", rating="up")
    with pytest.raises(InvalidRequestError, match="rating"):
        store.vote(response_id="r1", key_id="app1", user_id="u1", rating="meh")
    with pytest.raises(InvalidRequestError, match="limit"):
        store.vote(response_id="r1", key_id="app1", user_id="u1", rating="up", comment="x" * 9000)


def test_stats_per_version_and_bucket_and_key(db):
    from agentstack.feedback.store import FeedbackStore

    store = FeedbackStore(db)
    for i, (version, rating, key) in enumerate([("v1", "up", "app1"), ("v1", "down", "app1"), ("v1", "up", "app2"),
                                                ("v2", "up", "app1")]):
        record(db, f"r{i}", version=version, key=key)
        store.vote(response_id=f"r{i}", key_id=key, user_id="u1", rating=rating)
    stats = store.stats()
    by_version = {v["model_version"]: v for v in stats["versions"]}
    assert (by_version["v1"]["up"], by_version["v1"]["down"], by_version["v1"]["up_ratio"]) == (2, 1, 0.6667)
    assert by_version["v2"]["total"] == 1
    assert stats["total"] == {"up": 3, "down": 1, "total": 4, "up_ratio": 0.75}
    assert {s["model_version"] for s in stats["series"]} == {"v1", "v2"}
    assert store.stats(key_id="app2")["total"]["total"] == 1
    assert store.stats(since=time.time() + 60)["total"]["total"] == 0
    with pytest.raises(InvalidRequestError):
        store.stats(bucket="year")


def test_delete_user_data_removes_responses_conversations_and_feedback(db):
    from agentstack.feedback.privacy import delete_user_data
    from agentstack.feedback.store import FeedbackStore
    from agentstack.history.store import ConversationStore

    conv = ConversationStore(db).create(key_id="app1", user_id="gone", mode="plain", index_name=None, title="t")
    record(db, "a", user="gone", conversation=conv)
    record(db, "b", user="gone", key="app2")
    record(db, "c", user="stays")
    store = FeedbackStore(db)
    for rid, user, key in (("a", "gone", "app1"), ("b", "gone", "app2"), ("c", "stays", "app1")):
        store.vote(response_id=rid, key_id=key, user_id=user, rating="up")
    counts = delete_user_data(db, "gone", key_id="app1")
    assert counts == {"conversations": 1, "responses": 1, "feedback": 1}
    assert [v.response.id for v in store.voted()] == ["b", "c"]
    assert delete_user_data(db, "gone")["responses"] == 1  # every key
    assert [v.response.id for v in store.voted()] == ["c"]


def test_retention_purges_old_rows_only(db):
    from agentstack.feedback.privacy import purge_expired
    from agentstack.feedback.store import FeedbackStore

    now = time.time()
    record(db, "old", created=now - 40 * 86400)
    record(db, "new")
    store = FeedbackStore(db)
    store.vote(response_id="new", key_id="app1", user_id="u1", rating="up")
    assert purge_expired(db, None)["responses"] == 0
    counts = purge_expired(db, 30, now=now)
    assert counts["responses"] == 1
    assert [r["id"] for r in db.query("SELECT id FROM responses")] == ["new"]
    assert len(store.voted()) == 1


def test_siblings_are_grouped_by_their_first_answer(db):
    from agentstack.feedback.store import FeedbackStore

    record(db, "s0")
    record(db, "s1", parent="s0")
    record(db, "s2", parent="s0")
    record(db, "x")
    groups = FeedbackStore(db).siblings(["s0", "x"])
    assert [r.id for r in groups["s0"]] == ["s0", "s1", "s2"] and [r.id for r in groups["x"]] == ["x"]
