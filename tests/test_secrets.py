"""Store settings never show a credential: every option value and URL query value is
masked in ``repr(djb.config)``, the command line, store reprs and error messages, unless
the store kind declares it harmless."""

from __future__ import annotations

import json
import uuid
from pathlib import Path, PurePosixPath
from typing import Any

import pytest
from click.testing import CliRunner

import sa_djblob as djb
from sa_djblob.cli import cli
from sa_djblob.stores import FsspecStore, get_store

pytest.importorskip("fsspec")

# none of these option names says "key", "token" or "password"
PASSPHRASE = "PASSPHRASE-0d1f"  # paramiko's (sftp) private-key passphrase
HEADER = "Bearer HDR-77aa"  # a header given as a list of pairs
SIGNATURE = "SIG-5e5e9c"  # a signed URL's query value
EXPIRY = "2031-01-01T00%3A00Z"
SECRETS = (PASSPHRASE, HEADER, "HDR-77aa", SIGNATURE, "2031-01-01T00:00Z", EXPIRY)


def _spec(**extra: Any) -> dict[str, Any]:
    return {
        "protocol": "fsspec",
        "url": f"memory://djbt-{uuid.uuid4().hex[:8]}/lab?sig={SIGNATURE}&se={EXPIRY}",
        "location": "x",
        "options": {
            "passphrase": PASSPHRASE,
            "client_kwargs": {"headers": [["Authorization", HEADER]], "region_name": "eu-1"},
            "anon": False,
        },
        **extra,
    }


def _assert_clean(text: str) -> None:
    for secret in SECRETS:
        assert secret not in text, text


def test_config_repr_masks_every_option_and_url_query_value() -> None:
    djb.config["stores"] = {"g": _spec()}
    _assert_clean(repr(djb.config) + str(djb.config))
    assert "***" in repr(djb.config)


def test_store_repr_and_location_mask_url_query_values() -> None:
    djb.config["stores"] = {"g": _spec()}
    store = get_store("g")
    _assert_clean(repr(store))
    _assert_clean(FsspecStore.display_location(djb.config["stores"]["g"]))
    assert "sig=***" in repr(store)


def test_describe_shows_only_what_the_store_kind_declares_harmless() -> None:
    shown = FsspecStore.describe(FsspecStore.validate_settings("g", _spec()))
    options = shown["options"]
    assert options["passphrase"] == "***"
    assert options["client_kwargs"]["headers"] == "***"
    # declared harmless by FsspecStore: shown as they are
    assert options["client_kwargs"]["region_name"] == "eu-1"
    assert options["anon"] is False
    assert set(FsspecStore.secret_values(_spec())) >= {PASSPHRASE, HEADER, SIGNATURE}


def test_store_errors_never_show_url_query_or_option_values() -> None:
    djb.config["stores"] = {"g": _spec()}
    store = get_store("g")
    with pytest.raises(djb.MissingPayloadError) as missing:
        store.get(PurePosixPath("x/none"))
    _assert_clean(str(missing.value))

    def fail(path: str, *args: Any, **kwargs: Any) -> bytes:
        # file systems put the full path (with the URL's query) and options in messages
        raise RuntimeError(f"cannot read {path} with passphrase {PASSPHRASE}")

    assert isinstance(store, FsspecStore)
    store.fs.cat_file = fail
    with pytest.raises(djb.StoreError) as failed:
        store.get(PurePosixPath("x/none"))
    _assert_clean(str(failed.value))
    assert "***" in str(failed.value)


def test_cli_stores_listing_masks_option_and_query_values(tmp_path: Path) -> None:
    cfg = tmp_path / "c.json"
    cfg.write_text(json.dumps({"stores": {"g": _spec()}}))
    for args in (["stores"], ["stores", "--json"]):
        res = CliRunner().invoke(cli, ["--config", str(cfg), *args])
        assert res.exit_code == 0, res.output
        _assert_clean(res.output)
        assert "***" in res.output


def test_each_part_of_a_chained_url_hides_its_password_and_query() -> None:
    spec = {
        "protocol": "fsspec",
        "url": "simplecache::ftp://lab:PW-CHAIN-9@127.0.0.1:1/data?token=TOK-CHAIN-8",
    }
    shown = repr(FsspecStore.redact(spec)) + FsspecStore.display_location(spec)
    assert "PW-CHAIN-9" not in shown and "TOK-CHAIN-8" not in shown
    assert "simplecache::ftp://lab:***@127.0.0.1:1/data?token=***" in shown
    assert {"PW-CHAIN-9", "TOK-CHAIN-8"} <= set(FsspecStore.secret_values(spec))
    # a URL with nothing to hide is shown as written
    assert FsspecStore.display_location({"url": "file:///Data/Store"}) == "file:///Data/Store"
