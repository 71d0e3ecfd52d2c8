"""The service fixtures themselves: a real Postgres with pgvector and a real Redis answer."""

from __future__ import annotations

import pytest

pytestmark = pytest.mark.replicas


def test_postgres_has_pgvector(pg_database):
    import sqlalchemy as sa

    engine = sa.create_engine(pg_database)
    with engine.connect() as conn:
        version = conn.execute(sa.text("SHOW server_version")).scalar()
        vector = conn.execute(sa.text("SELECT extversion FROM pg_extension WHERE extname = 'vector'")).scalar()
        distance = conn.execute(sa.text("SELECT '[1,0]'::vector <-> '[0,1]'::vector")).scalar()
    engine.dispose()
    assert version.startswith("18.")
    assert vector is not None
    assert distance == pytest.approx(2 ** 0.5)


def test_databases_are_isolated(postgres_url):
    from tests import services

    a, b = services.create_database(postgres_url), services.create_database(postgres_url)
    try:
        assert a != b
    finally:
        services.drop_database(a)
        services.drop_database(b)


def test_redis_answers(redis_db):
    import redis

    client = redis.Redis.from_url(redis_db)
    assert client.incr("n") == 1
    assert client.info("server")["redis_version"].startswith("7.")
    client.close()
