"""``_layout.object_path`` builds DataJoint 0.14.10's object paths, for file and S3 stores.

The expected strings (``helpers/dj_paths.py``) were produced by DataJoint 0.14.10 itself
(``ExternalTable._make_uuid_path`` with ``database='main'``, on Python 3.11); the interop
tests compare against the live DataJoint too (``test_object_paths_match_live_datajoint``).
"""

from __future__ import annotations

import uuid
from pathlib import PurePosixPath

import pytest
from helpers.dj_paths import DATAJOINT

import sa_djblob as djb
from sa_djblob._layout import object_name, object_path, store_root
from sa_djblob.stores.s3 import S3Store

KEY = uuid.UUID("0123456789abcdef0123456789abcdef")
TAIL = "main/01/23/0123456789abcdef0123456789abcdef"


@pytest.mark.parametrize(("protocol", "location"), sorted(DATAJOINT))
def test_object_path_is_datajoints(protocol: str, location: str) -> None:
    want = DATAJOINT[(protocol, location)] + TAIL
    got = object_path(location, "main", KEY, protocol=protocol)
    assert str(got) == want
    named = object_path(location, "main", KEY, "notes.txt", (2, 2), protocol=protocol)
    assert str(named) == want + ".notes.txt"
    if protocol == "s3":  # the display is the key: S3Store.key leaves it alone
        assert S3Store.key(got) == str(got)
        assert not str(got).startswith("/")


@pytest.mark.parametrize(("protocol", "location"), sorted(DATAJOINT))
@pytest.mark.parametrize("subfolding", [(2, 2), (1, 3), (), (5,)])
@pytest.mark.parametrize("schema", ["main", "lab.v2", "a/b", "", "."])
def test_object_name_is_the_object_path_as_a_string(
    protocol: str, location: str, subfolding: tuple[int, ...], schema: str
) -> None:
    """The read path of a file store opens ``object_name`` (built without a path object):
    the same place as ``object_path`` for every root rule, subfolding and schema."""
    for name in (None, "notes.txt"):
        for loc in (location, "", ".", "/", "//"):
            if loc != location and protocol == "s3":
                continue
            path = object_path(loc, schema, KEY, name, subfolding, protocol=protocol)
            got = object_name(loc, schema, KEY, name, subfolding, protocol=protocol)
            assert got == str(path), (loc, schema)
        path = object_path(location, schema, KEY, name, subfolding, protocol=protocol)
        got = object_name(location, schema, KEY, name, subfolding, protocol=protocol)
        assert got == str(path)


def test_positional_signature_and_default_protocol_are_the_file_rules() -> None:
    assert object_path("/dj", "main", KEY, None, (2, 2)) == PurePosixPath("/dj/" + TAIL)
    assert object_path("f:\\d", "main", KEY) == PurePosixPath("f:\\d/" + TAIL)
    assert object_path("/dj", "main", KEY, "a.bin", (1, 3)) == PurePosixPath(
        "/dj/main/0/123/0123456789abcdef0123456789abcdef.a.bin"
    )
    # memory stores follow the file rules
    assert object_path("/dj", "main", KEY, protocol="memory") == PurePosixPath("/dj/" + TAIL)


def test_store_root() -> None:
    assert store_root("f:\\data\\dj", "s3") == PurePosixPath("data/dj")
    assert store_root("/dj/", "s3") == PurePosixPath("dj")
    assert store_root("/dj/", "file") == PurePosixPath("/dj")
    assert store_root("f:\\", "s3") == PurePosixPath(".")


@pytest.mark.parametrize("location", [".", "./", "./."])
def test_s3_location_naming_no_folder_is_refused(location: str) -> None:
    """DataJoint fails with an IndexError on these; sa_djblob says what to set instead."""
    with pytest.raises(djb.ConfigError, match="location to ''"):
        object_path(location, "main", KEY, protocol="s3")


def test_each_store_class_knows_its_own_root() -> None:
    """DataJoint's S3 location rules live in the S3 store; file and memory keep the path."""
    from sa_djblob.stores import FileStore, MemoryStore

    assert S3Store.root_of("f:\\data\\dj") == PurePosixPath("data/dj")
    assert S3Store.root_of("/dj/") == PurePosixPath("dj")
    assert FileStore.root_of("/dj/") == PurePosixPath("/dj")
    assert MemoryStore.root_of("f:\\d") == PurePosixPath("f:\\d")
    store = MemoryStore("m", location="\\dj")
    assert store.root == PurePosixPath("\\dj")
    assert S3Store("s", endpoint="localhost:9", bucket="b", location="\\dj").root == (
        PurePosixPath("dj")
    )


def test_no_module_tests_protocol_strings() -> None:
    """What a store kind does differently is a property of its class, never
    ``store.protocol == "..."`` somewhere else."""
    import re
    from pathlib import Path

    package = Path(djb.__file__).parent
    found = [
        f"{path.relative_to(package)}:{n}"
        for path in sorted(package.rglob("*.py"))
        for n, line in enumerate(path.read_text().splitlines(), 1)
        if re.search(r"protocol\s*[!=]=\s*['\"]", line)
    ]
    assert not found, found
