"""djb.config: validation, override, file loading, no secrets in reprs."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

import sa_djblob as djb
from sa_djblob._config import Config


def test_defaults_and_mapping_protocol() -> None:
    cfg = Config()
    assert cfg["stores"] == {} and cfg["cache"] is None and cfg["download_path"] == "."
    assert set(cfg) >= {"stores", "cache", "download_path", "cache_limit"}
    cfg["download_path"] = Path("/tmp/x")
    assert cfg["download_path"] == "/tmp/x"
    del cfg["download_path"]
    assert cfg["download_path"] == "."


@pytest.mark.parametrize(
    ("key", "value", "message"),
    [
        ("nope", 1, "unknown config key 'nope'"),
        ("cache_limit", -5, "positive integer"),
        ("threads", 0, "positive integer"),
        ("download_path", 3, "must be a path"),
        ("stores", [], "must be a dict"),
        ("stores", {"s": {"protocol": "ftp"}}, "store 's': unknown protocol 'ftp'"),
        ("stores", {"s": {"protocol": "file"}}, "store 's': missing key 'location'"),
        (
            "stores",
            {"s": {"protocol": "file", "location": "/x", "bucket": "b"}},
            "store 's': unknown key 'bucket'",
        ),
        (
            "stores",
            {"s": {"protocol": "s3", "location": "", "bucket": "b", "access_key": "A"}},
            "both",
        ),
        ("stores", {"s": {"protocol": "file", "location": "/x", "hash": "sha1"}}, "'hash' must be"),
        ("stores", {"bad name": {"protocol": "file", "location": "/x"}}, "letters, digits"),
        ("stores", {"-lead": {"protocol": "file", "location": "/x"}}, "start with a letter"),
    ],
)
def test_validation_errors_name_the_key(key: str, value: object, message: str) -> None:
    cfg = Config()
    with pytest.raises(djb.ConfigError, match=message.replace("(", r"\(")):
        cfg[key] = value


def test_override_restores() -> None:
    before = djb.config["download_path"]
    with djb.config.override(download_path="/somewhere", cache="/c"):
        assert djb.config["download_path"] == "/somewhere"
        assert djb.config["cache"] == "/c"
    assert djb.config["download_path"] == before and djb.config["cache"] is None
    with pytest.raises(djb.ConfigError), djb.config.override(threads="many"):
        pass
    assert djb.config["download_path"] == before


def test_repr_hides_secrets() -> None:
    cfg = Config()
    cfg["stores"] = {
        "s": {
            "protocol": "s3",
            "location": "",
            "bucket": "b",
            "access_key": "AKIAXYZ",
            "secret_key": "TOPSECRET",
        }
    }
    text = repr(cfg)
    assert "TOPSECRET" not in text and "AKIAXYZ" not in text and "***" in text


@pytest.mark.parametrize("suffix", [".json", ".toml"])
def test_loaded_from_file_named_by_env(tmp_path: Path, suffix: str) -> None:
    f = tmp_path / f"cfg{suffix}"
    if suffix == ".json":
        f.write_text(
            json.dumps(
                {
                    "download_path": "/dl",
                    "stores": {"local": {"protocol": "file", "location": "/data"}},
                }
            )
        )
    else:
        f.write_text(
            'download_path = "/dl"\n[stores.local]\nprotocol = "file"\nlocation = "/data"\n'
        )
    code = (
        "import sa_djblob as djb; "
        "print(djb.config['download_path'], djb.config['stores']['local']['location'])"
    )
    out = subprocess.run(
        [sys.executable, "-c", code],
        env={"SA_DJBLOB_CONFIG": str(f), "PATH": "/usr/bin:/bin"},
        capture_output=True,
        text=True,
        check=True,
    )
    assert out.stdout.split() == ["/dl", "/data"]


def test_bad_file_is_a_config_error(tmp_path: Path) -> None:
    f = tmp_path / "broken.json"
    f.write_text("{nope")
    with pytest.raises(djb.ConfigError, match="not valid"):
        Config().load(f)
    with pytest.raises(djb.ConfigError, match="cannot read"):
        Config().load(tmp_path / "missing.json")


def test_override_is_seen_only_by_its_own_thread() -> None:
    import threading

    barrier = threading.Barrier(2, timeout=10)
    seen: dict[str, str] = {}

    def request(name: str) -> None:
        with djb.config.override(download_path=f"/downloads/{name}"):
            barrier.wait()  # both overrides are active now
            seen[name] = djb.config["download_path"]
            barrier.wait()

    threads = [threading.Thread(target=request, args=(n,)) for n in ("a", "b")]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert seen == {"a": "/downloads/a", "b": "/downloads/b"}


def test_override_is_seen_only_by_its_own_task() -> None:
    import asyncio

    async def request(name: str, both: asyncio.Barrier) -> str:
        with djb.config.override(download_path=f"/downloads/{name}"):
            await both.wait()  # both overrides are active now
            seen = str(djb.config["download_path"])
            await both.wait()
            return seen

    async def main() -> list[str]:
        both = asyncio.Barrier(2)
        return list(await asyncio.gather(request("a", both), request("b", both)))

    before = djb.config["download_path"]
    assert asyncio.run(main()) == ["/downloads/a", "/downloads/b"]
    assert djb.config["download_path"] == before


def test_override_reaches_sa_djblobs_worker_threads() -> None:
    from sa_djblob import _pool

    with djb.config.override(download_path="/downloads/worker"):
        got = _pool.run_all(lambda i: (i, djb.config["download_path"]), range(8))
    assert got == [(i, "/downloads/worker") for i in range(8)]
