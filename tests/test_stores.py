"""The stores (memory, file, S3 against a real moto server process) and their registry."""

from __future__ import annotations

import concurrent.futures
import datetime
import hashlib
import io
import logging
import os
import socket
import subprocess
import sys
import threading
import time
import tracemalloc
import uuid
from collections.abc import Iterator
from pathlib import Path, PurePosixPath
from typing import Any

import pytest
from helpers.common import Trickle

import sa_djblob as djb
from sa_djblob._exceptions import (
    ConfigError,
    MissingPayloadError,
    StoreError,
    StoreNotConfiguredError,
)
from sa_djblob._layout import object_path
from sa_djblob.stores import (
    FileStore,
    FsspecStore,
    MemoryStore,
    ObjectInfo,
    S3Store,
    Store,
    build_store,
    get_store,
)

MiB = 1 << 20

# the contract tests below run over every kind, fsspec on two file systems included
KINDS = ("memory", "file", "s3", "fsspec-memory", "fsspec-file")


@pytest.fixture(params=KINDS)
def store_kind(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture
def store_spec(store_kind: str, request: pytest.FixtureRequest, tmp_path: Path) -> dict[str, Any]:
    if store_kind == "memory":
        return {"protocol": "memory", "location": "mem-" + uuid.uuid4().hex[:8]}
    if store_kind == "file":
        return {"protocol": "file", "location": str(tmp_path / "store")}
    if store_kind == "fsspec-memory":
        url = f"memory://djbt-{uuid.uuid4().hex[:8]}/root"
        return {"protocol": "fsspec", "url": url, "location": "store"}
    if store_kind == "fsspec-file":
        return {"protocol": "fsspec", "url": f"file://{tmp_path}/fs", "location": "store"}
    server: Any = request.getfixturevalue("s3_server")
    bucket: str = request.getfixturevalue("s3_bucket")
    return dict(server.store_spec(bucket))


@pytest.fixture
def store(store_spec: dict[str, Any]) -> Iterator[Store]:
    s = build_store("shared", store_spec)
    try:
        yield s
    finally:
        s.close()


def base(store: Store, schema: str = "schema") -> PurePosixPath:
    return PurePosixPath(store.location, schema)


def path_for(store: Store, data: bytes, schema: str = "schema") -> PurePosixPath:
    key = uuid.UUID(bytes=hashlib.md5(data).digest())
    return object_path(store.location, schema, key, subfolding=store.subfolding)


# -- basic semantics, every kind ------------------------------------------------


def test_build_store_picks_class(store: Store, store_kind: str) -> None:
    expected = {
        "memory": MemoryStore,
        "file": FileStore,
        "s3": S3Store,
        "fsspec-memory": FsspecStore,
        "fsspec-file": FsspecStore,
    }[store_kind]
    assert type(store) is expected
    assert store.name == "shared"
    assert store.is_remote is (store_kind in ("s3", "fsspec-memory"))
    assert store.hash == "md5" and store.subfolding == (2, 2)


def test_put_get_exists_remove(store: Store) -> None:
    data = b"payload \x00\x01 bytes"
    p = path_for(store, data)
    assert not store.exists(p)
    store.put(p, data)
    assert store.exists(p)
    assert store.get(p) == data
    store.put(p, memoryview(b"replaced"))
    assert store.get(p) == b"replaced"
    store.remove(p)
    assert not store.exists(p)
    store.remove(p)  # already gone: fine
    with pytest.raises(MissingPayloadError) as info:
        store.get(p)
    assert "'shared'" in str(info.value)
    assert p.name in str(info.value)


def test_empty_payload(store: Store) -> None:
    p = path_for(store, b"")
    store.put(p, b"")
    assert store.exists(p)
    assert store.get(p) == b""


def test_open_streams(store: Store) -> None:
    data = os.urandom(3 * MiB + 17)
    p = path_for(store, data)
    store.put(p, data)
    with store.open(p) as f:
        head = f.read(10)
        rest = f.read()
    assert head + rest == data
    with store.open(p) as f:
        chunks = list(iter(lambda: f.read(65536), b""))
    assert b"".join(chunks) == data
    missing = path_for(store, b"nope")
    with pytest.raises(MissingPayloadError, match="shared"):
        store.open(missing)


def test_list(store: Store) -> None:
    inside = [path_for(store, bytes([i]) * (i + 1)) for i in range(5)]
    for i, p in enumerate(inside):
        store.put(p, bytes([i]) * (i + 1))
    attach = PurePosixPath(str(inside[0]) + ".photo.png")
    store.put(attach, b"png")
    # siblings that must not show: another schema, and one whose name starts like it
    store.put(path_for(store, b"other", "schema2"), b"other")
    store.put(path_for(store, b"other", "schem"), b"other")
    before = datetime.datetime.now(datetime.UTC) - datetime.timedelta(minutes=5)

    listed = {info.path: info for info in store.list(base(store))}
    assert set(listed) == {*inside, attach}
    for i, p in enumerate(inside):
        assert listed[p].size == i + 1
    for info in listed.values():
        assert isinstance(info, ObjectInfo)
        assert info.modified.tzinfo is not None
        assert info.modified.utcoffset() == datetime.timedelta(0)
        assert before < info.modified < before + datetime.timedelta(minutes=10)
    assert list(store.list(base(store, "no_such_schema"))) == []
    everything = {info.path for info in store.list(PurePosixPath(store.location))}
    assert len(everything) == 8


def test_list_yields_payloads_in_hash_order(store: Store) -> None:
    """Every kind lists an area in path order, so payloads come in hash order (the sweep
    merges the listing against the externals table read in hash order)."""
    paths = [path_for(store, b"ordered %d" % i) for i in range(40)]
    for p in paths:
        store.put(p, b"x")
    store.put(PurePosixPath(str(paths[3]) + ".a.txt"), b"x")
    names = [info.path.name for info in store.list(base(store))]
    assert names == sorted(names) and len(names) == 41


def test_remove_many(store: Store) -> None:
    paths = [path_for(store, str(i).encode()) for i in range(20)]
    for p in paths:
        store.put(p, b"x")
    missing = path_for(store, b"never written")
    assert store.remove_many([*paths, missing]) == {}
    assert not any(store.exists(p) for p in paths)
    assert list(store.list(base(store))) == []
    assert store.remove_many([]) == {}


def test_cleanup_keeps_prefix(store: Store, store_kind: str) -> None:
    p = path_for(store, b"a")
    store.put(p, b"a")
    store.cleanup(base(store))  # a folder with a payload stays
    assert store.get(p) == b"a"
    store.remove(p)
    store.cleanup(base(store))
    assert list(store.list(base(store))) == []
    if store_kind in ("file", "fsspec-file"):
        top = Path(base(store))
        if isinstance(store, FsspecStore):
            top = Path(store.url.removeprefix("file://"), top)
        assert top.is_dir()
        assert list(top.iterdir()) == []
        # the store still writes into a cleaned folder
        store.put(p, b"again")
        assert store.get(p) == b"again"


def test_put_file_and_transfers(store: Store, tmp_path: Path) -> None:
    data = os.urandom(20 * MiB + 123)  # over the S3 part size: a multipart upload
    p = path_for(store, data)
    store.put_file(p, io.BytesIO(data))
    assert store.get(p) == data
    src = tmp_path / "src.bin"
    src.write_bytes(data[::-1])
    q = path_for(store, data[::-1])
    store.upload_file(q, src)
    assert store.get(q) == data[::-1]


def test_put_file_from_unseekable_stream(store: Store) -> None:
    data = os.urandom(9 * MiB)
    p = path_for(store, data)
    store.put_file(p, io.BufferedReader(Trickle(data, 100_000)))
    assert store.get(p) == data


def test_threads_share_a_store(store: Store) -> None:
    payloads = [os.urandom(1000 + i) for i in range(64)]

    def roundtrip(data: bytes) -> bool:
        p = path_for(store, data)
        store.put(p, data)
        return store.get(p) == data and store.exists(p)

    with concurrent.futures.ThreadPoolExecutor(16) as pool:
        assert all(pool.map(roundtrip, payloads))
    assert len(list(store.list(base(store)))) == 64


# -- bounded memory of streaming uploads ----------------------------------------


@pytest.mark.parametrize("store_kind", ["file", "s3", "fsspec-file"], indirect=True)
def test_put_file_streams_with_bounded_memory(store: Store, tmp_path: Path) -> None:
    size = 64 * MiB
    src = tmp_path / "big.bin"
    digest = hashlib.md5()
    with open(src, "wb") as f:
        block = os.urandom(MiB)
        for i in range(size // MiB):
            chunk = block[:-1] + bytes([i % 256])
            digest.update(chunk)
            f.write(chunk)
    p = base(store) / "big"
    store.exists(p)  # client made, bucket checked, before measuring
    tracemalloc.start()
    try:
        with open(src, "rb") as f:
            store.put_file(p, f)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 44 * MiB, f"peak {peak / MiB:.1f} MiB for a {size // MiB} MiB upload"
    got = hashlib.md5()
    with store.open(p) as f:
        while chunk := f.read(MiB):
            got.update(chunk)
    assert got.digest() == digest.digest()


# -- file store specifics ----------------------------------------------------------


def file_store(tmp_path: Path) -> FileStore:
    s = build_store("local", {"protocol": "file", "location": str(tmp_path / "store")})
    assert isinstance(s, FileStore)
    return s


def test_file_store_writes_atomically_and_list_skips_temp_files(tmp_path: Path) -> None:
    s = file_store(tmp_path)
    p = path_for(s, b"data")
    s.put(p, b"data")
    folder = Path(p).parent
    assert sorted(x.name for x in folder.iterdir()) == [p.name]  # no temp file left
    (folder / f".{p.name}.tmp-abc123").write_bytes(b"partial")
    assert [i.path for i in s.list(base(s))] == [p]


def test_file_store_failed_stream_leaves_nothing(tmp_path: Path) -> None:
    s = file_store(tmp_path)

    class Broken(io.RawIOBase):
        def readable(self) -> bool:
            return True

        def readinto(self, b: Any) -> int:
            raise OSError(5, "Input/output error")

    p = path_for(s, b"x")
    with pytest.raises(StoreError, match="'local'"):
        s.put_file(p, io.BufferedReader(Broken()))
    assert not s.exists(p)
    assert [x for x in Path(p).parent.iterdir()] == []


def test_file_store_os_errors_become_store_errors(tmp_path: Path) -> None:
    s = file_store(tmp_path)
    Path(s.location).mkdir(parents=True)
    (Path(s.location) / "schema").write_bytes(b"a file where a folder should be")
    p = path_for(s, b"x")
    with pytest.raises(StoreError) as info:
        s.put(p, b"x")
    assert "'local'" in str(info.value) and str(p) in str(info.value)
    with pytest.raises(StoreError):
        s.get(PurePosixPath(s.location))  # a folder, not a payload
    assert not isinstance(info.value, MissingPayloadError)


def test_file_store_missing_message_names_store_and_path(tmp_path: Path) -> None:
    s = file_store(tmp_path)
    p = path_for(s, b"gone")
    with pytest.raises(MissingPayloadError) as info:
        s.get(p)
    assert "'local'" in str(info.value) and str(p) in str(info.value)


# -- memory store specifics ----------------------------------------------------------


def test_memory_stores_share_by_location() -> None:
    loc = "mem-" + uuid.uuid4().hex
    a = build_store("a", {"protocol": "memory", "location": loc})
    b = build_store("b", {"protocol": "memory", "location": loc})
    c = build_store("c", {"protocol": "memory", "location": loc + "-other"})
    p = path_for(a, b"shared")
    a.put(p, b"shared")
    assert b.get(p) == b"shared"
    assert not c.exists(p)
    MemoryStore.clear(loc)
    assert not b.exists(p)
    a.put(p, b"again")
    MemoryStore.clear()
    assert not a.exists(p)


# -- S3 specifics --------------------------------------------------------------------


@pytest.fixture
def s3_store(s3_server: Any, s3_bucket: str) -> Iterator[S3Store]:
    s = build_store("shared", s3_server.store_spec(s3_bucket))
    assert isinstance(s, S3Store)
    try:
        yield s
    finally:
        s.close()


def test_s3_keys_and_leading_slash(s3_store: S3Store, s3_server: Any, s3_bucket: str) -> None:
    p = PurePosixPath("/store/schema/ab/cd/abcd")
    s3_store.put(p, b"v")
    keys = [o["Key"] for o in s3_server.client().list_objects_v2(Bucket=s3_bucket)["Contents"]]
    assert keys == ["store/schema/ab/cd/abcd"]
    assert s3_store.get(PurePosixPath("store/schema/ab/cd/abcd")) == b"v"
    assert [i.path for i in s3_store.list(PurePosixPath("/store/schema"))] == [p]


def test_s3_remove_many_batches_over_1000(s3_store: S3Store) -> None:
    paths = [PurePosixPath(f"store/schema/{i:05d}") for i in range(1205)]
    with concurrent.futures.ThreadPoolExecutor(16) as pool:
        list(pool.map(lambda p: s3_store.put(p, b"."), paths))
    calls: list[int] = []

    def count(params: Any, **_: Any) -> None:
        calls.append(len(params["Delete"]["Objects"]))

    s3_store.client.meta.events.register("provide-client-params.s3.DeleteObjects", count)
    assert s3_store.remove_many(paths) == {}
    assert calls == [1000, 205]
    assert list(s3_store.list(PurePosixPath("store"))) == []


def test_s3_remove_many_reports_failures(
    s3_store: S3Store, monkeypatch: pytest.MonkeyPatch
) -> None:
    paths = [PurePosixPath(f"store/x/{i}") for i in range(3)]

    def fake_delete(**kw: Any) -> dict[str, Any]:
        return {
            "Errors": [
                {"Key": "store/x/1", "Code": "AccessDenied", "Message": "no"},
                {"Key": "store/x/2", "Code": "NoSuchKey", "Message": "gone"},  # fine
            ]
        }

    monkeypatch.setattr(s3_store.client, "delete_objects", fake_delete)
    assert s3_store.remove_many(paths) == {paths[1]: "AccessDenied: no"}


def test_s3_open_is_a_context_managed_stream(s3_store: S3Store) -> None:
    p = PurePosixPath("store/s/obj")
    s3_store.put(p, b"0123456789")
    with s3_store.open(p) as f:
        assert f.read(4) == b"0123"
        assert f.read(100) == b"456789"
        assert f.read(1) == b""
    assert f.closed


SECRET = "very-secret-key-9f8e7d"
ACCESS = "AKIAEXAMPLEACCESS42"


def _assert_clean(text: str) -> None:
    assert SECRET not in text
    assert ACCESS not in text


def test_s3_missing_bucket(s3_server: Any, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG, logger="sa_djblob")
    spec = s3_server.store_spec("no-such-bucket-" + uuid.uuid4().hex[:8])
    spec.update(access_key=ACCESS, secret_key=SECRET)
    s = build_store("shared", spec)
    with pytest.raises(StoreError) as info:
        s.get(PurePosixPath("store/x"))
    msg = str(info.value)
    assert f"bucket '{spec['bucket']}' does not exist at endpoint" in msg
    assert s3_server.endpoint in msg
    assert not isinstance(info.value, MissingPayloadError)
    _assert_clean(msg)
    _assert_clean(caplog.text)
    _assert_clean(repr(s))
    assert info.value.__cause__ is None and info.value.__suppress_context__


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.fixture(scope="module")
def auth_s3_endpoint() -> Iterator[str]:
    """A moto server that checks credentials (knows no access keys at all)."""
    port = _free_port()
    env = dict(os.environ, INITIAL_NO_AUTH_ACTION_COUNT="0")
    proc = subprocess.Popen(
        [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        env=env,
    )
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
                break
            except OSError:
                if proc.poll() is not None or time.monotonic() > deadline:
                    pytest.fail("moto server with authentication did not start")
                time.sleep(0.1)
        yield f"127.0.0.1:{port}"
    finally:
        proc.terminate()
        proc.wait(10)


def test_s3_bad_credentials(auth_s3_endpoint: str, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG, logger="sa_djblob")
    spec = {
        "protocol": "s3",
        "endpoint": auth_s3_endpoint,
        "bucket": "bucket",
        "location": "store",
        "access_key": ACCESS,
        "secret_key": SECRET,
    }
    s = build_store("shared", spec)
    for call in (
        lambda: s.put(PurePosixPath("store/x"), b"x"),
        lambda: s.exists(PurePosixPath("x")),
    ):
        with pytest.raises(StoreError) as info:
            call()
        msg = str(info.value)
        assert "access denied" in msg and "'access_key'" in msg and "'shared'" in msg
        _assert_clean(msg)
    _assert_clean(caplog.text)


def test_s3_unreachable_endpoint_fails_fast(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG, logger="sa_djblob")
    endpoint = f"127.0.0.1:{_free_port()}"  # nothing listens there
    spec = {
        "protocol": "s3",
        "endpoint": endpoint,
        "bucket": "bucket",
        "location": "store",
        "access_key": ACCESS,
        "secret_key": SECRET,
    }
    s = build_store("shared", spec)
    start = time.monotonic()
    with pytest.raises(StoreError) as info:
        s.get(PurePosixPath("store/x"))
    elapsed = time.monotonic() - start
    assert elapsed < 8, f"took {elapsed:.1f}s"
    msg = str(info.value)
    assert "unreachable" in msg and endpoint in msg
    _assert_clean(msg)
    _assert_clean(caplog.text)


def test_s3_repr_has_no_secrets() -> None:
    spec = {
        "protocol": "s3",
        "endpoint": "example.org:9000",
        "bucket": "b",
        "location": "loc",
        "access_key": ACCESS,
        "secret_key": SECRET,
    }
    s = build_store("shared", spec)
    text = repr(s)
    assert text == "S3Store(name='shared', endpoint='example.org:9000', bucket='b', location='loc')"
    _assert_clean(text)
    _assert_clean(repr(vars(s)))


def test_s3_client_pool_fits_threads(s3_store: S3Store) -> None:
    djb.config["threads"] = 40
    s3_store.close()
    cfg: Any = s3_store.client.meta.config  # botocore's stubs lack these attributes
    assert cfg.max_pool_connections is not None and cfg.max_pool_connections >= 44
    assert cfg.retries is not None and cfg.retries["mode"] == "standard"


# -- the registry --------------------------------------------------------------------


def test_get_store_reuses_and_rebuilds(tmp_path: Path) -> None:
    djb.config["stores"] = {
        "local": {"protocol": "file", "location": str(tmp_path / "a")},
        "mem": {"protocol": "memory", "location": "m-" + uuid.uuid4().hex},
    }
    a = get_store("local")
    assert isinstance(a, FileStore) and a.location == str(tmp_path / "a")
    assert get_store("local") is a
    djb.config["threads"] = 3  # other settings: same store
    assert get_store("local") is a
    djb.config["stores"] = {
        "local": {"protocol": "file", "location": str(tmp_path / "a")},
        "mem": {"protocol": "memory", "location": "m-other"},
    }
    assert get_store("local") is a  # its own settings did not change
    djb.config["stores"] = {"local": {"protocol": "file", "location": str(tmp_path / "b")}}
    b = get_store("local")
    assert b is not a and b.location == str(tmp_path / "b")
    with djb.config.override(stores={"local": {"protocol": "memory", "location": "x"}}):
        assert isinstance(get_store("local"), MemoryStore)
    assert isinstance(get_store("local"), FileStore)


def test_get_store_is_thread_safe(tmp_path: Path) -> None:
    djb.config["stores"] = {"t": {"protocol": "file", "location": str(tmp_path / "t")}}
    barrier = threading.Barrier(16)

    def get(_: int) -> Store:
        barrier.wait()
        return get_store("t")

    with concurrent.futures.ThreadPoolExecutor(16) as pool:
        got = list(pool.map(get, range(16)))
    assert len({id(s) for s in got}) == 1


def test_get_store_not_configured() -> None:
    djb.config["stores"] = {}
    with pytest.raises(StoreNotConfiguredError) as info:
        get_store("nowhere")
    assert "'nowhere'" in str(info.value) and "djb.config['stores']" in str(info.value)


@pytest.mark.parametrize(
    ("spec", "words"),
    [
        ({"protocol": "file", "location": "/x", "colour": "red"}, ["'colour'"]),
        ({"protocol": "file"}, ["missing", "'location'"]),
        ({"protocol": "s3", "location": "", "endpoint": "h:1"}, ["missing", "'bucket'"]),
        ({"protocol": "ftp", "location": "/x"}, ["protocol", "'ftp'"]),
        ({"protocol": "s3", "location": "", "bucket": "b", "access_key": ACCESS}, ["secret_key"]),
    ],
)
def test_build_store_validates(spec: dict[str, Any], words: list[str]) -> None:
    with pytest.raises(ConfigError) as info:
        build_store("mystore", spec)
    msg = str(info.value)
    assert "'mystore'" in msg
    for word in words:
        assert word in msg
    if "access_key" in spec:
        _assert_clean(msg)


def test_file_store_get_reads_the_whole_payload_through_short_reads(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A file system may return fewer bytes than asked (FUSE, signals): get reads on."""
    store = FileStore("local", location=str(tmp_path), fsync=False)
    path = PurePosixPath(tmp_path / "ab" / "payload")
    data = bytes(range(256)) * 40
    store.put(path, data)
    real_read = os.read
    monkeypatch.setattr(os, "read", lambda fd, n: real_read(fd, min(n, 1000)))
    assert store.get(path) == data


def test_path_to_key_normalisation_is_one_function() -> None:
    """Every store kind turns a path into a key the same way (``object_key``)."""
    from sa_djblob.stores import base, fsspec, memory, s3

    assert base.object_key("/a/b") == "a/b"
    assert base.object_key(PurePosixPath(".")) == ""
    assert base.object_key("a//b/") == "a/b"
    assert s3.S3Store.key is not None and s3.S3Store.key("/x/y") == base.object_key("/x/y")
    assert memory.object_key is base.object_key and fsspec.object_key is base.object_key


def test_longest_url_expiry_is_written_once() -> None:
    from sa_djblob._externals import stored
    from sa_djblob.stores import base, s3

    assert base.MAX_URL_EXPIRY == 7 * 24 * 3600
    assert stored.MAX_URL_EXPIRY is base.MAX_URL_EXPIRY and s3.MAX_URL_EXPIRY is base.MAX_URL_EXPIRY
