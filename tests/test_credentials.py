"""Credentials never appear in messages, logs or reprs."""

from __future__ import annotations

import pytest

import sa_djblob as djb
from sa_djblob.stores import get_store

pytest.importorskip("fsspec")


def _configure() -> None:
    djb.config["stores"] = {
        "g": {
            "protocol": "fsspec",
            "url": "memory://bkt/p",
            "location": "x",
            # s3fs / adlfs / gcsfs take their credentials nested like this
            "options": {
                "client_kwargs": {"aws_secret_access_key": "TOPSECRET1"},
                "headers": {"Authorization": "Bearer TOPSECRET2"},
            },
        }
    }


def test_nested_fsspec_credentials_masked_in_config_repr() -> None:
    _configure()
    text = repr(djb.config) + str(djb.config)
    assert "TOPSECRET1" not in text
    assert "TOPSECRET2" not in text


def test_nested_fsspec_credentials_scrubbed_from_store_errors() -> None:
    _configure()
    store = get_store("g")
    assert "TOPSECRET1" not in repr(store)
    assert set(store.secret_values(djb.config["stores"]["g"])) >= {"TOPSECRET1"}
