"""The sa-djblob command line, end to end, against SQLite and MariaDB."""

from __future__ import annotations

import datetime
import json
import os
import subprocess
import sys
import uuid
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from click.testing import CliRunner
from helpers.common import make_table, value

import sa_djblob as djb
from sa_djblob.cli import cli, mask_url, parse_duration

pytestmark = pytest.mark.backends("sqlite", "mysql")


@pytest.fixture
def env(engine: sa.Engine, tmp_path: Path) -> dict[str, Any]:
    """A schema with 4 entries (2 used, 2 unused), its URL and a config file."""
    spec = {"protocol": "file", "location": str(tmp_path / "store")}
    cfg = tmp_path / "djb.json"
    cfg.write_text(json.dumps({"stores": {"shared": spec}}))
    djb.config["stores"] = {"shared": spec}
    djb.install(engine)
    table = make_table(engine)
    with engine.begin() as conn:
        conn.execute(sa.insert(table), [{"id": i, "b": value(i)} for i in range(4)])
        conn.execute(sa.delete(table).where(table.c.id >= 2))
    ext = djb.externals(engine)["shared"]
    url = engine.url.render_as_string(hide_password=False)
    return {"url": url, "config": str(cfg), "ext": ext, "table": table, "engine": engine}


def run(env: dict[str, Any], *args: str, input: str | None = None) -> Any:
    runner = CliRunner()
    return runner.invoke(
        cli,
        ["--url", env["url"], "--config", env["config"], *args],
        input=input,
        catch_exceptions=False,
    )


def test_listing_commands(env: dict[str, Any]) -> None:
    ext = env["ext"]
    res = run(env, "used", "--json")
    assert res.exit_code == 0, res.output
    assert sorted(json.loads(res.output)["stores"]["shared"]) == sorted(map(str, ext.used()))
    res = run(env, "--json", "unused")
    assert res.exit_code == 0
    assert sorted(json.loads(res.output)["stores"]["shared"]) == sorted(map(str, ext.unused()))
    res = run(env, "paths", "--json", "--store", "shared")
    data = json.loads(res.output)["stores"]["shared"]
    assert {(d["hash"], d["path"]) for d in data} == {(str(h), str(p)) for h, p in ext.paths()}
    res = run(env, "unused")
    assert res.exit_code == 0 and "2 unused entries" in res.output
    for h in ext.unused():
        assert str(h) in res.output
    res = run(env, "paths")
    assert "4 entries" in res.output and "path" in res.output.splitlines()[0]


def test_sweep_dry_run_then_sweep_then_verify(env: dict[str, Any]) -> None:
    ext = env["ext"]
    before = ext.paths()
    res = run(env, "sweep", "--dry-run", "--json")
    assert res.exit_code == 0, res.output
    data = json.loads(res.output)
    assert data["dry_run"] is True
    assert data["stores"]["shared"]["rows_deleted"] == 2 and data["stores"]["shared"]["ok"]
    assert ext.paths() == before

    res = run(env, "sweep", "--dry-run")
    assert res.exit_code == 0 and "dry run: nothing deleted" in res.output
    assert ext.paths() == before

    # without --yes it asks; "no" deletes nothing
    res = run(env, "sweep", input="n\n")
    assert res.exit_code == 0 and ext.paths() == before
    res = run(env, "sweep", input="y\n")
    assert res.exit_code == 0, res.output
    assert "swept" in res.output and len(ext.paths()) == 2 and ext.unused() == []

    res = run(env, "sweep", "--yes", "--grace", "0", "--json")
    assert res.exit_code == 0
    assert json.loads(res.output)["stores"]["shared"]["rows_deleted"] == 0

    res = run(env, "verify", "--json")
    assert res.exit_code == 0, res.output
    assert json.loads(res.output)["stores"]["shared"] == {
        "checked": 2,
        "missing": [],
        "corrupt": [],
        "errors": [],
        "ok": True,
    }

    # a missing payload: verify says which, with exit code 1
    key, path = ext.paths()[0]
    ext.store.remove(path)
    res = run(env, "verify", "--json")
    assert res.exit_code == 1
    assert json.loads(res.output)["stores"]["shared"]["missing"] == [
        {"hash": str(key), "path": str(path)}
    ]
    res = run(env, "verify")
    assert res.exit_code == 1 and f"missing {key}" in res.output


def test_sweep_yes_collects_orphans_after_grace(env: dict[str, Any]) -> None:
    ext = env["ext"]
    store = ext.store
    path = ext.object_path(uuid.UUID(int=7))
    store.put(path, b"orphaned")
    res = run(env, "sweep", "--yes", "--json")  # default grace 1h: kept
    out = json.loads(res.output)["stores"]["shared"]
    assert res.exit_code == 0 and out["orphans_kept"] == 1 and out["orphans_deleted"] == 0
    # path's name is valid hex but the content does not match: still an orphan (no row)
    res = run(env, "sweep", "--yes", "--grace", "0s", "--json")
    out = json.loads(res.output)["stores"]["shared"]
    assert out["orphans_deleted"] == 1 and not store.exists(path)


def test_sweep_errors_exit_1(env: dict[str, Any], monkeypatch: pytest.MonkeyPatch) -> None:
    store = env["ext"].store
    monkeypatch.setattr(
        store, "remove_many", lambda paths: dict.fromkeys(paths, "injected failure")
    )
    res = run(env, "sweep", "--yes", "--json")
    assert res.exit_code == 1
    data = json.loads(res.output)["stores"]["shared"]
    assert not data["ok"] and "injected failure" in data["errors"][0]
    assert len(env["ext"].unused()) == 2


def test_stores_masks_secrets(tmp_path: Path) -> None:
    cfg = tmp_path / "c.json"
    cfg.write_text(
        json.dumps(
            {
                "stores": {
                    "remote": {
                        "protocol": "s3",
                        "endpoint": "localhost:9000",
                        "bucket": "b",
                        "location": "x",
                        "access_key": "AKIAHIDDEN",
                        "secret_key": "VERYSECRET",
                    },
                    "local": {"protocol": "file", "location": str(tmp_path)},
                }
            }
        )
    )
    url = "mysql+pymysql://alice:pa55word@db.example:3306/lab"
    runner = CliRunner()
    for args in (["stores"], ["stores", "--json"]):
        res = runner.invoke(cli, ["--url", url, "--config", str(cfg), *args])
        assert res.exit_code == 0, res.output
        for secret in ("pa55word", "AKIAHIDDEN", "VERYSECRET"):
            assert secret not in res.output
        assert "***" in res.output and "remote" in res.output and "local" in res.output
    data = json.loads(res.output)
    assert data["url"] == "mysql+pymysql://alice:***@db.example:3306/lab"
    assert mask_url(url) == data["url"]


def test_usage_and_connection_errors_exit_2(tmp_path: Path) -> None:
    cfg = tmp_path / "c.json"
    cfg.write_text(json.dumps({"stores": {"s": {"protocol": "file", "location": str(tmp_path)}}}))
    runner = CliRunner()
    res = runner.invoke(cli, ["--config", str(cfg), "used"], env={"SA_DJBLOB_URL": ""})
    assert res.exit_code == 2 and "no database URL" in res.output
    bad = "mysql+pymysql://bob:t0psecret@127.0.0.1:1/nothing"
    res = runner.invoke(cli, ["--url", bad, "--config", str(cfg), "verify"])
    assert res.exit_code == 2, res.output
    assert "t0psecret" not in res.output and "***" in res.output
    res = runner.invoke(
        cli, ["--url", "sqlite://", "--config", str(cfg), "sweep", "--grace", "soon"]
    )
    assert res.exit_code == 2 and "duration" in res.output
    res = runner.invoke(
        cli, ["--url", "sqlite://", "--config", str(cfg), "used", "--store", "nope"]
    )
    assert res.exit_code == 2 and "not configured" in res.output
    res = runner.invoke(
        cli, ["--url", "sqlite://", "--config", str(tmp_path / "none.json"), "used"]
    )
    assert res.exit_code == 2 and "cannot read config file" in res.output
    res = runner.invoke(cli, ["frobnicate"])
    assert res.exit_code == 2


def test_parse_duration() -> None:
    assert parse_duration("1h") == datetime.timedelta(hours=1)
    assert parse_duration("1h30m") == datetime.timedelta(minutes=90)
    assert parse_duration("0") == datetime.timedelta(0)
    assert parse_duration("45") == datetime.timedelta(seconds=45)
    assert parse_duration("2d") == datetime.timedelta(days=2)
    with pytest.raises(ValueError):
        parse_duration("1 fortnight")


def test_console_script_in_a_process(env: dict[str, Any]) -> None:
    """The real process: env var URL, exit codes as a shell script sees them."""
    penv = {**os.environ, "SA_DJBLOB_URL": env["url"]}
    base = [sys.executable, "-m", "sa_djblob.cli", "--config", env["config"]]
    out = subprocess.run(
        [*base, "sweep", "--dry-run", "--json"],
        env=penv,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert out.returncode == 0, out.stderr
    assert json.loads(out.stdout)["stores"]["shared"]["rows_deleted"] == 2
    out = subprocess.run(
        [*base, "sweep", "--yes"], env=penv, capture_output=True, text=True, timeout=60
    )
    assert out.returncode == 0, out.stderr
    assert len(env["ext"].paths()) == 2
    env["ext"].store.remove(env["ext"].paths()[0][1])
    out = subprocess.run([*base, "verify"], env=penv, capture_output=True, text=True, timeout=60)
    assert out.returncode == 1 and "missing" in out.stdout


def test_store_option_before_or_after_the_command(env: dict[str, Any]) -> None:
    ext = env["ext"]
    for args in (
        ["--store", "shared", "unused", "--json"],
        ["unused", "--store", "shared", "--json"],
        ["--store", "shared", "unused", "--store", "shared", "--json"],
    ):
        res = run(env, *args)
        assert res.exit_code == 0, res.output
        assert sorted(json.loads(res.output)["stores"]["shared"]) == sorted(map(str, ext.unused()))
    res = run(env, "--store", "elsewhere", "used")
    assert res.exit_code == 2 and "'elsewhere' is not configured" in res.output
    res = run(env, "--store", "shared", "stores", "--json")
    assert res.exit_code == 0 and [s["name"] for s in json.loads(res.output)["stores"]] == [
        "shared"
    ]


def test_unknown_schema_is_a_usage_error(env: dict[str, Any]) -> None:
    for command in ("used", "unused", "paths", "verify", "sweep"):
        extra = ["--dry-run"] if command == "sweep" else []
        res = run(env, "--schema", "no_such_schema_x", command, *extra)
        assert res.exit_code == 2, (command, res.output)
        assert "schema 'no_such_schema_x' does not exist" in res.output


def test_declined_sweep_prints_its_table_once(env: dict[str, Any]) -> None:
    before = env["ext"].paths()
    res = run(env, "sweep", input="n\n")
    assert res.exit_code == 0, res.output
    assert res.output.count("orphans kept") == 1, res.output
    assert "nothing deleted" in res.output and env["ext"].paths() == before


def test_stores_shows_each_kind_by_its_class(tmp_path: Path) -> None:
    cfg = tmp_path / "c.json"
    stores = {
        "remote": {"protocol": "s3", "endpoint": "h:9000", "bucket": "b", "location": "x"},
        "cloud": {
            "protocol": "fsspec",
            "url": "memory://lab/data",
            "options": {"token": "GCS-TOKEN-42"},
        },
    }
    cfg.write_text(json.dumps({"stores": stores}))
    res = CliRunner().invoke(cli, ["--config", str(cfg), "stores"])
    assert res.exit_code == 0, res.output
    assert "s3://b/x at h:9000" in res.output and "memory://lab/data" in res.output
    assert "GCS-TOKEN-42" not in res.output
    res = CliRunner().invoke(cli, ["--config", str(cfg), "stores", "--json"])
    data = {s["name"]: s for s in json.loads(res.output)["stores"]}
    assert data["cloud"]["options"] == {"token": "***"}
    assert data["remote"]["read_timeout"] == 5.0


def test_stores_settings_lists_every_kinds_settings_from_their_declarations() -> None:
    """``sa-djblob stores --settings`` prints what each registered store kind accepts,
    from the kinds' own ``Setting`` declarations (one place per fact)."""
    from sa_djblob.stores import registered_protocols, store_class

    res = CliRunner().invoke(cli, ["stores", "--settings"])
    assert res.exit_code == 0, res.output
    assert "seconds to wait for a connection" in res.output  # s3's connect_timeout
    res = CliRunner().invoke(cli, ["stores", "--settings", "--json"])
    assert res.exit_code == 0, res.output
    kinds = json.loads(res.output)["kinds"]
    assert sorted(kinds) == registered_protocols()
    for protocol, settings in kinds.items():
        declared = store_class(protocol).settings
        assert sorted(settings) == sorted(declared)
        for key, about in settings.items():
            assert about["doc"] == declared[key].doc
            assert about["required"] == declared[key].required
    for protocol in ("file", "memory", "s3", "fsspec"):  # this package's kinds say it all
        assert all(about["doc"] for about in kinds[protocol].values()), protocol
    assert kinds["s3"]["secret_key"]["secret"] is True
    assert kinds["s3"]["connect_timeout"]["default"] == 3.0
