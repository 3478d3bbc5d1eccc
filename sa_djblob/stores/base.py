"""The small abstract Store every backend implements, its settings and its registry.

Paths are the full object paths of DataJoint's layout (``layout.object_path``):
for a file store, file system paths; for S3, keys inside the bucket (a leading
``/`` is ignored). Deleting tolerates already-missing objects.

A store kind is one module: a ``Store`` subclass with a ``protocol`` and its
``settings`` (a mapping of :class:`Setting`). Defining the class registers it
(``store_class(protocol)``); ``djb.config["stores"]`` validation, secret redaction and
the command line all ask the class. Kinds in other distributions register through
the entry-point group ``sa_djblob.stores`` (``protocol = "module:Class"``).
"""

from __future__ import annotations

import abc
import builtins
import contextlib
import copy
import datetime
import io
import math
import os
import secrets
import threading
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any, BinaryIO, ClassVar, Self
from urllib.parse import unquote_plus, urlsplit, urlunsplit

from .._exceptions import ConfigError, IntegrityError, StoreError
from .._layout import is_store_name, register_root_rule

__all__ = [
    "COPY_CHUNK",
    "ENTRY_POINT_GROUP",
    "ObjectInfo",
    "Setting",
    "Store",
    "is_temp_name",
    "mask_url",
    "redact_store_spec",
    "registered_protocols",
    "store_class",
    "validate_store_spec",
    "temp_name",
]

COPY_CHUNK = 1 << 20
"""The chunk size of streaming copies (bytes)."""

ENTRY_POINT_GROUP = "sa_djblob.stores"
"""Entry points of store kinds from other distributions: ``protocol = "module:Class"``."""

MASK = "***"


#: the longest validity of a presigned URL: S3's limit (SigV4), seven days
MAX_URL_EXPIRY = 7 * 24 * 3600


def object_key(path: PurePosixPath | str) -> str:
    """The key of *path* in a flat key space: normalized, without a leading ``/``
    (``""`` for the top)."""
    text = str(PurePosixPath(path))
    return "" if text == "." else text.lstrip("/")


def temp_name(name: str) -> str:
    """A hidden temporary name next to *name*: ``.<name>.tmp-<random>`` (listings skip it).

    Only the first 40 characters of *name* are used, so the temporary name is never
    longer than the longest name a store accepts (``<hash>.<attachment name>``).
    """
    return f".{name[:40]}.tmp-{secrets.token_hex(6)}"


def is_temp_name(name: str) -> bool:
    """Whether *name* was made by :func:`temp_name`."""
    return name.startswith(".") and ".tmp-" in name


@dataclass(frozen=True)
class ObjectInfo:
    """One entry of a store listing."""

    path: PurePosixPath
    size: int
    modified: datetime.datetime  # timezone-aware (UTC)


# -- settings ---------------------------------------------------------------------

#: the ``default`` of a setting that has none
NO_DEFAULT: Any = object()


@dataclass(frozen=True)
class Setting:
    """One key of a store's settings.

    *check* returns the normalized value or raises ``ValueError`` saying what the value
    must be ("must be a string"); the message becomes ``store 'x': 'key' must be ...``.
    A *default* is filled in when the key is absent (``None`` defaults are left out);
    a *secret* value is masked in reprs and command-line output.

    *harmless* makes a setting that holds options (a dict, nested) or a URL opaque: every
    option value and every URL query value (and the URL's password) is masked in reprs,
    messages and command-line output, except the values of the option names and query
    parameters it lists. A store kind declares there what it knows to be harmless; an
    option it has never heard of (a passphrase, a header list) stays hidden.
    """

    check: Callable[[Any], Any]
    default: Any = NO_DEFAULT
    required: bool = False
    secret: bool = False
    doc: str = ""
    harmless: frozenset[str] | None = None


# -- masking ------------------------------------------------------------------------

#: option and query values shorter than this are masked but not scrubbed from messages:
#: flags and small numbers are no credentials, and replacing them would garble the text
_SCRUB_MIN = 4


def _mask_query_item(item: str, harmless: frozenset[str]) -> str:
    name, eq, value = item.partition("=")
    if not item or unquote_plus(name) in harmless or (eq and not value):
        return item
    return f"{name}={MASK}" if eq else MASK


def mask_url(url: str, harmless: frozenset[str] = frozenset()) -> str:
    """*url* with its password, its fragment and every query value whose parameter is
    not in *harmless* replaced by ``***`` (all of it, if it cannot be parsed); each part
    of a chained fsspec URL (``simplecache::s3://...``) alike."""
    return "::".join(_mask_one_url(part, harmless) for part in url.split("::"))


def _mask_one_url(url: str, harmless: frozenset[str]) -> str:
    try:
        parts = urlsplit(url)
    except ValueError:
        return MASK
    userinfo, at, hostport = parts.netloc.rpartition("@")
    if not ((at and ":" in userinfo) or parts.query or parts.fragment):
        return url  # nothing to hide: as written
    netloc = f"{userinfo.partition(':')[0]}:{MASK}@{hostport}" if ":" in userinfo else parts.netloc
    query = "&".join(_mask_query_item(i, harmless) for i in parts.query.split("&"))
    fragment = MASK if parts.fragment else ""
    return urlunsplit(parts._replace(netloc=netloc, query=query, fragment=fragment))


def _url_secrets(url: str, harmless: frozenset[str]) -> list[str]:
    """The passwords, fragments and non-harmless query values of *url* (each part of a
    chained URL), as written and decoded."""
    found: list[str] = []
    for part in url.split("::"):
        try:
            parts = urlsplit(part)
        except ValueError:
            found.append(part)
            continue
        userinfo, at, _ = parts.netloc.rpartition("@")
        if at and ":" in userinfo:
            found.append(userinfo.partition(":")[2])
        for item in parts.query.split("&"):
            name, eq, value = item.partition("=")
            if unquote_plus(name) not in harmless:
                found.append(value if eq else name)
        found.append(parts.fragment)
    return [v for raw in found for v in {raw, unquote_plus(raw)} if v]


def _mask_options(options: Mapping[Any, Any], harmless: frozenset[str]) -> dict[Any, Any]:
    out: dict[Any, Any] = {}
    for k, v in options.items():
        if isinstance(v, Mapping):
            out[k] = _mask_options(v, harmless)
        elif v is None or str(k) in harmless:
            looks_like_url = isinstance(v, str) and ("://" in v or "?" in v)
            out[k] = mask_url(v, harmless) if looks_like_url else v
        else:
            out[k] = MASK
    return out


def _strings(value: Any) -> list[str]:
    """Every string (and number) inside *value*."""
    if isinstance(value, Mapping):
        return [s for v in value.values() for s in _strings(v)]
    if isinstance(value, list | tuple | set | frozenset):
        return [s for v in value for s in _strings(v)]
    if isinstance(value, bytes):
        return [value.decode("utf-8", "replace")]
    if value is None or isinstance(value, bool):
        return []
    return [str(value)]


def _option_secrets(options: Mapping[Any, Any], harmless: frozenset[str]) -> list[str]:
    found: list[str] = []
    for k, v in options.items():
        if isinstance(v, Mapping):
            found += _option_secrets(v, harmless)
        elif str(k) in harmless:
            if isinstance(v, str):
                found += _url_secrets(v, harmless)
        else:
            found += _strings(v)
    return found


def _mask_opaque(value: Any, harmless: frozenset[str]) -> Any:
    """The value of a setting with *harmless* names, fit to print (see :class:`Setting`)."""
    if isinstance(value, Mapping):
        return _mask_options(value, harmless)
    if isinstance(value, str):
        return mask_url(value, harmless)
    return None if value is None else MASK


def _opaque_secrets(value: Any, harmless: frozenset[str]) -> list[str]:
    """The strings ``_mask_opaque`` hides, to scrub from messages."""
    if isinstance(value, Mapping):
        found = _option_secrets(value, harmless)
    elif isinstance(value, str):
        found = _url_secrets(value, harmless)
    else:
        found = _strings(value)
    return [s for s in found if len(s) >= _SCRUB_MIN]


def check_string(value: Any) -> str:
    """A string."""
    if not isinstance(value, str):
        raise ValueError("must be a string")
    return value


def check_path(value: Any) -> str:
    """A path: a string or ``os.PathLike``; normalized to ``str``."""
    if not isinstance(value, str | os.PathLike):
        raise ValueError(f"must be a path string, got {type(value).__name__}")
    return os.fspath(value)


def check_optional_path(value: Any) -> str | None:
    """A path, or None."""
    return None if value is None else check_path(value)


def check_bool(value: Any) -> bool:
    """True or false (not 0/1, not a string)."""
    if not isinstance(value, bool):
        raise ValueError("must be true or false")
    return value


def check_positive_number(value: Any) -> float:
    """A finite number of seconds > 0."""
    if (
        isinstance(value, bool)
        or not isinstance(value, int | float)
        or not math.isfinite(value)
        or value <= 0
    ):
        raise ValueError(f"must be a positive number of seconds, got {value!r}")
    return float(value)


def check_count(value: Any) -> int:
    """An integer >= 1."""
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"must be an integer >= 1, got {value!r}")
    return value


def check_hash(value: Any) -> str:
    """``md5`` (DataJoint's) or ``sha256``."""
    if value not in ("md5", "sha256"):
        raise ValueError(f"must be 'md5' or 'sha256', got {value!r}")
    return str(value)


_HASH_DIGITS = 32


def check_subfolding(value: Any) -> tuple[int, ...]:
    """Folder name lengths taken from the hash's 32 hex digits, e.g. ``(2, 2)``.

    ``None`` and ``()`` mean no subfolders, as in DataJoint 0.14 (``subfold`` returns no
    folders for empty folds): payloads sit directly in the schema's folder.
    """
    if value is None:
        return ()
    if isinstance(value, str | bytes) or not isinstance(value, list | tuple):
        raise ValueError(f"must be a list of folder name lengths such as [2, 2], got {value!r}")
    for n in value:
        if isinstance(n, bool) or not isinstance(n, int) or n <= 0:
            raise ValueError(f"must hold positive integers such as [2, 2], got {value!r}")
    if sum(value) > _HASH_DIGITS:
        raise ValueError(
            f"takes {sum(value)} characters of the hash in total, but the hash has only"
            f" {_HASH_DIGITS} hex digits: use smaller folds such as [2, 2], got {list(value)}"
        )
    return tuple(value)


def check_mapping(value: Any) -> dict[str, Any]:
    """A dict with string keys."""
    if not isinstance(value, Mapping) or not all(isinstance(k, str) for k in value):
        raise ValueError(f"must be a dict of names to values, got {type(value).__name__}")
    return dict(value)


COMMON_SETTINGS: Mapping[str, Setting] = {
    "protocol": Setting(check_string, required=True, doc="the store kind"),
    "location": Setting(check_path, default="", doc="folder or key prefix of the payloads"),
    "hash": Setting(check_hash, default="md5", doc="content hash: md5 (DataJoint) or sha256"),
    "subfolding": Setting(check_subfolding, default=(2, 2), doc="folder levels from the hash"),
    "stage": Setting(check_optional_path, default=None, doc="DataJoint's local stage folder"),
}
"""The keys every store accepts."""


# -- the registry -------------------------------------------------------------------

_registry: dict[str, type[Store]] = {}
_registry_lock = threading.Lock()
_entry_points_loaded = False


def _load_entry_points() -> None:
    global _entry_points_loaded
    if _entry_points_loaded:
        return
    _entry_points_loaded = True
    from importlib.metadata import entry_points

    for ep in entry_points(group=ENTRY_POINT_GROUP):
        if ep.name in _registry:
            continue
        try:
            cls = ep.load()
        except Exception as exc:
            raise ConfigError(
                f"store kind {ep.name!r} (entry point {ep.value!r}) cannot be loaded:"
                f" {type(exc).__name__}: {exc}"
            ) from None
        if not (isinstance(cls, type) and issubclass(cls, Store)):
            raise ConfigError(
                f"entry point {ep.name!r} = {ep.value!r} of group {ENTRY_POINT_GROUP!r}"
                " is not a sa_djblob.stores.Store subclass"
            )


def registered_protocols() -> list[str]:
    """The protocols of every registered store kind, sorted."""
    _load_entry_points()
    with _registry_lock:
        return sorted(_registry)


def store_class(protocol: object) -> type[Store]:
    """The Store subclass of *protocol*; ``ConfigError`` naming the known ones if none."""
    cls = _registry.get(protocol) if isinstance(protocol, str) else None
    if cls is None:
        _load_entry_points()
        cls = _registry.get(protocol) if isinstance(protocol, str) else None
    if cls is None:
        known = ", ".join(repr(p) for p in registered_protocols())
        raise ConfigError(f"unknown protocol {protocol!r} (registered: {known})")
    return cls


def validate_store_spec(name: str, spec: Any) -> dict[str, Any]:
    """Check one store's settings and return a normalized copy: the store class registered
    for ``spec["protocol"]`` declares and checks its keys (``Store.validate_settings``)."""
    if not is_store_name(name):
        raise ConfigError(
            f"store name {name!r} must start with a letter or _ and hold only letters, digits,"
            " _ and - (as DataJoint's store names)"
        )
    if not isinstance(spec, Mapping):
        raise ConfigError(f"store {name!r}: settings must be a dict, got {type(spec).__name__}")
    if "protocol" not in spec:
        raise ConfigError(f"store {name!r}: missing key 'protocol' (the store kind)")
    try:
        cls = store_class(spec["protocol"])
    except ConfigError as exc:
        raise ConfigError(f"store {name!r}: {exc}") from None
    return cls.validate_settings(name, spec)


def redact_store_spec(spec: Mapping[str, Any]) -> dict[str, Any]:
    """*spec* (validated) with its secrets masked, as its store class declares them."""
    return store_class(spec["protocol"]).redact(spec)


# -- the store ------------------------------------------------------------------------


class Store(abc.ABC):
    """A place that keeps payloads by path.

    Subclasses set ``protocol`` (which registers them) and ``settings`` (usually
    ``{**COMMON_SETTINGS, ...}``), and read their own keys in :meth:`_setup`.
    """

    protocol: ClassVar[str] = ""
    settings: ClassVar[Mapping[str, Setting]] = COMMON_SETTINGS
    #: the longest object file name the store can hold (bytes), if it has a limit
    max_object_name: ClassVar[int | None] = None
    #: whether object paths are paths of the local file system (the user's files can be
    #: the objects themselves)
    local_paths: ClassVar[bool] = False

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        protocol = cls.__dict__.get("protocol")
        if protocol and not getattr(cls, "__abstractmethods__", None):
            with _registry_lock:
                _registry[protocol] = cls
            register_root_rule(protocol, cls.root_of)

    def __init__(self, name: str, **settings: Any) -> None:
        spec = self.validate_settings(name, {"protocol": self.protocol, **settings})
        self.name = name
        self.location: str = spec["location"]
        self.hash: str = spec["hash"]
        self.subfolding: tuple[int, ...] = spec["subfolding"]
        self.stage: str | None = spec.get("stage")
        self._setup(spec)

    def _setup(self, spec: dict[str, Any]) -> None:  # noqa: B027 - optional hook
        """Read the kind's own keys from the validated *spec* (secrets: keep them hidden)."""

    @classmethod
    def root_of(cls, location: str) -> PurePosixPath:
        """The folder (key prefix) that a ``location`` of this kind stands for.

        DataJoint 0.14's rule for ``file`` (and sa_djblob's ``memory``): a POSIX path, kept
        as is (a leading ``/`` stays; backslashes are ordinary characters; ``""`` and
        ``"."`` mean the current folder). Kinds with other rules override this.
        """
        return PurePosixPath(location)

    @property
    def root(self) -> PurePosixPath:
        """The folder (key prefix) under which the store keeps everything."""
        return self.root_of(self.location)

    # -- settings, as class methods (no store is built) ------------------------------
    @classmethod
    def validate_settings(cls, name: str, spec: Mapping[str, Any]) -> dict[str, Any]:
        """Check *spec* against ``settings`` and return a normalized copy (defaults filled)."""
        where = f"store {name!r}"
        unknown = sorted(set(spec) - set(cls.settings))
        if unknown:
            raise ConfigError(
                f"{where}: unknown key {unknown[0]!r} for protocol {cls.protocol!r}"
                f" (its keys: {', '.join(sorted(cls.settings))})"
            )
        out: dict[str, Any] = {}
        for key, setting in cls.settings.items():
            if key not in spec:
                if setting.required:
                    raise ConfigError(
                        f"{where}: missing key {key!r} (protocol {cls.protocol!r} needs"
                        f" {', '.join(repr(k) for k, s in cls.settings.items() if s.required)})"
                    )
                if setting.default is not NO_DEFAULT and setting.default is not None:
                    out[key] = copy.deepcopy(setting.default)
                continue
            try:
                out[key] = setting.check(spec[key])
            except ValueError as exc:
                detail = str(exc)
                if setting.secret or setting.harmless is not None:
                    detail = detail.replace(repr(spec[key]), MASK).replace(str(spec[key]), MASK)
                raise ConfigError(f"{where}: {key!r} {detail}") from None
        cls._check_together(name, out)
        return out

    @classmethod
    def _check_together(cls, name: str, spec: dict[str, Any]) -> None:
        """Checks across keys of a validated *spec* (raise ``ConfigError``); none here."""
        return

    @classmethod
    def is_secret(cls, key: str) -> bool:
        """Whether the value of setting *key* is a secret."""
        setting = cls.settings.get(key)
        return setting is not None and setting.secret

    @classmethod
    def redact(cls, spec: Mapping[str, Any]) -> dict[str, Any]:
        """A copy of *spec* fit to print: secret values replaced by ``***``, and in
        settings with *harmless* names every option and URL query value but those."""
        shown: dict[str, Any] = {}
        for k, v in spec.items():
            setting = cls.settings.get(k)
            if setting is not None and setting.secret and v:
                shown[k] = MASK
            elif setting is not None and setting.harmless is not None:
                shown[k] = _mask_opaque(v, setting.harmless)
            else:
                shown[k] = v
        return shown

    @classmethod
    def secret_values(cls, spec: Mapping[str, Any]) -> list[str]:
        """The secret strings of *spec*, to scrub from messages (longest first)."""
        found: set[str] = set()
        for k, v in spec.items():
            setting = cls.settings.get(k)
            if setting is not None and setting.secret and v:
                found.add(str(v))
            elif setting is not None and setting.harmless is not None:
                found.update(_opaque_secrets(v, setting.harmless))
        return sorted(found, key=lambda s: (-len(s), s))

    @classmethod
    def display_location(cls, spec: Mapping[str, Any]) -> str:
        """Where the payloads are, in one line for people (no secrets)."""
        return str(spec.get("location", ""))

    @classmethod
    def describe(cls, spec: Mapping[str, Any]) -> dict[str, Any]:
        """The settings for display: secrets masked, tuples as lists."""
        shown = cls.redact(spec)
        return {k: (list(v) if isinstance(v, tuple) else v) for k, v in shown.items()}

    @property
    def is_remote(self) -> bool:
        """Remote stores are read through the local cache."""
        return False

    @abc.abstractmethod
    def put(self, path: PurePosixPath, data: bytes | memoryview) -> None:
        """Store *data* at *path*, replacing what may be there, atomically."""

    def put_verified(self, path: PurePosixPath, data: bytes | memoryview) -> None:
        """:meth:`put`, then make sure the store holds exactly *data* (``IntegrityError`` if
        not). This default reads the payload back; a store whose server checks a digest of
        the body it receives (S3's ``Content-MD5``) overrides it."""
        self.put(path, data)
        if self.get(path) != bytes(data):
            raise IntegrityError(
                f"store {self.name!r} does not hold at {path} the bytes just written to it"
            )

    @abc.abstractmethod
    def put_file(self, path: PurePosixPath, src: BinaryIO) -> None:
        """Store the rest of the readable binary stream *src* at *path*, streaming."""

    @abc.abstractmethod
    def get(self, path: PurePosixPath) -> bytes:
        """The whole payload; raises ``MissingPayloadError`` if absent."""

    @abc.abstractmethod
    def open(self, path: PurePosixPath) -> BinaryIO:
        """A readable binary stream of the payload (close it); ``MissingPayloadError`` if absent."""

    def create(self, path: PurePosixPath, data: bytes) -> bool:
        """Store *data* at *path* only if nothing is there; return whether it did.

        Atomic where the store can do it (a file store, S3's conditional write); this
        default checks and then writes.
        """
        if self.exists(path):
            return False
        self.put(path, data)
        return True

    def size(self, path: PurePosixPath) -> int | None:
        """The size of the payload at *path*, None if absent, -1 if present but unknown."""
        return -1 if self.exists(path) else None

    @abc.abstractmethod
    def exists(self, path: PurePosixPath) -> bool:
        """Whether a payload is at *path*."""

    @abc.abstractmethod
    def remove(self, path: PurePosixPath) -> None:
        """Delete the payload at *path*; no error if it is already gone."""

    def durable_batch(self) -> contextlib.AbstractContextManager[None]:
        """A block whose writes are made durable together when it ends (group commit).

        The write path wraps the uploads of one statement in it. Inside the block, a
        store that makes each write durable (a file store with ``fsync``) may hold its
        writes back and, when the block ends without an error, make them all durable and
        put them in place at once: then, as without the block, every write is durable
        once the block has ended. A write is not readable at its path before that. If
        the block ends with an error, held-back writes are dropped. This default keeps
        each write as it is (already durable, or nothing to group).
        """
        return contextlib.nullcontext()

    def upload_file(self, path: PurePosixPath, src: Path) -> None:
        """Store the local file *src* at *path*, streaming."""
        with open(src, "rb") as f:
            self.put_file(path, f)

    def remove_many(self, paths: Iterable[PurePosixPath]) -> dict[PurePosixPath, str]:
        """Delete many payloads; return the ones that failed with the reason."""
        failed: dict[PurePosixPath, str] = {}
        for path in paths:
            try:
                self.remove(path)
            except Exception as exc:  # reported to the caller, who decides
                failed[path] = str(exc)
        return failed

    @abc.abstractmethod
    def list(self, prefix: PurePosixPath) -> Iterator[ObjectInfo]:
        """Every payload below *prefix* (a folder path), recursively, lazily.

        Stores list in ascending path order where they can (S3's order; a file store
        walks its folders sorted): the sweep then merges the listing against the
        externals table read in hash order. Any order is swept correctly.
        """

    def presigned_url(
        self, path: PurePosixPath, expires_in: int = 3600, *, filename: str | None = None
    ) -> str:
        """A URL that lets anyone read the payload at *path* for *expires_in* seconds.

        Stores that cannot make such URLs raise ``StoreError``.
        """
        raise StoreError(
            f"store {self.name!r} ({self.protocol}) cannot make URLs: read the payload"
            " through the store (get/open) or use a store that can (s3, or fsspec on a"
            " file system that signs URLs)"
        )

    def cleanup(self, prefix: PurePosixPath) -> None:  # noqa: B027 - optional hook
        """Remove empty folders below *prefix* (file stores); a no-op elsewhere."""

    def close(self) -> None:  # noqa: B027 - optional hook
        """Release connections and threads."""

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"{type(self).__name__}(name={self.name!r}, location={self.location!r})"

    # -- ranged reads ------------------------------------------------------------------
    #: reads of ranges closer than this are joined into one request (bytes)
    range_gap: ClassVar[int] = 4096
    #: at most this many requests per ranged read; closer ranges are joined beyond it
    max_range_requests: ClassVar[int] = 64

    def read_range(self, path: PurePosixPath, start: int, length: int) -> bytes:
        """*length* bytes of the payload at *path* from byte *start*; fewer if the payload
        ends sooner (none past its end). ``MissingPayloadError`` if absent."""
        return self.read_ranges(path, [(start, length)])[0]

    def read_ranges(
        self, path: PurePosixPath, ranges: Sequence[tuple[int, int]]
    ) -> builtins.list[bytes]:
        """The bytes of each ``(start, length)`` of the payload at *path*, as
        :meth:`read_range` gives them. This default opens the payload once and seeks (or
        reads past what it skips); stores override it with positioned or ranged reads."""
        out: builtins.list[bytes] = []
        with self.open(path) as f:
            pos = 0
            for start, length in ranges:
                try:
                    f.seek(start)
                    pos = start
                except (OSError, ValueError, io.UnsupportedOperation):
                    if start < pos:
                        raise StoreError(
                            f"store {self.name!r}: cannot seek back in {path}"
                        ) from None
                    while pos < start and (skipped := f.read(min(start - pos, COPY_CHUNK))):
                        pos += len(skipped)
                parts: list[bytes] = []
                left = length
                while left > 0 and (chunk := f.read(left)):
                    parts.append(chunk)
                    left -= len(chunk)
                data = b"".join(parts)
                pos += len(data)
                out.append(data)
        return out
