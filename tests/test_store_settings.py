"""Store kinds declare their settings: validation, secrets, the registry, one file per kind."""

from __future__ import annotations

import datetime
import inspect
import json
import uuid
from collections.abc import Iterator, Mapping
from pathlib import Path, PurePosixPath
from typing import Any, BinaryIO, ClassVar

import pytest
from click.testing import CliRunner

import sa_djblob as djb
from sa_djblob._config import Config
from sa_djblob._exceptions import ConfigError, StoreError
from sa_djblob.cli import cli
from sa_djblob.stores import (
    Cache,
    FileStore,
    FsspecStore,
    MemoryStore,
    ObjectInfo,
    S3Store,
    Setting,
    Store,
    build_store,
    registered_protocols,
    store_class,
)
from sa_djblob.stores import base as store_base
from sa_djblob.stores.base import COMMON_SETTINGS, check_string


def _error(spec: dict[str, Any], name: str = "s") -> str:
    with pytest.raises(ConfigError) as info:
        build_store(name, spec)
    return str(info.value)


# -- a new kind is one class --------------------------------------------------------


class _ListStore(Store):
    """A toy kind defined outside the package: nothing else is edited to use it."""

    protocol = "toy"
    settings: ClassVar[Mapping[str, Setting]] = {
        **COMMON_SETTINGS,
        "shelf": Setting(check_string, required=True),
        "pin": Setting(check_string, default=None, secret=True),
    }

    def _setup(self, spec: dict[str, Any]) -> None:
        self.shelf = spec["shelf"]
        self.items: dict[str, bytes] = {}

    @classmethod
    def display_location(cls, spec: Mapping[str, Any]) -> str:
        return f"shelf {spec['shelf']}"

    def put(self, path: PurePosixPath, data: bytes | memoryview) -> None:
        self.items[str(path)] = bytes(data)

    def put_file(self, path: PurePosixPath, src: BinaryIO) -> None:
        self.put(path, src.read())

    def get(self, path: PurePosixPath) -> bytes:
        return self.items[str(path)]

    def open(self, path: PurePosixPath) -> BinaryIO:
        raise NotImplementedError

    def exists(self, path: PurePosixPath) -> bool:
        return str(path) in self.items

    def remove(self, path: PurePosixPath) -> None:
        self.items.pop(str(path), None)

    def list(self, prefix: PurePosixPath) -> Iterator[ObjectInfo]:
        return iter(())


@pytest.fixture
def toy_kind() -> Iterator[type[Store]]:
    store_base._registry["toy"] = _ListStore
    try:
        yield _ListStore
    finally:
        djb.config["stores"] = {}
        store_base._registry.pop("toy", None)


def test_a_new_kind_is_one_class(toy_kind: type[Store], tmp_path: Path) -> None:
    assert "toy" in registered_protocols() and store_class("toy") is toy_kind
    djb.config["stores"] = {"t": {"protocol": "toy", "shelf": "top", "pin": "1234-SECRET"}}
    store = djb.get_store("t")
    assert isinstance(store, _ListStore) and store.shelf == "top"
    assert "1234-SECRET" not in repr(djb.config) and "***" in repr(djb.config)
    assert "missing key 'shelf'" in _error({"protocol": "toy"})
    cfg = tmp_path / "c.json"
    cfg.write_text(
        json.dumps({"stores": {"t": {"protocol": "toy", "shelf": "top", "pin": "1234-SECRET"}}})
    )
    for args in (["stores"], ["stores", "--json"]):
        res = CliRunner().invoke(cli, ["--config", str(cfg), *args])
        assert res.exit_code == 0, res.output
        assert "1234-SECRET" not in res.output
    assert "shelf top" in CliRunner().invoke(cli, ["--config", str(cfg), "stores"]).output


def test_unknown_protocol_lists_the_registered_ones() -> None:
    msg = _error({"protocol": "ftp", "location": "/x"})
    assert "'ftp'" in msg
    for protocol in ("'file'", "'s3'", "'memory'", "'fsspec'"):
        assert protocol in msg
    assert "missing key 'protocol'" in _error({"location": "/x"})


def test_unknown_key_names_the_protocols_keys() -> None:
    msg = _error({"protocol": "file", "location": "/x", "bucket": "b"})
    assert "unknown key 'bucket' for protocol 'file'" in msg
    assert "hash, location, protocol, stage, subfolding" in msg
    msg = _error({"protocol": "fsspec", "url": "memory://x", "colour": "red"})
    assert "'colour'" in msg and "options" in msg and "url" in msg


def test_constructors_refuse_unknown_settings(tmp_path: Path) -> None:
    """Store.__init__ used to swallow them (``**_``)."""
    with pytest.raises(ConfigError, match="unknown key 'colour'"):
        FileStore("x", location=str(tmp_path), colour="red")
    with pytest.raises(ConfigError, match="unknown key 'bucket'"):
        MemoryStore("x", bucket="b")
    with pytest.raises(ConfigError, match="'read_timeout' must be a positive number"):
        S3Store("x", bucket="b", location="", read_timeout=-1)


def test_stage_is_accepted_and_must_be_a_path(tmp_path: Path) -> None:
    s = build_store("s", {"protocol": "file", "location": str(tmp_path), "stage": tmp_path / "st"})
    assert s.stage == str(tmp_path / "st")
    assert "'stage' must be a path" in _error({"protocol": "file", "location": "/x", "stage": 5})


@pytest.mark.parametrize(
    ("key", "value", "words"),
    [
        ("connect_timeout", 0, "positive number"),
        ("read_timeout", "5", "positive number"),
        ("read_timeout", float("nan"), "positive number"),
        ("max_attempts", 0, "integer >= 1"),
        ("max_attempts", 1.5, "integer >= 1"),
        ("max_attempts", True, "integer >= 1"),
        ("secure", "yes", "true or false"),
        ("endpoint", ":::", "host[:port]"),
        ("endpoint", "host:99999", "host[:port]"),
        ("endpoint", "host:port", "host[:port]"),
        ("endpoint", "http://host:9000/some/path", "no user, path"),
        ("endpoint", "https://user:pw@host", "no user"),
        ("endpoint", "ftp://host", "host[:port]"),
        ("endpoint", 9000, "must be a string"),
    ],
)
def test_s3_settings_are_validated(key: str, value: Any, words: str) -> None:
    msg = _error({"protocol": "s3", "location": "", "bucket": "b", key: value})
    assert f"store 's': {key!r}" in msg and words in msg


@pytest.mark.parametrize(
    "endpoint", ["minio:9000", "127.0.0.1:9000", "s3.example.org", "https://h:9000", "[::1]:9000"]
)
def test_s3_good_endpoints(endpoint: str) -> None:
    s = build_store("s", {"protocol": "s3", "location": "", "bucket": "b", "endpoint": endpoint})
    assert isinstance(s, S3Store) and s.endpoint == endpoint


def test_s3_timeouts_defaults_and_settings() -> None:
    s = build_store("s", {"protocol": "s3", "location": "", "bucket": "b"})
    assert isinstance(s, S3Store)
    # the worst case of an endpoint that never answers: attempts x read timeout + backoff (< 1 s)
    assert s.max_attempts * s.read_timeout + (s.max_attempts - 1) < 15
    spec = {"protocol": "s3", "location": "", "bucket": "b", "read_timeout": 2, "max_attempts": 1}
    s = build_store("s", {**spec, "connect_timeout": 0.5})
    assert isinstance(s, S3Store)
    assert (s.read_timeout, s.connect_timeout, s.max_attempts) == (2.0, 0.5, 1)


def test_subfolding_messages() -> None:
    msg = _error({"protocol": "file", "location": "/x", "subfolding": (40, 40)})
    assert "80 characters" in msg and "32 hex digits" in msg and "'subfolding'" in msg
    assert "positive integers" in _error({"protocol": "file", "location": "/x", "subfolding": [0]})
    assert "list of folder" in _error({"protocol": "file", "location": "/x", "subfolding": "22"})
    # DataJoint 0.14 reads None and () as "no subfolders" (external.subfold): so do we
    none: Any
    for none in (None, (), []):
        s = build_store("s", {"protocol": "file", "location": "/x", "subfolding": none})
        assert s.subfolding == ()


def test_bad_value_in_the_config_file_names_the_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    f = tmp_path / "lab-settings.json"
    f.write_text(
        json.dumps({"stores": {"s": {"protocol": "file", "location": "/x", "hash": "sha1"}}})
    )
    with pytest.raises(ConfigError) as info:
        Config().load(f)
    assert str(f) in str(info.value) and "'hash' must be" in str(info.value)
    monkeypatch.setenv("SA_DJBLOB_CONFIG", str(f))
    with pytest.raises(ConfigError, match=r"lab-settings\.json"):
        Config()["threads"]
    # nothing of a bad file is applied
    f.write_text(json.dumps({"download_path": "/dl", "threads": 0}))
    cfg = Config()
    monkeypatch.delenv("SA_DJBLOB_CONFIG")
    with pytest.raises(ConfigError, match=r"lab-settings\.json.*'threads'"):
        cfg.load(f)
    assert cfg["download_path"] == "."


def test_dead_code_is_gone() -> None:
    for cls in (Store, FileStore, S3Store, MemoryStore, FsspecStore):
        assert not hasattr(cls, "download_file"), cls
        assert "size" not in inspect.signature(cls.put_file).parameters, cls
    assert not hasattr(Cache, "put_stream")
    assert not hasattr(Config(), "version")


def test_entry_point_kinds(monkeypatch: pytest.MonkeyPatch) -> None:
    class EP:
        name = "ep-kind"
        value = "somewhere:Thing"

        def load(self) -> Any:
            return type("EpStore", (_ListStore,), {"protocol": "ep-kind"})

    monkeypatch.setattr(store_base, "_entry_points_loaded", False)
    monkeypatch.setattr("importlib.metadata.entry_points", lambda group: [EP()])
    try:
        assert store_class("ep-kind").__name__ == "EpStore"
    finally:
        store_base._registry.pop("ep-kind", None)


# -- fsspec specifics ----------------------------------------------------------------


def test_fsspec_option_secrets_are_masked(tmp_path: Path) -> None:
    spec = {
        "protocol": "fsspec",
        "url": "memory://b/p",
        "options": {"token": "TOK-123", "account_key": "AK-456", "project": "lab"},
    }
    cfg = Config()
    cfg["stores"] = {"g": spec}
    text = repr(cfg)
    assert "TOK-123" not in text and "AK-456" not in text and "'lab'" in text
    assert sorted(FsspecStore.secret_values(spec)) == ["AK-456", "TOK-123"]
    url_spec = {"protocol": "fsspec", "url": "ftp://me:PW-789@127.0.0.1:1/x"}
    assert "PW-789" not in repr(FsspecStore.redact(url_spec))
    assert "PW-789" not in FsspecStore.display_location(url_spec)
    f = tmp_path / "c.json"
    f.write_text(json.dumps({"stores": {"g": spec}}))
    res = CliRunner().invoke(cli, ["--config", str(f), "stores", "--json"])
    assert res.exit_code == 0 and "TOK-123" not in res.output and "AK-456" not in res.output
    assert json.loads(res.output)["stores"][0]["options"]["project"] == "lab"


def test_fsspec_bad_url_is_a_store_error() -> None:
    with pytest.raises(StoreError) as info:
        build_store("g", {"protocol": "fsspec", "url": "nosuchfs://x", "options": {"token": "T-1"}})
    assert "'g'" in str(info.value) and "'url'" in str(info.value)
    assert "T-1" not in str(info.value)


def test_fsspec_modified_times(monkeypatch: pytest.MonkeyPatch) -> None:
    s = build_store("g", {"protocol": "fsspec", "url": f"memory://t-{uuid.uuid4().hex[:6]}"})
    assert isinstance(s, FsspecStore)
    s.put(PurePosixPath("a/x"), b"1")
    root = s._path(PurePosixPath("a"))
    naive = datetime.datetime(2020, 1, 2, 3, 4, 5)
    infos = {
        f"{root}/1": {"type": "file", "size": 1, "mtime": 1_600_000_000.5},
        f"{root}/2": {"type": "file", "size": 2, "LastModified": naive},
        f"{root}/3": {"type": "file", "size": 3, "updated": "2021-05-06T07:08:09.000Z"},
        f"{root}/4": {"type": "file", "size": 4},  # nothing: fs.modified, else now
    }
    monkeypatch.setattr(s.fs, "find", lambda *a, **k: infos)

    def no_modified(path: str) -> Any:
        raise NotImplementedError

    monkeypatch.setattr(s.fs, "modified", no_modified)
    got = {i.path.name: i for i in s.list(PurePosixPath("a"))}
    utc = datetime.UTC
    assert got["1"].modified == datetime.datetime.fromtimestamp(1_600_000_000.5, utc)
    assert got["2"].modified == naive.replace(tzinfo=utc)
    assert got["3"].modified == datetime.datetime(2021, 5, 6, 7, 8, 9, tzinfo=utc)
    now = datetime.datetime.now(utc)
    assert abs((got["4"].modified - now).total_seconds()) < 60
    assert all(i.modified.tzinfo is utc for i in got.values())
    assert got["2"].size == 2


def test_presigned_url_where_stores_cannot(tmp_path: Path) -> None:
    for spec in (
        {"protocol": "file", "location": str(tmp_path)},
        {"protocol": "memory", "location": "m"},
        {"protocol": "fsspec", "url": "memory://b/p"},
    ):
        s = build_store("x", spec)
        with pytest.raises(StoreError) as info:
            s.presigned_url(PurePosixPath("a/b"))
        assert f"store 'x' ({spec['protocol']}) cannot make URLs" in str(info.value)
