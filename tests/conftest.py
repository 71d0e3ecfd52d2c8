"""Shared fixtures.

* Every test gets its own ``AGENTSTACK_DATA_DIR`` (autouse), so no test sees another's indexes,
  databases or registry, and nothing touches the user's real data.
* ``AGENTSTACK_MODEL_CACHE`` is shared by the whole run (default: the user's cache directory, or
  ``AGENTSTACK_TEST_MODEL_CACHE``), so the SmolLM2 GGUF is converted to safetensors once.
* Nothing is downloaded: ``HF_HUB_OFFLINE=1``.
"""

from __future__ import annotations

import os
from pathlib import Path

import platformdirs
import pytest

os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["TRANSFORMERS_OFFLINE"] = "1"
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

pytest_plugins = ["tests.vllm_fixtures"]  # the `vllm` tier: a real vLLM, payloads checked against its models

MODEL_CACHE = Path(os.environ.get("AGENTSTACK_TEST_MODEL_CACHE")
                   or Path(platformdirs.user_cache_dir("agentstack")) / "models")


@pytest.fixture(autouse=True)
def _isolated_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    for name in list(os.environ):
        if name.startswith("AGENTSTACK_"):
            monkeypatch.delenv(name)
    data = tmp_path / "data"
    monkeypatch.setenv("AGENTSTACK_DATA_DIR", str(data))
    monkeypatch.setenv("AGENTSTACK_MODEL_CACHE", str(MODEL_CACHE))
    monkeypatch.chdir(tmp_path)  # no stray agentstack.toml is picked up
    return data


@pytest.fixture
def data_dir(_isolated_env: Path) -> Path:
    return _isolated_env


@pytest.fixture
def settings(_isolated_env: Path):
    from agentstack.config import load_settings

    return load_settings()


@pytest.fixture(scope="session")
def embedded_engine():
    """The real SmolLM2 engine, loaded once per run (converted once per cache)."""
    from agentstack.config import EngineSettings
    from agentstack.engines.embedded.engine import EmbeddedEngine

    engine = EmbeddedEngine(EngineSettings(max_batch_size=8, max_running=16, max_queue=16), MODEL_CACHE)
    engine.warm_up()
    yield engine
    import asyncio

    asyncio.run(engine.aclose())


@pytest.fixture(scope="session")
def llamacpp_engine():
    """The default engine: llama.cpp in process on the shipped SmolLM2 GGUF, loaded once per run."""
    from agentstack.config import EngineSettings
    from agentstack.engines.llamacpp.engine import LlamaCppEngine

    engine = LlamaCppEngine(EngineSettings(max_running=16, max_queue=16), MODEL_CACHE)
    engine.warm_up()
    yield engine
    import asyncio

    asyncio.run(engine.aclose())


# The in-process engine kinds the contract tests run on: the default (llama.cpp) and the torch engine.
ENGINE_KINDS = ["llamacpp", "embedded"]


def engine_of_kind(request, kind: str):
    """The session engine of ``kind`` (``llamacpp`` or ``embedded``)."""
    return request.getfixturevalue(f"{kind}_engine")


def only_on_torch(kind: str, why: str) -> None:
    """Skip a property that holds for the torch engine only, saying why it cannot hold for llama.cpp."""
    if kind != "embedded":
        pytest.skip(f"does not hold for the {kind} engine: {why}")


def kind_server(request, tmp_path_factory, name: str, **overrides):
    """A LiveServer on the session engine of ``request.param``; use as a context manager."""
    from server.app import create_app

    settings = make_settings(tmp_path_factory.mktemp(f"{name}-{request.param}"), **overrides)
    srv = LiveServer(create_app(settings, engine=engine_of_kind(request, request.param)))
    srv.kind = request.param
    return srv


# -- a real server on a free loopback port ---------------------------------------------------------
APP_KEY = "app-key-0123456789abcdef"
OPERATOR_KEY = "op-key-0123456789abcdef"
LIMITED_KEY = "limited-key-0123456789ab"
TEST_KEYS = [
    {"id": "app1", "role": "app", "key": APP_KEY},
    {"id": "op1", "role": "operator", "key": OPERATOR_KEY},
    {"id": "limited", "role": "app", "key": LIMITED_KEY, "indexes": ["demo"], "rate_limit_per_minute": 600},
]


class LiveServer:
    """uvicorn serving ``app`` in a background thread on 127.0.0.1:<free port>."""

    def __init__(self, app):
        import threading

        import uvicorn

        self.config = uvicorn.Config(app, host="127.0.0.1", port=0, log_level="warning", lifespan="on")
        self.server = uvicorn.Server(self.config)
        self.thread = threading.Thread(target=self.server.run, daemon=True)

    def __enter__(self) -> "LiveServer":
        import time

        self.thread.start()
        deadline = time.monotonic() + 120
        while not self.server.started:
            if not self.thread.is_alive() or time.monotonic() > deadline:
                raise RuntimeError("test server failed to start")
            time.sleep(0.02)
        port = self.server.servers[0].sockets[0].getsockname()[1]
        self.url = f"http://127.0.0.1:{port}"
        self.app = self.config.app
        return self

    def __exit__(self, *exc) -> None:
        self.server.should_exit = True
        self.thread.join(30)


def make_settings(data_dir: Path, **overrides):
    from agentstack.config import load_settings

    base = {"data_dir": data_dir, "model_cache": MODEL_CACHE, "auth": {"keys": TEST_KEYS},
            "server": {"build_demo_index": False}}
    for key, value in overrides.items():
        if isinstance(value, dict) and isinstance(base.get(key), dict):
            base[key] = {**base[key], **value}
        else:
            base[key] = value
    return load_settings(**base)


@pytest.fixture
def live_server(embedded_engine, tmp_path):
    """Factory: ``with live_server(**settings_overrides) as srv: srv.url``; shares the session engine."""
    from server.app import create_app

    def start(**overrides) -> LiveServer:
        settings = make_settings(tmp_path / "server-data", **overrides)
        return LiveServer(create_app(settings, engine=embedded_engine))

    return start


# -- real Postgres (pgvector) and Redis, one of each per run (tests/services.py) --------------------
def _run_service(name: str, start):
    """Enter the service's context manager for the session; fail under CI=true, else skip, when it
    cannot start (tests/services.py says how to install what is missing)."""
    from tests import services

    try:
        cm = start()
        url = cm.__enter__()
    except services.ServiceUnavailable as exc:
        services.missing(name, str(exc))
    try:
        yield url
    finally:
        cm.__exit__(None, None, None)


@pytest.fixture(scope="session")
def postgres_url():
    """A PostgreSQL 18 + pgvector server for the whole run (``postgresql+psycopg://...``). Under
    CI=true a server that cannot start fails the test; elsewhere it is skipped with the fix."""
    from tests import services

    yield from _run_service("PostgreSQL", services.postgres_server)


@pytest.fixture
def pg_database(postgres_url):
    """A fresh, empty database (pgvector enabled) on the run's server, dropped afterwards."""
    from tests import services

    url = services.create_database(postgres_url)
    yield url
    services.drop_database(url)


@pytest.fixture(scope="session")
def redis_url():
    """A Redis server for the whole run (``redis://127.0.0.1:PORT/0``); like ``postgres_url``,
    missing under CI=true fails, elsewhere skips naming ``apt-get install redis-server``."""
    from tests import services

    yield from _run_service("Redis", services.redis_server)


@pytest.fixture
def redis_db(redis_url):
    """The run's Redis, emptied before the test."""
    import redis

    client = redis.Redis.from_url(redis_url)
    client.flushall()
    client.close()
    return redis_url


# -- time per tier, printed at the end of the run (.ci/run shows it) --------------------------------
TIERS = ("vllm", "replicas", "e2e", "integration", "unit")
_tier_seconds: dict[str, float] = {}


def _tier(item) -> str:
    return next((t for t in TIERS if item.get_closest_marker(t) is not None), "unmarked")


def pytest_runtest_logreport(report):
    tier = getattr(report, "_agentstack_tier", None)
    if tier is not None:
        _tier_seconds[tier] = _tier_seconds.get(tier, 0.0) + report.duration


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    outcome = yield
    outcome.get_result()._agentstack_tier = _tier(item)


def pytest_terminal_summary(terminalreporter):
    if _tier_seconds:
        terminalreporter.section("time per tier (setup + call + teardown)")
        for tier in (*TIERS, "unmarked"):
            if tier in _tier_seconds:
                terminalreporter.write_line(f"{tier:12s} {_tier_seconds[tier]:8.1f} s")
