"""One test suite, every backend.

Database URLs come from ``--mysql-url`` / ``--postgresql-url``, then the env vars
``SA_DJBLOB_TEST_MYSQL_URL`` / ``SA_DJBLOB_TEST_POSTGRESQL_URL``, then the loopback
defaults. A backend that cannot be reached skips its tests with the reason, unless
``SA_DJBLOB_REQUIRE_BACKENDS=1`` (set by ``.ci/run``), which turns the skip into a failure.

S3 tests run against a real S3 HTTP endpoint: a moto server started on a free
loopback port (one per test session), or the endpoint in ``SA_DJBLOB_TEST_S3_ENDPOINT``
(with ``SA_DJBLOB_TEST_S3_ACCESS_KEY`` / ``SA_DJBLOB_TEST_S3_SECRET_KEY``).
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from helpers.dj_venv import (
    DJ2_REQUIREMENT,
    DJ2_VENV,
    DJ_REQUIREMENT,
    DJ_VENV,
    DataJointUnavailable,
    datajoint_python,
)
from sqlalchemy.engine import URL, make_url

import sa_djblob as djb

DEFAULT_URLS = {
    "sqlite": None,
    "mysql": "mysql+pymysql://root@127.0.0.1:3306/test",
    "postgresql": "postgresql+psycopg://postgres@127.0.0.1:5432/test",
}
BACKENDS = ("sqlite", "mysql", "postgresql")
REQUIRE = os.environ.get("SA_DJBLOB_REQUIRE_BACKENDS", "") not in ("", "0", "false", "no")


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("sa_djblob")
    group.addoption("--mysql-url", default=None, help="MySQL/MariaDB server URL")
    group.addoption("--postgresql-url", default=None, help="PostgreSQL server URL")
    group.addoption(
        "--backends",
        default=os.environ.get("SA_DJBLOB_TEST_BACKENDS", ",".join(BACKENDS)),
        help="comma-separated subset of sqlite,mysql,postgresql",
    )


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "backends(*names): run only on these backends")


def _server_url(config: pytest.Config, backend: str) -> str:
    opt = config.getoption(f"--{backend}_url".replace("_", "-"))
    env = os.environ.get(f"SA_DJBLOB_TEST_{backend.upper()}_URL")
    url = opt or env or DEFAULT_URLS[backend]
    assert url is not None
    return url


def unavailable(reason: str) -> None:
    """Skip, or fail when the backends are required."""
    if REQUIRE:
        pytest.fail(f"{reason} (SA_DJBLOB_REQUIRE_BACKENDS is set)", pytrace=False)
    pytest.skip(reason)


_admin_engines: dict[str, sa.Engine | BaseException] = {}


def admin_engine(config: pytest.Config, backend: str) -> sa.Engine:
    """A server-level engine for creating and dropping test databases, or skip."""
    if backend not in _admin_engines:
        url = _server_url(config, backend)
        try:
            eng = sa.create_engine(url, pool_pre_ping=True)
            with eng.connect() as conn:
                conn.execute(sa.text("select 1"))
            _admin_engines[backend] = eng
        except Exception as exc:  # recorded, reported as skip or failure below
            _admin_engines[backend] = exc
    got = _admin_engines[backend]
    if isinstance(got, BaseException):
        unavailable(
            f"{backend} server not reachable at {make_url(_server_url(config, backend))!r}:"
            f" {type(got).__name__}: {str(got).splitlines()[0][:200]}"
        )
    assert isinstance(got, sa.Engine)
    return got


@dataclass
class Database:
    """An isolated database for one test: its URL, and helpers for extra schemas."""

    backend: str
    url: URL
    admin: sa.Engine | None
    tmp_path: Path
    _extra: list[str]

    @property
    def default_schema(self) -> str:
        if self.backend == "sqlite":
            return "main"
        if self.backend == "mysql":
            assert self.url.database
            return self.url.database
        return self._extra[0]

    def make_schema(self, suffix: str = "x") -> str:
        """Create another schema (a database on MySQL, an attached file on SQLite)."""
        name = f"{self.default_schema if self.backend != 'sqlite' else 'aux'}_{suffix}"
        if self.backend == "sqlite":
            return name  # the engine fixture attaches it
        assert self.admin is not None
        with self.admin.begin() as conn:
            if self.backend == "mysql":
                conn.execute(sa.text(f"CREATE DATABASE `{name}`"))
            else:
                conn.execute(sa.text(f'CREATE SCHEMA "{name}"'))
        self._extra.append(name)
        return name

    def create_engine(self, **kw: Any) -> sa.Engine:
        if self.backend == "sqlite":
            eng = sa.create_engine(self.url, **kw)
            aux = self.tmp_path / "aux_x.sqlite"

            @sa.event.listens_for(eng, "connect")
            def _attach(dbapi_conn: Any, _rec: Any) -> None:
                dbapi_conn.execute(f"ATTACH DATABASE '{aux}' AS aux_x")

            return eng
        return sa.create_engine(self.url, **kw)

    def drop(self) -> None:
        if self.admin is None:
            return
        with self.admin.begin() as conn:
            if self.backend == "mysql":
                for name in [self.url.database, *self._extra]:
                    conn.execute(sa.text(f"DROP DATABASE IF EXISTS `{name}`"))
            else:
                for name in self._extra:
                    conn.execute(sa.text(f'DROP SCHEMA IF EXISTS "{name}" CASCADE'))


def make_database(config: pytest.Config, backend: str, tmp_path: Path) -> Database:
    tag = "djbt_" + uuid.uuid4().hex[:10]
    if backend == "sqlite":
        url = make_url(f"sqlite:///{tmp_path / 'test.sqlite'}")
        return Database(backend, url, None, tmp_path, [])
    admin = admin_engine(config, backend)
    base = make_url(_server_url(config, backend))
    with admin.begin() as conn:
        if backend == "mysql":
            conn.execute(sa.text(f"CREATE DATABASE `{tag}`"))
            return Database(backend, base.set(database=tag), admin, tmp_path, [])
        conn.execute(sa.text(f'CREATE SCHEMA "{tag}"'))
    url = base.update_query_dict({"options": f"-csearch_path={tag}"})
    return Database(backend, url, admin, tmp_path, [tag])


def _selected(config: pytest.Config) -> list[str]:
    chosen = [b.strip() for b in config.getoption("--backends").split(",") if b.strip()]
    bad = set(chosen) - set(BACKENDS)
    if bad:
        raise pytest.UsageError(f"unknown backend(s): {', '.join(sorted(bad))}")
    return chosen


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    if "backend" in metafunc.fixturenames:
        names = _selected(metafunc.config)
        marker = metafunc.definition.get_closest_marker("backends")
        if marker is not None:
            names = [n for n in names if n in marker.args]
        metafunc.parametrize("backend", names)


@pytest.fixture
def database(backend: str, request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Database]:
    db = make_database(request.config, backend, tmp_path)
    try:
        yield db
    finally:
        db.drop()


@pytest.fixture
def engine(database: Database) -> Iterator[sa.Engine]:
    eng = database.create_engine()
    try:
        yield eng
    finally:
        djb.uninstall(eng)
        eng.dispose()


# -- configuration -----------------------------------------------------------


@pytest.fixture(autouse=True)
def _clean_config(tmp_path: Path) -> Iterator[None]:
    """Every test starts from default settings with downloads going to its tmp folder."""
    downloads = tmp_path / "downloads"
    downloads.mkdir()
    saved = {k: djb.config[k] for k in djb.config}
    djb.config["download_path"] = str(downloads)
    try:
        yield
    finally:
        for k, v in saved.items():
            djb.config[k] = v


# -- S3 --------------------------------------------------------------------


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class S3Server:
    endpoint: str  # host:port, DataJoint's form
    access_key: str
    secret_key: str
    secure: bool = False

    @property
    def endpoint_url(self) -> str:
        return f"{'https' if self.secure else 'http'}://{self.endpoint}"

    def client(self) -> Any:
        import boto3
        from botocore.config import Config as BotoConfig

        return boto3.client(
            "s3",
            endpoint_url=self.endpoint_url,
            aws_access_key_id=self.access_key,
            aws_secret_access_key=self.secret_key,
            region_name="us-east-1",
            config=BotoConfig(max_pool_connections=32),
        )

    def store_spec(self, bucket: str, location: str = "store", **extra: Any) -> dict[str, Any]:
        return dict(
            protocol="s3",
            endpoint=self.endpoint,
            bucket=bucket,
            location=location,
            access_key=self.access_key,
            secret_key=self.secret_key,
            secure=self.secure,
            **extra,
        )


def start_moto_server() -> tuple[subprocess.Popen[bytes], str]:
    """A moto S3 server in its own process on a free loopback port."""
    port = _free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return proc, f"127.0.0.1:{port}"
        except OSError:
            if proc.poll() is not None:
                break
            time.sleep(0.1)
    proc.kill()
    raise RuntimeError("moto server did not start")


@pytest.fixture(scope="session")
def s3_server() -> Iterator[S3Server]:
    endpoint = os.environ.get("SA_DJBLOB_TEST_S3_ENDPOINT")
    if endpoint:
        yield S3Server(
            endpoint=endpoint.split("://")[-1],
            access_key=os.environ.get("SA_DJBLOB_TEST_S3_ACCESS_KEY", ""),
            secret_key=os.environ.get("SA_DJBLOB_TEST_S3_SECRET_KEY", ""),
            secure=endpoint.startswith("https://"),
        )
        return
    try:
        proc, moto_endpoint = start_moto_server()
    except Exception as exc:
        unavailable(f"cannot start the moto S3 server: {exc}")
    try:
        yield S3Server(endpoint=moto_endpoint, access_key="testing", secret_key="testing-secret")
    finally:
        proc.terminate()
        proc.wait(10)


@pytest.fixture
def s3_bucket(s3_server: S3Server) -> Iterator[str]:
    """A fresh, empty bucket, removed with its contents afterwards."""
    client = s3_server.client()
    name = "djbt-" + uuid.uuid4().hex[:12]
    client.create_bucket(Bucket=name)
    try:
        yield name
    finally:
        paginator = client.get_paginator("list_objects_v2")
        for page in paginator.paginate(Bucket=name):
            keys = [{"Key": o["Key"]} for o in page.get("Contents", [])]
            if keys:
                client.delete_objects(Bucket=name, Delete={"Objects": keys})
        client.delete_bucket(Bucket=name)


STORE_KINDS = ("memory", "file", "s3")


@pytest.fixture(params=STORE_KINDS)
def store_kind(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture
def store_spec(store_kind: str, request: pytest.FixtureRequest, tmp_path: Path) -> dict[str, Any]:
    """Settings for a store of the parametrized kind, named 'shared' by the users below."""
    if store_kind == "memory":
        return {"protocol": "memory", "location": "mem-" + uuid.uuid4().hex[:8]}
    if store_kind == "file":
        return {"protocol": "file", "location": str(tmp_path / "store")}
    server: S3Server = request.getfixturevalue("s3_server")
    bucket: str = request.getfixturevalue("s3_bucket")
    return server.store_spec(bucket)


@pytest.fixture
def shared_store(store_spec: dict[str, Any], tmp_path: Path) -> dict[str, Any]:
    """Configure store 'shared' of the parametrized kind (and a cache for S3)."""
    djb.config["stores"] = {"shared": store_spec}
    return store_spec


@pytest.fixture(scope="session")
def dj_python() -> Path:
    """The interpreter of a virtualenv with DataJoint 0.14 (created once, then reused)."""
    try:
        return datajoint_python(DJ_VENV, DJ_REQUIREMENT)
    except DataJointUnavailable as exc:
        unavailable(str(exc))
        raise


@pytest.fixture(scope="session")
def dj2_python() -> Path:
    """The interpreter of a virtualenv with DataJoint 2.3.5 (created once, then reused)."""
    try:
        return datajoint_python(DJ2_VENV, DJ2_REQUIREMENT)
    except DataJointUnavailable as exc:
        unavailable(str(exc))
        raise
