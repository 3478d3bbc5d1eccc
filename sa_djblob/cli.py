"""``sa-djblob``: the command line over ``djb.externals(engine, schema)[store]``.

    sa-djblob --url mysql+pymysql://user:pw@host/db --config stores.json sweep --dry-run

Commands: ``stores``, ``paths``, ``used``, ``unused``, ``sweep``, ``verify``, ``move``,
``copy-store``, ``dj2-convert``. Tables for people by default, ``--json`` for programs. Exit
codes: 0 all well, 1 problems found (a sweep that reported errors, payloads missing or
corrupt), 2 a usage, configuration or connection error. Passwords and store keys are never
printed.

It calls the public Python API only (the ``cli`` extra installs click and tqdm).
"""

from __future__ import annotations

import dataclasses
import datetime
import json
import re
import sys
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager, suppress
from pathlib import Path
from typing import Any, NoReturn, TypeVar

import click
import sqlalchemy as sa

from . import __version__
from ._config import config
from ._exceptions import SaDjblobError
from ._externals import CopyReport, ExternalTable, SweepReport, VerifyReport, externals
from .stores import registered_protocols, store_class, validate_store_spec
from .stores.base import NO_DEFAULT

__all__ = ["main", "parse_duration"]

URL_ENV = "SA_DJBLOB_URL"
OK, PROBLEMS, USAGE = 0, 1, 2
_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}
_F = TypeVar("_F", bound=Callable[..., Any])


def parse_duration(text: str) -> datetime.timedelta:
    """``"90s"``, ``"30m"``, ``"1h"``, ``"2d"``, ``"1h30m"``, or a number of seconds."""
    s = text.strip().lower()
    if re.fullmatch(r"\d+(\.\d+)?", s):
        return datetime.timedelta(seconds=float(s))
    parts = re.findall(r"(\d+(?:\.\d+)?)\s*([smhdw])", s)
    if not parts or re.sub(r"(\d+(?:\.\d+)?)\s*([smhdw])", "", s).strip():
        raise ValueError(f"not a duration: {text!r} (examples: 90s, 30m, 1h, 2d, 1h30m, 0)")
    return datetime.timedelta(seconds=sum(float(n) * _UNITS[u] for n, u in parts))


def _duration(ctx: click.Context, param: click.Parameter, value: Any) -> datetime.timedelta:
    if isinstance(value, datetime.timedelta):
        return value
    try:
        return parse_duration(str(value))
    except ValueError as exc:
        raise click.BadParameter(str(exc), ctx, param) from None


class _State:
    def __init__(
        self,
        url: str | None,
        schema: str | None,
        as_json: bool,
        progress: bool | None,
        stores: Sequence[str] = (),
    ) -> None:
        self.url = url
        self.schema = schema
        self.stores = tuple(stores)
        self.as_json = as_json
        self._progress = progress
        self._engine: sa.Engine | None = None
        #: secrets of settings read besides the configuration (copy-store's --to FILE)
        self.extra_secrets: list[str] = []

    @property
    def progress(self) -> bool:
        if self.as_json and self._progress is None:
            return False
        return self._progress if self._progress is not None else sys.stderr.isatty()

    def masked_url(self) -> str | None:
        return mask_url(self.url) if self.url else None

    def engine(self) -> sa.Engine:
        if self._engine is None:
            if not self.url:
                _fail(f"no database URL: give --url or set {URL_ENV}")
            try:
                self._engine = sa.create_engine(self.url)
            except Exception as exc:  # bad URL, missing driver: a usage error
                _fail(f"cannot use database URL {self.masked_url()}: {self.scrub(str(exc))}")
        return self._engine

    def scrub(self, text: str) -> str:
        """*text* without the URL's password or any store key."""
        secrets: list[str] = []
        if self.url:
            try:
                pw = sa.make_url(self.url).password
            except Exception:  # an unparsable URL has no password to hide
                pw = None
            if pw:
                secrets.append(str(pw))
        for spec in config["stores"].values():
            secrets.extend(store_class(spec["protocol"]).secret_values(spec))
        secrets.extend(self.extra_secrets)
        for s in secrets:
            text = text.replace(s, "***")
        return text

    def check_schema(self) -> None:
        """A usage error (exit 2) if --schema names a schema the database does not have."""
        if self.schema is None:
            return
        names = sa.inspect(self.engine()).get_schema_names()
        if self.schema not in names:
            shown = ", ".join(sorted(n for n in names if n != "information_schema"))
            _fail(
                f"schema {self.schema!r} does not exist in database {self.masked_url()}"
                f" (its schemas: {shown or 'none'}): check --schema"
            )

    def tables(self, stores: Sequence[str]) -> list[ExternalTable]:
        self.check_schema()
        stores = (*self.stores, *(s for s in stores if s not in self.stores))
        found = externals(self.engine(), self.schema)
        if not found:
            _fail("no stores are configured: give --config FILE (or set SA_DJBLOB_CONFIG)")
        names = list(stores) or sorted(found)
        unknown = [n for n in names if n not in found]
        if unknown:
            known = ", ".join(sorted(found))
            _fail(f"store {unknown[0]!r} is not configured (configured: {known})")
        return [found[n] for n in names]

    def close(self) -> None:
        if self._engine is not None:
            self._engine.dispose()


def mask_url(url: str) -> str:
    """*url* with its password replaced by ``***``."""
    try:
        return sa.make_url(url).render_as_string(hide_password=True)
    except Exception:  # not a URL SQLAlchemy can parse: hide what looks like a password
        return re.sub(r"(//[^:/@]*:)[^@]*@", r"\1***@", url)


def _fail(message: str, code: int = USAGE) -> NoReturn:
    click.echo(f"sa-djblob: error: {message}", err=True)
    sys.exit(code)


@contextmanager
def _errors(state: _State) -> Iterator[None]:
    """Connection, configuration and store errors: a message and exit code 2."""
    try:
        yield
    except SaDjblobError as exc:
        _fail(state.scrub(str(exc)))
    except sa.exc.SQLAlchemyError as exc:
        orig = getattr(exc, "orig", None)
        detail = str(orig) if orig is not None else str(exc).splitlines()[0]
        _fail(f"database {state.masked_url()}: {state.scrub(detail)}")


def _emit(state: _State, data: Any, human: Callable[[], None]) -> None:
    if state.as_json:
        click.echo(json.dumps(data, indent=2, default=str))
    else:
        human()


def _table(headers: Sequence[str], rows: Sequence[Sequence[Any]]) -> None:
    cells = [[str(c) for c in r] for r in rows]
    widths = [max([len(h)] + [len(r[i]) for r in cells]) for i, h in enumerate(headers)]
    line = "  ".join(h.ljust(w) for h, w in zip(headers, widths, strict=True))
    click.echo(line.rstrip())
    click.echo("  ".join("-" * w for w in widths))
    for r in cells:
        click.echo("  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip())


def _common(fn: _F) -> _F:
    fn = click.option(
        "--store",
        "stores",
        multiple=True,
        metavar="NAME",
        help="a store (repeatable; default: every configured store)",
    )(fn)
    fn = click.option(
        "--json", "as_json", is_flag=True, default=False, help="machine-readable output"
    )(fn)
    return fn


def _state(ctx: click.Context, as_json: bool) -> _State:
    state: _State = ctx.ensure_object(_State)
    state.as_json = state.as_json or as_json
    ctx.call_on_close(state.close)
    return state


# -- the commands --------------------------------------------------------------


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.option(
    "--url",
    envvar=URL_ENV,
    metavar="URL",
    help=f"SQLAlchemy database URL (or the env var {URL_ENV})",
)
@click.option(
    "--config",
    "config_file",
    type=click.Path(dir_okay=False),
    metavar="FILE",
    help="a JSON or TOML settings file (djb.config.load)",
)
@click.option(
    "--schema",
    default=None,
    help="the schema (database) to work on; default: the connection's default schema",
)
@click.option(
    "--store",
    "stores",
    multiple=True,
    metavar="NAME",
    help="a store (repeatable; default: every configured store); also after the command",
)
@click.option("--json", "as_json", is_flag=True, default=False, help="machine-readable output")
@click.option(
    "--progress/--no-progress",
    default=None,
    help="progress bars on stderr (default: when stderr is a terminal)",
)
@click.version_option(__version__, prog_name="sa-djblob")
@click.pass_context
def cli(
    ctx: click.Context,
    url: str | None,
    config_file: str | None,
    schema: str | None,
    stores: tuple[str, ...],
    as_json: bool,
    progress: bool | None,
) -> None:
    """Inspect and maintain the external stores of sa_djblob (and DataJoint) schemas."""
    ctx.obj = _State(url, schema, as_json, progress, stores)
    if config_file:
        try:
            config.load(config_file)
        except SaDjblobError as exc:
            _fail(str(exc))


@cli.command()
@_common
@click.option(
    "--settings",
    "show_settings",
    is_flag=True,
    help="list the settings each store kind (protocol) accepts instead",
)
@click.pass_context
def stores(ctx: click.Context, stores: tuple[str, ...], as_json: bool, show_settings: bool) -> None:
    """The configured stores (keys masked)."""
    state = _state(ctx, as_json)
    if show_settings:
        _store_settings(state)
        return
    chosen = {*state.stores, *stores}
    unknown = sorted(chosen - set(config["stores"]))
    if unknown:
        known = ", ".join(sorted(config["stores"])) or "none"
        _fail(f"store {unknown[0]!r} is not configured (configured: {known})")
    specs = []
    rows = []
    for name, spec in sorted(config["stores"].items()):
        if chosen and name not in chosen:
            continue
        cls = store_class(spec["protocol"])
        specs.append({"name": name, **cls.describe(spec)})
        rows.append([name, spec["protocol"], cls.display_location(spec), spec.get("hash", "md5")])

    def human() -> None:
        if state.url:
            click.echo(f"database: {state.masked_url()}")
        if not specs:
            click.echo("no stores configured")
            return
        _table(["store", "protocol", "location", "hash"], rows)

    _emit(state, {"url": state.masked_url(), "stores": specs}, human)


def _store_settings(state: _State) -> None:
    """Each registered store kind's settings, from its ``Setting`` declarations."""
    kinds: dict[str, dict[str, dict[str, Any]]] = {}
    rows = []
    for protocol in registered_protocols():
        kind = kinds[protocol] = {}
        for key, setting in store_class(protocol).settings.items():
            about = {"doc": setting.doc, "required": setting.required, "secret": setting.secret}
            if setting.default is not NO_DEFAULT:
                about["default"] = setting.default
            kind[key] = about
            given = "required" if setting.required else repr(about.get("default"))
            rows.append(
                [protocol, key, given, setting.doc + (" (secret)" if setting.secret else "")]
            )

    def human() -> None:
        _table(["protocol", "setting", "default", "meaning"], rows)

    _emit(state, {"kinds": kinds}, human)


@cli.command()
@_common
@click.pass_context
def paths(ctx: click.Context, stores: tuple[str, ...], as_json: bool) -> None:
    """Every externals entry and its object path (a filepath's: <root>/<relative path>)."""
    state = _state(ctx, as_json)
    with _errors(state):
        found = {t.store_name: t.paths() for t in state.tables(stores)}

    def human() -> None:
        _table(
            ["store", "hash", "path"],
            [[s, str(h), str(p)] for s, items in found.items() for h, p in items],
        )
        click.echo(f"{sum(len(v) for v in found.values())} entries")

    _emit(
        state,
        {
            "stores": {
                s: [{"hash": str(h), "path": str(p)} for h, p in items]
                for s, items in found.items()
            }
        },
        human,
    )


def _hash_list(ctx: click.Context, stores: tuple[str, ...], as_json: bool, which: str) -> None:
    state = _state(ctx, as_json)
    with _errors(state):
        found = {
            t.store_name: (t.used() if which == "used" else t.unused())
            for t in state.tables(stores)
        }

    def human() -> None:
        _table(["store", "hash"], [[s, str(h)] for s, hs in found.items() for h in hs])
        click.echo(f"{sum(len(v) for v in found.values())} {which} entries")

    _emit(state, {"stores": {s: [str(h) for h in hs] for s, hs in found.items()}}, human)


@cli.command()
@_common
@click.pass_context
def used(ctx: click.Context, stores: tuple[str, ...], as_json: bool) -> None:
    """Entries that some row references."""
    _hash_list(ctx, stores, as_json, "used")


@cli.command()
@_common
@click.pass_context
def unused(ctx: click.Context, stores: tuple[str, ...], as_json: bool) -> None:
    """Entries that no row references (what a sweep removes)."""
    _hash_list(ctx, stores, as_json, "unused")


def _sweep_rows(reports: dict[str, SweepReport]) -> list[list[Any]]:
    return [
        [
            s,
            r.rows_deleted,
            r.payloads_deleted,
            r.orphans_deleted,
            r.orphans_kept,
            _size(r.bytes_freed),
            r.skipped_referenced,
            len(r.errors),
        ]
        for s, r in reports.items()
    ]


def _size(n: int) -> str:
    size = float(n)
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if size < 1024 or unit == "TiB":
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1024
    return f"{n} B"  # pragma: no cover


@cli.command()
@_common
@click.option("--dry-run", is_flag=True, help="report what would be deleted, delete nothing")
@click.option(
    "--grace",
    callback=_duration,
    default="1h",
    show_default=True,
    help="keep orphan payloads younger than this (90s, 30m, 1h, 2d, 0)",
)
@click.option(
    "--batch",
    type=click.IntRange(1, 100_000),
    default=1000,
    show_default=True,
    help="entries per transaction",
)
@click.option("--yes", "-y", is_flag=True, help="do not ask for confirmation")
@click.pass_context
def sweep(
    ctx: click.Context,
    stores: tuple[str, ...],
    as_json: bool,
    dry_run: bool,
    grace: datetime.timedelta,
    batch: int,
    yes: bool,
) -> None:
    """Delete unused entries and their payloads, and orphan payloads older than --grace."""
    state = _state(ctx, as_json)
    reports: dict[str, SweepReport] = {}
    declined = False
    headers = [
        "store",
        "rows",
        "payloads",
        "orphans",
        "orphans kept",
        "freed",
        "skipped (referenced)",
        "errors",
    ]
    with _errors(state):
        tables = state.tables(stores)
        if not dry_run and not yes:
            preview = {
                t.store_name: t.sweep(
                    dry_run=True, grace=grace, progress=state.progress, batch=batch
                )
                for t in tables
            }
            click.echo("would delete:", err=True)
            _table_err(headers, _sweep_rows(preview))
            if not any(r.rows_deleted or r.orphans_deleted for r in preview.values()):
                dry_run = True  # nothing to ask about
            else:
                try:
                    go = click.confirm(
                        "delete these entries and payloads?", default=False, err=True
                    )
                except click.Abort:
                    _fail("no answer: nothing deleted (use --yes in scripts)")
                if not go:
                    reports = preview
                    dry_run = declined = True
        if not reports:
            for t in tables:
                reports[t.store_name] = t.sweep(
                    dry_run=dry_run, grace=grace, progress=state.progress, batch=batch
                )

    def human() -> None:
        if declined:  # the table is above, with the question
            click.echo("nothing deleted")
            return
        click.echo("dry run: nothing deleted" if dry_run else "swept:")
        _table(headers, _sweep_rows(reports))
        for s, r in reports.items():
            for e in r.errors:
                click.echo(f"{s}: {state.scrub(e)}")

    data = {
        "dry_run": dry_run,
        "stores": {
            s: {**dataclasses.asdict(r), "errors": [state.scrub(e) for e in r.errors], "ok": r.ok}
            for s, r in reports.items()
        },
    }
    _emit(state, data, human)
    if not all(r.ok for r in reports.values()):
        sys.exit(PROBLEMS)


def _table_err(headers: Sequence[str], rows: Sequence[Sequence[Any]]) -> None:
    # the preview goes to stderr, so that stdout holds only the result
    import io
    from contextlib import redirect_stdout

    buf = io.StringIO()
    with redirect_stdout(buf):
        _table(headers, rows)
    click.echo(buf.getvalue(), err=True, nl=False)


@cli.command()
@_common
@click.option(
    "--all",
    "include_unused",
    is_flag=True,
    help="check unused entries too, not only referenced ones",
)
@click.pass_context
def verify(
    ctx: click.Context, stores: tuple[str, ...], as_json: bool, include_unused: bool
) -> None:
    """Check that every referenced payload is in its store and matches its hash."""
    state = _state(ctx, as_json)
    reports: dict[str, VerifyReport] = {}
    with _errors(state):
        for t in state.tables(stores):
            reports[t.store_name] = t.verify(progress=state.progress, include_unused=include_unused)

    def human() -> None:
        _table(
            ["store", "checked", "missing", "corrupt", "errors"],
            [
                [s, r.checked, len(r.missing), len(r.corrupt), len(r.errors)]
                for s, r in reports.items()
            ],
        )
        for s, r in reports.items():
            for h, p in r.missing:
                click.echo(f"{s}: missing {h} {p}")
            for h, p in r.corrupt:
                click.echo(f"{s}: corrupt {h} {p}")
            for e in r.errors:
                click.echo(f"{s}: error {state.scrub(e)}")

    def pairs(items: list[Any]) -> list[dict[str, str]]:
        return [{"hash": str(h), "path": str(p)} for h, p in items]

    data = {
        "stores": {
            s: {
                "checked": r.checked,
                "missing": pairs(r.missing),
                "corrupt": pairs(r.corrupt),
                "errors": [state.scrub(e) for e in r.errors],
                "ok": r.ok,
            }
            for s, r in reports.items()
        }
    }
    _emit(state, data, human)
    if not all(r.ok for r in reports.values()):
        sys.exit(PROBLEMS)


@cli.command("dj2-convert")
@click.option("--json", "as_json", is_flag=True, default=False, help="machine-readable output")
@click.option("--dry-run", is_flag=True, help="report what would change, change nothing")
@click.option("--revert", is_flag=True, help="undo a conversion (while its 0.14 columns are kept)")
@click.option(
    "--finalize",
    is_flag=True,
    help="drop the kept 0.14 columns (no revert after it; a sweep then frees the old objects)",
)
@click.option(
    "--hash-prefix",
    default="_hash",
    show_default=True,
    help="the stores' hash_prefix in DataJoint 2.x",
)
@click.option("--yes", "-y", is_flag=True, help="do not ask for confirmation")
@click.pass_context
def dj2_convert(
    ctx: click.Context,
    as_json: bool,
    dry_run: bool,
    revert: bool,
    finalize: bool,
    hash_prefix: str,
    yes: bool,
) -> None:
    """Convert the schema's DataJoint 0.14 columns to DataJoint 2.x's layout (or --revert).

    Stored blobs and attachments are copied, verified, to <location>/<hash-prefix>/<schema>/
    and their columns become 2.x pointers; the 0.14 columns and objects are kept, so
    --revert undoes it, until --finalize drops them. Resumable: run it again after an
    interruption. Stop the schema's writers first.
    """
    from . import dj2convert as conv

    state = _state(ctx, as_json)
    if revert and finalize:
        _fail("--revert and --finalize undo each other: give one")

    def go(dry: bool) -> conv.ConvertReport:
        if revert:
            return conv.revert(state.engine(), state.schema, dry_run=dry)
        if finalize:
            return conv.finalize(state.engine(), state.schema, dry_run=dry)
        return conv.convert(
            state.engine(),
            state.schema,
            dry_run=dry,
            progress=state.progress,
            hash_prefix=hash_prefix,
        )

    headers = ["table", "column", "kind", "action", "rows", "objects", "size"]

    def rows(r: conv.ConvertReport) -> list[list[Any]]:
        return [
            [c.table, c.column, c.kind, c.action, c.rows, c.objects, _size(c.bytes)]
            for c in r.columns
        ]

    with _errors(state):
        state.check_schema()
        if not dry_run and not yes:
            preview = go(True)
            _table_err(headers, rows(preview))
            what = f"{'revert' if revert else 'finalize' if finalize else 'convert'} these columns?"
            try:
                confirmed = click.confirm(what, default=False, err=True)
            except click.Abort:
                _fail("no answer: nothing changed (use --yes in scripts)")
            if not confirmed:
                click.echo("nothing changed")
                return
        report = go(dry_run)

    def human() -> None:
        if dry_run:
            click.echo("dry run: nothing changed")
        _table(headers, rows(report))
        if not (revert or finalize or dry_run):
            click.echo(
                f"{report.objects_copied} objects copied ({_size(report.bytes_copied)}),"
                f" {report.objects_present} already in place, {report.rows_updated} rows"
                " updated"
            )
        for e in report.errors:
            click.echo(f"error: {state.scrub(e)}")

    data = {
        **dataclasses.asdict(report),
        "errors": [state.scrub(e) for e in report.errors],
        "ok": report.ok,
    }
    _emit(state, data, human)
    if not report.ok:
        sys.exit(PROBLEMS)


def _load_settings(state: _State, path: str, store: str) -> dict[str, Any]:
    """The new settings of *store* from a JSON or TOML file: the settings themselves, or a
    configuration file whose ``stores`` names the store. Validated; its secrets are scrubbed
    from every message from here on."""
    p = Path(path)
    try:
        raw = p.read_bytes()
        if p.suffix.lower() == ".toml":
            import tomllib

            data = tomllib.loads(raw.decode("utf-8"))
        else:
            data = json.loads(raw)
    except OSError as exc:
        _fail(f"cannot read {p}: {exc.strerror}")
    except ValueError as exc:
        _fail(f"{p} is not valid {p.suffix[1:] or 'JSON'}: {exc}")
    if isinstance(data, dict) and isinstance(data.get("stores"), dict):
        if store not in data["stores"]:
            named = ", ".join(sorted(data["stores"])) or "none"
            _fail(f"{p} has no settings for store {store!r} (it names: {named})")
        data = data["stores"][store]
    if not isinstance(data, dict):
        _fail(f"{p} must hold a table of store settings")
    data = {k: v for k, v in data.items() if k != "$schema"}
    with suppress(SaDjblobError):  # validated below, with the message that says what is wrong
        state.extra_secrets.extend(store_class(data.get("protocol")).secret_values(data))
    try:
        return validate_store_spec(store, data)
    except SaDjblobError as exc:
        _fail(f"{p}: {state.scrub(str(exc))}")


def _copy_rows(reports: dict[str, CopyReport]) -> list[list[Any]]:
    return [
        [
            s,
            r.checked,
            r.copied,
            _size(r.bytes_copied),
            r.skipped,
            _size(r.bytes_skipped),
            r.vanished,
            len(r.failed) + len(r.errors),
        ]
        for s, r in reports.items()
    ]


@cli.command("copy-store")
@_common
@click.option(
    "--to",
    "target",
    required=True,
    metavar="FILE",
    help="a JSON or TOML file with the store's new settings (or a config file naming it)",
)
@click.option("--dry-run", is_flag=True, help="report what would be copied, copy nothing")
@click.option(
    "--verify-existing",
    is_flag=True,
    help="hash the objects already at the new location too (default: their size is checked)",
)
@click.option(
    "--used-only",
    is_flag=True,
    help="copy only the payloads some row references (default: every entry's)",
)
@click.option(
    "--batch",
    type=click.IntRange(1, 100_000),
    default=1000,
    show_default=True,
    help="entries per batch",
)
@click.pass_context
def copy_store(
    ctx: click.Context,
    stores: tuple[str, ...],
    as_json: bool,
    target: str,
    dry_run: bool,
    verify_existing: bool,
    used_only: bool,
    batch: int,
) -> None:
    """Copy every payload of a store to its new location (--to FILE), verified by hash.

    A rerun copies only what is missing or wrong there. Then: stop the writers, run it once
    more (the catch-up pass), point the configuration at the new location, and run
    `verify` before the old location is retired.
    """
    state = _state(ctx, as_json)
    chosen = list(dict.fromkeys((*state.stores, *stores)))
    if len(chosen) != 1:
        _fail("copy-store relocates one store: give exactly one --store NAME")
    (name,) = chosen
    spec = _load_settings(state, target, name)
    where = store_class(spec["protocol"]).display_location(spec)
    with _errors(state):
        (table,) = state.tables([name])
        report = table.copy_to(
            spec,
            dry_run=dry_run,
            progress=state.progress,
            batch=batch,
            verify_existing=verify_existing,
            include_unused=not used_only,
        )
    reports = {name: report}
    headers = [
        "store",
        "checked",
        "copied",
        "copied size",
        "skipped",
        "skipped size",
        "vanished",
        "failed",
    ]

    def human() -> None:
        click.echo(
            f"dry run: nothing copied; would copy to {where}:" if dry_run else f"copied to {where}:"
        )
        _table(headers, _copy_rows(reports))
        for h, p, why in report.failed:
            click.echo(f"{name}: failed {h} {p}: {state.scrub(why)}")
        for e in report.errors:
            click.echo(f"{name}: error {state.scrub(e)}")

    data = {
        "dry_run": dry_run,
        "to": where,
        "stores": {
            s: {
                **{k: v for k, v in dataclasses.asdict(r).items() if k not in ("failed", "errors")},
                "failed": [
                    {"hash": str(h), "path": str(p), "reason": state.scrub(why)}
                    for h, p, why in r.failed
                ],
                "errors": [state.scrub(e) for e in r.errors],
                "ok": r.ok,
            }
            for s, r in reports.items()
        },
    }
    _emit(state, data, human)
    if not report.ok:
        sys.exit(PROBLEMS)


def _kind_of(state: _State, table: str, column: str) -> str | None:
    """``blob`` or ``attach`` from the column's DataJoint comment; None if it has none."""
    cols = sa.inspect(state.engine()).get_columns(table, schema=state.schema)
    found = [c for c in cols if c["name"] == column]
    if not found:
        _fail(f"table {table!r} has no column {column!r}")
    m = re.match(r":(blob|attach)[@:]", str(found[0].get("comment") or ""))
    return m.group(1) if m else None


@cli.command()
@click.argument("target", metavar="TABLE.COLUMN")
@click.option("--to", "to", required=True, metavar="STORE|row", help="a store name, or 'row'")
@click.option(
    "--kind",
    type=click.Choice(["blob", "attach"]),
    default=None,
    help="the column's kind when its comment does not say (SQLite, into or out of the row)",
)
@click.option("--dry-run", is_flag=True, help="count the values and bytes to copy, change nothing")
@click.option(
    "--batch",
    type=click.IntRange(1, 100_000),
    default=500,
    show_default=True,
    help="values per transaction",
)
@click.option("--yes", "-y", is_flag=True, help="do not ask for confirmation")
@click.option("--json", "as_json", is_flag=True, default=False, help="machine-readable output")
@click.pass_context
def move(
    ctx: click.Context,
    target: str,
    to: str,
    kind: str | None,
    dry_run: bool,
    batch: int,
    yes: bool,
    as_json: bool,
) -> None:
    """Move a Blob or Attach column's values to another store (or 'row'), then switch it."""
    from ._externals.move import MoveReport
    from ._externals.move import move as move_values
    from .types import Attach, Blob

    state = _state(ctx, as_json)
    table, sep, column = target.rpartition(".")
    if not sep or not table or not column:
        _fail(f"give the column as TABLE.COLUMN, got {target!r}")
    to_store = None if to == "row" else to
    with _errors(state):
        if to_store is not None and to_store not in config["stores"]:
            known = ", ".join(sorted(config["stores"])) or "none"
            _fail(f"store {to_store!r} is not configured (configured: {known})")
        state.check_schema()
        found = _kind_of(state, table, column)
        if kind is None:
            kind = found
        type_ = (Attach if kind == "attach" else Blob)(foreign_key=False)
        col = sa.Table(table, sa.MetaData(), sa.Column(column, type_), schema=state.schema).c[
            column
        ]
        engine = state.engine()
        preview = move_values(engine, col, to_store, dry_run=True, batch=batch)
        if kind is None and None in (preview.source, to_store) and not preview.already:
            _fail(
                f"cannot tell whether {target} holds blobs or attachments (no DataJoint"
                " comment): give --kind blob or --kind attach"
            )
        report: MoveReport = preview
        if not dry_run and not preview.already:
            if not yes:
                click.echo(str(preview), err=True)
                try:
                    go = click.confirm("move these values?", default=False, err=True)
                except click.Abort:
                    _fail("no answer: nothing moved (use --yes in scripts)")
                if not go:
                    _fail("nothing moved", PROBLEMS)
            report = move_values(engine, col, to_store, batch=batch, progress=state.progress)

    def human() -> None:
        click.echo(str(report))

    _emit(state, {**dataclasses.asdict(report), "ok": report.ok}, human)
    if not report.ok:
        sys.exit(PROBLEMS)


def main(argv: Sequence[str] | None = None) -> None:
    """The console script ``sa-djblob``."""
    cli.main(args=list(argv) if argv is not None else None, prog_name="sa-djblob")


if __name__ == "__main__":  # pragma: no cover
    main()
