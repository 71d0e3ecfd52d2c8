"""One contract for the relational stores, run on both backends: SQLite (the default) and a real
PostgreSQL. Same calls, same answers: votes, statistics buckets, conversations, the audit log,
jobs (one active job enforced by the database, also under a race), user deletion and retention."""

from __future__ import annotations

import threading
import time

import pytest

from agentstack.errors import ConflictError, NotFoundError
from agentstack.history.store import ResponseRecord

def concurrently(target, n: int) -> None:
    """Run ``target`` in ``n`` threads at once and wait for all of them."""
    threads = [threading.Thread(target=target) for _ in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()


BACKENDS = [pytest.param("sqlite", marks=pytest.mark.unit),
            pytest.param("postgres", marks=pytest.mark.replicas)]


@pytest.fixture(params=BACKENDS)
def db(request, tmp_path):
    from agentstack.config import load_settings
    from agentstack.db import open_db

    if request.param == "postgres":
        url = request.getfixturevalue("pg_database")
        settings = load_settings(data_dir=tmp_path / "data", database={"url": url, "migrate_on_start": True})
    else:
        settings = load_settings(data_dir=tmp_path / "data")
    database = open_db(settings)
    yield database
    database.close()


def record(db, rid, *, user="u1", key="app1", version="base", parent=None, created=None, conversation=None,
           turn=None):
    from agentstack.history.store import ResponseStore

    rec = ResponseRecord(id=rid, key_id=key, user_id=user, endpoint="chat.completions", model="agentstack",
                         model_version=version, messages=[{"role": "user", "content": f"question {rid}"}],
                         params={"t": 1}, answer=f"answer {rid}", parent_id=parent, conversation_id=conversation,
                         turn=turn, sources=[{"n": 1}])
    if created is not None:
        rec.created_at = created
    ResponseStore(db).record(rec)
    return rec


def test_responses_round_trip_with_json_fields(db):
    from agentstack.history.store import ResponseStore

    rec = record(db, "r1")
    got = ResponseStore(db).get("r1")
    assert got == rec and got.sources == [{"n": 1}] and got.params == {"t": 1}
    assert ResponseStore(db).get("nope") is None


def test_votes_stats_and_buckets(db):
    from agentstack.feedback.store import FeedbackStore

    day = 86400.0
    t0 = 1_704_067_200.0  # 2024-01-01T00:00:00Z, a Monday
    store = FeedbackStore(db)
    for i, (version, rating, at) in enumerate([("v1", "up", t0 + 3600), ("v1", "down", t0 + 2 * 3600),
                                               ("v2", "up", t0 + 7 * day), ("v2", "up", t0 + 13 * day)]):
        record(db, f"r{i}", version=version, user=f"u{i}")
        fb, new = store.vote(response_id=f"r{i}", key_id="app1", user_id=f"u{i}", rating=rating,
                             correction="better" if i == 1 else None)
        assert new
        db.execute(f"UPDATE feedback SET updated_at = {at} WHERE id = '{fb.id}'")
    again, new = store.vote(response_id="r0", key_id="app1", user_id="u0", rating="up")
    assert not new
    db.execute(f"UPDATE feedback SET updated_at = {t0 + 3600} WHERE id = '{again.id}'")
    stats = store.stats(bucket="day")
    assert stats["total"] == {"up": 3, "down": 1, "total": 4, "up_ratio": 0.75}
    assert [(v["model_version"], v["up"], v["down"], v["corrections"]) for v in stats["versions"]] == \
        [("v1", 1, 1, 1), ("v2", 2, 0, 0)]
    assert [(s["period"], s["model_version"], s["up"], s["down"]) for s in stats["series"]] == \
        [("2024-01-01", "v1", 1, 1), ("2024-01-08", "v2", 1, 0), ("2024-01-14", "v2", 1, 0)]
    weeks = [(s["period"], s["model_version"]) for s in store.stats(bucket="week")["series"]]
    assert weeks == [("2024-W01", "v1"), ("2024-W02", "v2")]
    hours = [s["period"] for s in store.stats(bucket="hour")["series"]]
    assert hours[0] == "2024-01-01T01:00Z"
    voted = store.voted(since=t0, until=t0 + 8 * day, model_version="v2")
    assert [v.response.id for v in voted] == ["r2"]
    with pytest.raises(NotFoundError):
        store.vote(response_id="r0", key_id="app1", user_id="someone-else", rating="up")


def test_concurrent_first_votes_make_one_row(db):
    from agentstack.feedback.store import FeedbackStore

    record(db, "r1")
    store = FeedbackStore(db)
    results, errors = [], []

    def vote(rating):
        try:
            results.append(store.vote(response_id="r1", key_id="app1", user_id="u1", rating=rating))
        except Exception as exc:  # noqa: BLE001
            errors.append(exc)

    ratings = iter(["up", "down"] * 4)
    concurrently(lambda: vote(next(ratings)), 8)
    assert not errors
    assert db.query("SELECT count(*) AS n FROM feedback")[0]["n"] == 1
    assert sum(1 for _, new in results if new) == 1


def test_conversations_turns_and_listing(db):
    from agentstack.history.store import ConversationStore

    convs = ConversationStore(db)
    cid = convs.create(key_id="app1", user_id="u1", mode="rag", index_name="demo", title="hello")
    now = time.time()
    record(db, "a0", conversation=cid, turn=0, created=now)
    record(db, "a1", conversation=cid, turn=1, created=now + 1)
    record(db, "a1b", conversation=cid, turn=1, created=now + 2, parent="a1")
    assert [r.id for r in convs.turns(cid)] == ["a0", "a1b"]
    assert convs.next_turn(cid) == 2
    listed = convs.list(key_id="app1", user_id="u1")
    assert [(c["id"], c["turns"]) for c in listed] == [(cid, 2)]
    assert len(convs.detail(cid)[1]["answers"]) == 2
    with pytest.raises(NotFoundError):
        convs.get(cid, key_id="app1", user_id="u2")
    convs.delete(cid)
    assert convs.list(key_id="app1", user_id="u1") == []


def test_audit_log_appends_and_filters(db):
    from agentstack.audit import AuditLog

    audit = AuditLog(db)
    first = audit.record(key_id="op1", action="model.promote", target="v1", detail={"x": 1})
    second = audit.record(key_id="op1", action="index.delete", target="demo", outcome="error")
    assert second > first
    assert [a["action"] for a in audit.list()] == ["index.delete", "model.promote"]
    assert audit.list(action="model.promote")[0]["detail"] == {"x": 1}


def test_one_active_job_is_the_databases_rule_even_in_a_race(db, tmp_path):
    from agentstack.alignment.jobs import JobStore

    jobs = JobStore(db, tmp_path / "jobs")
    created, refused = [], []
    barrier = threading.Barrier(6)

    def submit():
        barrier.wait()
        try:
            created.append(jobs.create(method="dpo", spec={}, created_by="op1"))
        except ConflictError as exc:
            refused.append(exc)

    concurrently(submit, 6)
    assert len(created) == 1 and len(refused) == 5
    assert "one job runs at a time" in refused[0].message and created[0].id in refused[0].message
    job = created[0]
    assert jobs.beat(job.id) == "queued" and jobs.get(job.id).heartbeat_at is not None
    jobs.update(job.id, status="succeeded", version="v1-dpo")
    assert not jobs.update(job.id, only_if_active=True, status="failed")
    assert [j.id for j in jobs.pending_promotions()] == [job.id]
    assert jobs.create(method="kto", spec={}, created_by="op1").status == "queued"  # the slot is free again


def test_user_deletion_and_retention(db):
    from agentstack.feedback.privacy import delete_user_data, purge_expired
    from agentstack.feedback.store import FeedbackStore

    old = time.time() - 40 * 86400
    record(db, "mine", user="u1")
    record(db, "theirs", user="u2", created=old)
    FeedbackStore(db).vote(response_id="mine", key_id="app1", user_id="u1", rating="up")
    assert delete_user_data(db, "u1", key_id="app1") == {"conversations": 0, "responses": 1, "feedback": 1}
    counts = purge_expired(db, 30)
    assert counts["responses"] == 1
    assert db.query("SELECT count(*) AS n FROM responses")[0]["n"] == 0
