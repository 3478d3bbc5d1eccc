"""A store in an S3 bucket (DataJoint's ``protocol="s3"``), on boto3.

Settings are DataJoint 0.14's: ``endpoint`` ("host:port" or "http(s)://host:port"),
``bucket``, ``location`` (the key prefix), ``access_key``, ``secret_key``, ``secure``,
and optionally ``region``. Without keys, boto3's default credential chain applies. The
keys never appear in messages, logs or reprs.

Failing fast (for interactive apps): ``connect_timeout`` (default 3 s), ``read_timeout``
(default 5 s: the longest wait for the server's next bytes, not for a whole transfer) and
``max_attempts`` (default 2, botocore's standard retries with a backoff under 1 s between
the two). An endpoint that accepts connections and never answers is reported after at most
2 x 5 s + 1 s = 11 s; one that refuses connections much sooner. Raise them for slow links
or batch jobs: the worst case is about ``max_attempts * (connect_timeout + read_timeout)``
plus the backoffs.
"""

from __future__ import annotations

import base64
import builtins
import contextlib
import datetime
import hashlib
import io
import logging
import threading
from collections.abc import Collection, Iterable, Iterator, Mapping, Sequence
from pathlib import Path, PurePosixPath, PureWindowsPath
from typing import TYPE_CHECKING, Any, BinaryIO, ClassVar
from urllib.parse import urlsplit

from .._config import config
from .._exceptions import ConfigError, MissingPayloadError, StoreError
from .base import (
    COMMON_SETTINGS,
    MAX_URL_EXPIRY,
    ObjectInfo,
    Setting,
    Store,
    check_bool,
    check_count,
    check_path,
    check_positive_number,
    check_string,
    object_key,
)

if TYPE_CHECKING:
    from mypy_boto3_s3.client import S3Client

__all__ = ["S3Store"]

log = logging.getLogger(__name__)

_MiB = 1 << 20
_DELETE_BATCH = 1000
_MISSING_CODES = {"404", "NoSuchKey", "NotFound"}
_NO_BUCKET_CODES = {"NoSuchBucket"}
_TAKEN_CODES = {"PreconditionFailed", "412", "ConditionalRequestConflict"}  # create(): exists
_PAST_END_CODES = {"InvalidRange", "416"}
_DENIED_CODES = {
    "403",
    "AccessDenied",
    "InvalidAccessKeyId",
    "SignatureDoesNotMatch",
    "InvalidToken",
    "ExpiredToken",
    "Forbidden",
}


def check_endpoint(value: Any) -> str | None:
    """``host``, ``host:port`` (DataJoint's form) or ``http(s)://host[:port]``; None: AWS."""
    if value is None:
        return None
    example = "such as 'host:9000' or 'https://host:9000'"
    if not isinstance(value, str):
        raise ValueError(f"must be a string {example}, got {value!r}")
    text = value.strip()
    url = text if "://" in text else f"http://{text}"
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError:
        raise ValueError(
            f"must be host[:port] or http(s)://host[:port] {example}, got {value!r}"
        ) from None
    if (
        parts.scheme not in ("http", "https")
        or not parts.hostname
        or parts.username is not None
        or parts.path not in ("", "/")
        or parts.query
        or parts.fragment
        or (port is None and parts.netloc.rsplit("]", 1)[-1].count(":") > 0)
    ):
        raise ValueError(
            f"must be host[:port] or http(s)://host[:port] {example} (no user, path or"
            f" query), got {value!r}"
        )
    return text


def _optional(check: Any) -> Any:
    def optional(value: Any) -> Any:
        return None if value is None else check(value)

    return optional


class _Secret:
    """A credential that does not print itself."""

    __slots__ = ("value",)

    def __init__(self, value: str | None) -> None:
        self.value = value

    def __repr__(self) -> str:
        return "***" if self.value else "None"


class _BodyReader(io.RawIOBase):
    """A raw stream over a botocore StreamingBody, so ``open()`` gives a real file object."""

    def __init__(self, store: S3Store, path: PurePosixPath, body: Any) -> None:
        self._store = store
        self._path = path
        self._body = body

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        view = memoryview(buffer).cast("B")
        with self._store._errors("read", self._path):
            data = self._body.read(len(view))
        n = len(data)
        view[:n] = data
        return n

    def close(self) -> None:
        if not self.closed:
            self._body.close()
        super().close()


class _Outcome:
    """What ``S3Store._errors`` let through: the error whose code the caller expects."""

    error: BaseException | None = None

    @property
    def code(self) -> str:
        return "" if self.error is None else _code(self.error)


class S3Store(Store):
    """Payloads as objects of an S3 bucket; keys are the object paths without a leading ``/``.

    One boto3 client, created at first use and shared by threads. At first use the
    bucket is checked, so a missing bucket, refused credentials or an unreachable
    endpoint surface as a ``StoreError`` that says which.
    """

    protocol = "s3"
    settings: ClassVar[Mapping[str, Setting]] = {
        **COMMON_SETTINGS,
        "location": Setting(check_path, required=True, doc="the key prefix in the bucket"),
        "bucket": Setting(check_string, required=True, doc="the bucket"),
        "endpoint": Setting(check_endpoint, default=None, doc="host:port; default AWS"),
        "access_key": Setting(
            _optional(check_string), default=None, secret=True, doc="default boto3's chain"
        ),
        "secret_key": Setting(
            _optional(check_string), default=None, secret=True, doc="default boto3's chain"
        ),
        "secure": Setting(check_bool, default=False, doc="https for host:port endpoints"),
        "region": Setting(_optional(check_string), default=None, doc="default us-east-1"),
        "connect_timeout": Setting(
            check_positive_number, default=3.0, doc="seconds to wait for a connection"
        ),
        "read_timeout": Setting(
            check_positive_number, default=5.0, doc="seconds to wait for the server's bytes"
        ),
        "max_attempts": Setting(check_count, default=2, doc="tries of each request (>= 1)"),
    }

    #: botocore retry attempts (standard mode), and timeouts in seconds (each store sets
    #: them from its settings)
    max_attempts = 2
    connect_timeout = 3.0
    read_timeout = 5.0
    #: multipart transfers: part size and parallel parts per transfer
    part_size = 8 * _MiB
    transfer_concurrency = 8
    #: parts of a stream (not a file) held in memory at once: bounds put_file's memory
    stream_parts_in_memory = 3

    def _setup(self, spec: dict[str, Any]) -> None:
        self.bucket: str = spec["bucket"]
        self.endpoint: str | None = spec.get("endpoint")
        self.secure: bool = spec["secure"]
        self.region: str = spec.get("region") or "us-east-1"
        self.connect_timeout = spec["connect_timeout"]
        self.read_timeout = spec["read_timeout"]
        self.max_attempts = spec["max_attempts"]
        self._access_key = _Secret(spec.get("access_key"))
        self._secret_key = _Secret(spec.get("secret_key"))
        self._client: S3Client | None = None
        self._lock = threading.Lock()

    @classmethod
    def _check_together(cls, name: str, spec: dict[str, Any]) -> None:
        if ("access_key" in spec) != ("secret_key" in spec):
            raise ConfigError(
                f"store {name!r}: give both 'access_key' and 'secret_key', or neither"
            )

    @classmethod
    def display_location(cls, spec: Mapping[str, Any]) -> str:
        where = spec.get("endpoint") or "AWS"
        return f"s3://{spec.get('bucket')}/{spec.get('location', '')} at {where}"

    # -- connection ------------------------------------------------------------
    @property
    def is_remote(self) -> bool:
        return True

    @property
    def endpoint_url(self) -> str | None:
        """``http(s)://endpoint``, or None for AWS's default endpoint."""
        if not self.endpoint:
            return None
        if "://" in self.endpoint:
            return self.endpoint
        return f"{'https' if self.secure else 'http'}://{self.endpoint}"

    def _where(self) -> str:
        return self.endpoint_url or "AWS S3 (default endpoint)"

    @property
    def client(self) -> S3Client:
        """The shared boto3 client; created and the bucket checked at first use."""
        client = self._client
        if client is not None:
            return client
        with self._lock:
            if self._client is None:
                client = self._make_client()
                self._check_bucket(client)
                self._client = client
            return self._client

    def _make_client(self) -> S3Client:
        try:
            import boto3
            from botocore.config import Config as BotoConfig
        except ImportError:  # pragma: no cover - depends on the installation
            raise StoreError(
                f"store {self.name!r} uses S3: install boto3 (pip install 'sa_djblob[s3]')"
            ) from None
        threads = int(config["threads"])
        endpoint = (self.endpoint or "").lower()
        boto_config = BotoConfig(
            region_name=self.region,
            retries={"mode": "standard", "total_max_attempts": self.max_attempts},
            connect_timeout=self.connect_timeout,
            read_timeout=self.read_timeout,
            max_pool_connections=max(threads + 4, self.transfer_concurrency * 2 + 4),
            # S3-compatible servers (MinIO, Ceph, moto) want path-style keys and
            # classic checksums; AWS itself picks its own style
            s3={
                "addressing_style": "auto"
                if "amazonaws.com" in endpoint or not endpoint
                else "path"
            },
            request_checksum_calculation="when_required",
            signature_version="s3v4",  # presigned URLs too (SigV2 is retired at AWS)
            response_checksum_validation="when_required",
        )
        session = boto3.session.Session()
        client = session.client(
            "s3",
            endpoint_url=self.endpoint_url,
            aws_access_key_id=self._access_key.value,
            aws_secret_access_key=self._secret_key.value,
            region_name=self.region,
            config=boto_config,
        )
        _avoid_expect_continue(client)
        return client

    def _check_bucket(self, client: S3Client) -> None:
        with self._errors("open bucket", None, expect=_MISSING_CODES | _NO_BUCKET_CODES) as head:
            client.head_bucket(Bucket=self.bucket)
        if head.error is not None:
            self._missing_bucket_or_not_s3(client, head.error)

    def _missing_bucket_or_not_s3(self, client: S3Client, head_error: BaseException) -> None:
        """HEAD said 404 (no body): ask with a GET, whose error body says what is wrong."""
        with self._errors("open bucket", None, expect=_MISSING_CODES | _NO_BUCKET_CODES) as got:
            client.list_objects_v2(Bucket=self.bucket, MaxKeys=1)
        if got.error is not None:
            code = got.code
            if code in _NO_BUCKET_CODES or _from_s3(got.error) or _from_s3(head_error):
                raise StoreError(
                    f"store {self.name!r}: bucket {self.bucket!r} does not exist at endpoint"
                    f" {self._where()}: create it, or fix 'bucket' in"
                    f" djb.config['stores'][{self.name!r}]"
                ) from None
            raise StoreError(
                f"store {self.name!r}: endpoint {self._where()} does not look like S3"
                " (it answered 404 without an S3 error or an x-amz-request-id header):"
                f" fix 'endpoint' in djb.config['stores'][{self.name!r}] (the host:port"
                " of the S3 service, not of a web site)"
            ) from None
        # the bucket lists fine: only HEAD is what this server does not do

    def close(self) -> None:
        with self._lock:
            client, self._client = self._client, None
        if client is not None:
            client.close()

    # -- errors ----------------------------------------------------------------
    def _scrub(self, text: str) -> str:
        for secret in (self._secret_key.value, self._access_key.value):
            if secret:
                text = text.replace(secret, "***")
        return text

    @contextlib.contextmanager
    def _errors(
        self,
        action: str,
        path: PurePosixPath | None,
        *,
        missing: bool = False,
        expect: Collection[str] = (),
    ) -> Iterator[_Outcome]:
        """Map what boto3/botocore raise in the block to sa_djblob's errors, as httpx maps
        its transport's: with *missing*, an absent object is a ``MissingPayloadError``;
        an error whose S3 code is in *expect* is kept in the yielded outcome for the
        caller to act on; anything else is a ``StoreError`` saying what *action* on
        *path* failed (sa_djblob's own errors pass as they are). No credentials in it."""
        outcome = _Outcome()
        try:
            yield outcome
        except Exception as exc:
            code = _code(exc)
            if code and code in expect:
                outcome.error = exc
                return
            if missing and code in _MISSING_CODES:
                assert path is not None
                raise self._missing(path) from None
            raise self._wrap(exc, action, path) from None

    def _wrap(self, exc: BaseException, action: str, path: PurePosixPath | None) -> StoreError:
        """A StoreError for a boto3/botocore failure, without credentials."""
        from botocore.exceptions import (
            ClientError,
            ConnectTimeoutError,
            EndpointConnectionError,
            NoCredentialsError,
            PartialCredentialsError,
            ReadTimeoutError,
        )

        what = f"store {self.name!r}: cannot {action}"
        if path is not None:
            what += f" {path}"
        where = f"bucket {self.bucket!r} at endpoint {self._where()}"
        if isinstance(exc, StoreError):
            return exc
        code = _code(exc)
        setting = f"djb.config['stores'][{self.name!r}]"
        tries = f"{self.max_attempts} attempt{'s' if self.max_attempts > 1 else ''}"
        if isinstance(exc, ConnectTimeoutError):
            msg = (
                f"{what}: endpoint {self._where()} accepted no connection within"
                f" {self.connect_timeout:g} s ({tries}): check 'endpoint' and 'secure', or"
                f" raise 'connect_timeout' in {setting}"
            )
        elif isinstance(exc, EndpointConnectionError):
            msg = f"{what}: endpoint {self._where()} is unreachable (check 'endpoint' and 'secure')"
        elif isinstance(exc, ReadTimeoutError):
            msg = (
                f"{what}: endpoint {self._where()} did not answer within"
                f" {self.read_timeout:g} s ({tries}): raise 'read_timeout' in {setting}"
                " (or check that 'endpoint' is an S3 service)"
            )
        elif isinstance(exc, NoCredentialsError | PartialCredentialsError):
            msg = (
                f"{what}: no S3 credentials: set 'access_key' and 'secret_key' in"
                f" djb.config['stores'][{self.name!r}] or configure boto3's credential chain"
            )
        elif code in _DENIED_CODES:
            msg = (
                f"{what}: access denied to {where} ({code}): check 'access_key' and"
                " 'secret_key' and the bucket's permissions"
            )
        elif code in _NO_BUCKET_CODES:
            msg = f"{what}: bucket {self.bucket!r} does not exist at endpoint {self._where()}"
        elif isinstance(exc, ClientError):
            err = exc.response.get("Error", {})
            msg = f"{what} in {where}: {code}: {err.get('Message', '')}".rstrip(": ")
        else:
            msg = f"{what} in {where}: {type(exc).__name__}: {exc}"
        return StoreError(self._scrub(msg))

    def _missing(self, path: PurePosixPath) -> MissingPayloadError:
        return MissingPayloadError(
            f"store {self.name!r}: payload {path} is missing from bucket {self.bucket!r}"
            f" at endpoint {self._where()}"
        )

    # -- the Store interface -----------------------------------------------------
    key = staticmethod(object_key)  # the object key of a path: no leading ``/``

    @classmethod
    def root_of(cls, location: str) -> PurePosixPath:
        """The key prefix that an S3 ``location`` stands for, by DataJoint 0.14's rules
        (``ExternalTable._make_external_filepath``).

        The location is read as a Windows path (``/`` and ``\\`` both separate); when its
        first part is a drive or a root (``f:\\``, ``f:``, ``\\``, ``\\\\server\\share\\``)
        or otherwise holds a ``:``, that part is dropped; the remaining parts are joined
        with ``/``. So ``/dj``, ``dj/`` and ``\\dj`` all give ``dj``, ``f:\\data\\dj`` gives
        ``data/dj`` and a key never starts with ``/``.

        (This is DataJoint 0.14.10 on Python <= 3.11, where ``PurePosixPath(PureWindowsPath(
        "/dj"))`` keeps the ``\\`` root as a part. On Python >= 3.12 pathlib converts it to
        ``/``, and DataJoint there keeps a leading ``/`` in the keys of a location such as
        ``/dj``; sa_djblob follows the 0.14 rule as written, independent of the Python
        version.)
        """
        parts = PureWindowsPath(location).parts
        if location and not parts:  # DataJoint fails here (IndexError)
            raise ConfigError(
                f"an s3 store location of {location!r} names no folder; DataJoint 0.14 cannot"
                " use it: set location to '' for the top of the bucket, or to a folder name"
            )
        if parts and ("\\" in parts[0] or ":" in parts[0]):
            parts = parts[1:]
        return PurePosixPath(*parts)

    def _transfer_config(self) -> Any:
        from boto3.s3.transfer import TransferConfig

        cfg = TransferConfig(
            multipart_threshold=self.part_size,
            multipart_chunksize=self.part_size,
            max_concurrency=self.transfer_concurrency,
            max_io_queue=self.transfer_concurrency * 4,
            io_chunksize=256 * 1024,
            use_threads=True,
            preferred_transfer_client="classic",
        )
        # parts of a stream are read into memory before they are sent: bound them
        # (peak memory of an upload is about part_size * this)
        cfg.max_in_memory_upload_chunks = self.stream_parts_in_memory
        return cfg

    def put(self, path: PurePosixPath, data: bytes | memoryview) -> None:
        body = bytes(data) if isinstance(data, memoryview) else data
        with self._errors("write", path):
            self.client.put_object(Bucket=self.bucket, Key=self.key(path), Body=body)

    def create(self, path: PurePosixPath, data: bytes) -> bool:
        with self._errors("write", path, expect=_TAKEN_CODES) as taken:
            self.client.put_object(
                Bucket=self.bucket, Key=self.key(path), Body=data, IfNoneMatch="*"
            )
        return taken.error is None

    def put_verified(self, path: PurePosixPath, data: bytes | memoryview) -> None:
        """One PUT with ``Content-MD5``: S3 refuses a body whose MD5 differs (BadDigest),
        so no read-back is needed (the ETag is never relied on: it is not the MD5 of a
        multipart upload)."""
        body = bytes(data) if isinstance(data, memoryview) else data
        digest = base64.b64encode(hashlib.md5(body, usedforsecurity=False).digest()).decode()
        with self._errors("write", path):
            self.client.put_object(
                Bucket=self.bucket, Key=self.key(path), Body=body, ContentMD5=digest
            )

    def put_file(self, path: PurePosixPath, src: BinaryIO) -> None:
        with self._errors("write", path):
            self.client.upload_fileobj(
                src, self.bucket, self.key(path), Config=self._transfer_config()
            )

    def upload_file(self, path: PurePosixPath, src: Path) -> None:
        with self._errors("write", path):
            self.client.upload_file(
                str(src), self.bucket, self.key(path), Config=self._transfer_config()
            )

    def get(self, path: PurePosixPath) -> bytes:
        with self._errors("read", path, missing=True):
            response = self.client.get_object(Bucket=self.bucket, Key=self.key(path))
            with response["Body"] as body:
                data: bytes = body.read()
        return data

    def open(self, path: PurePosixPath) -> BinaryIO:
        with self._errors("read", path, missing=True):
            response = self.client.get_object(Bucket=self.bucket, Key=self.key(path))
        return io.BufferedReader(_BodyReader(self, path, response["Body"]), buffer_size=_MiB)

    def presigned_url(
        self, path: PurePosixPath, expires_in: int = 3600, *, filename: str | None = None
    ) -> str:
        """A URL that lets anyone GET the payload at *path* for *expires_in* seconds.

        *expires_in* is 1 to 604800 (7 days, S3's limit). The URL carries a signature
        made with the store's key, not the key itself. With *filename*, the response
        says ``Content-Disposition: attachment`` with that name.
        """
        if (
            isinstance(expires_in, bool)
            or not isinstance(expires_in, int)
            or not 1 <= expires_in <= MAX_URL_EXPIRY
        ):
            raise StoreError(
                f"store {self.name!r}: expires_in must be a whole number of seconds from 1 to"
                f" {MAX_URL_EXPIRY} (7 days), got {expires_in!r}"
            )
        with self._errors("sign a URL for", path):
            url: str = self.client.generate_presigned_url(
                "get_object",
                Params=self._get_params(path, filename),
                ExpiresIn=expires_in,
            )
        return url

    def _get_params(self, path: PurePosixPath, filename: str | None) -> dict[str, Any]:
        params: dict[str, Any] = {"Bucket": self.bucket, "Key": self.key(path)}
        if filename is not None:
            from urllib.parse import quote

            params["ResponseContentDisposition"] = (
                f'attachment; filename="{filename}"'
                if filename.isascii() and not any(c in filename for c in '"\\')
                else f"attachment; filename*=UTF-8''{quote(filename)}"
            )
        return params

    def size(self, path: PurePosixPath) -> int | None:
        with self._errors("check", path, expect=_MISSING_CODES) as absent:
            head = self.client.head_object(Bucket=self.bucket, Key=self.key(path))
        if absent.error is not None:
            return None
        return int(head.get("ContentLength", -1))

    def exists(self, path: PurePosixPath) -> bool:
        with self._errors("check", path, expect=_MISSING_CODES) as absent:
            self.client.head_object(Bucket=self.bucket, Key=self.key(path))
        return absent.error is None

    def remove(self, path: PurePosixPath) -> None:
        with self._errors("delete", path, expect=_MISSING_CODES):
            self.client.delete_object(Bucket=self.bucket, Key=self.key(path))

    def remove_many(self, paths: Iterable[PurePosixPath]) -> dict[PurePosixPath, str]:
        failed: dict[PurePosixPath, str] = {}
        batch: dict[str, PurePosixPath] = {}
        for path in paths:
            batch[self.key(path)] = path
            if len(batch) == _DELETE_BATCH:
                failed.update(self._delete_batch(batch))
                batch = {}
        if batch:
            failed.update(self._delete_batch(batch))
        return failed

    def _delete_batch(self, batch: dict[str, PurePosixPath]) -> dict[PurePosixPath, str]:
        try:
            with self._errors("delete", None):
                response = self.client.delete_objects(
                    Bucket=self.bucket,
                    Delete={"Objects": [{"Key": k} for k in batch], "Quiet": True},
                )
        except StoreError as exc:
            return dict.fromkeys(batch.values(), str(exc))
        failed: dict[PurePosixPath, str] = {}
        for err in response.get("Errors", []):
            key = err.get("Key", "")
            code = err.get("Code", "")
            if key not in batch or code in _MISSING_CODES:
                continue
            failed[batch[key]] = f"{code}: {err.get('Message', '')}".rstrip(": ")
        return failed

    def list(self, prefix: PurePosixPath) -> Iterator[ObjectInfo]:
        top = self.key(prefix)
        lead = "/" if str(prefix).startswith("/") else ""
        paginator = self.client.get_paginator("list_objects_v2")
        pages = paginator.paginate(Bucket=self.bucket, Prefix=top + "/" if top else "")
        with self._errors("list", prefix):
            for page in pages:
                for obj in page.get("Contents", []):
                    modified = obj["LastModified"]
                    if modified.tzinfo is None:
                        modified = modified.replace(tzinfo=datetime.UTC)
                    yield ObjectInfo(
                        PurePosixPath(lead + obj["Key"]),
                        int(obj["Size"]),
                        modified.astimezone(datetime.UTC),
                    )

    def __repr__(self) -> str:
        return (
            f"S3Store(name={self.name!r}, endpoint={self.endpoint!r},"
            f" bucket={self.bucket!r}, location={self.location!r})"
        )

    # -- ranged reads ------------------------------------------------------------------
    #: a request costs a round trip: ranges closer than this are read together
    range_gap = 256 * 1024

    def _get_range(self, path: PurePosixPath, start: int, length: int) -> bytes:
        if length <= 0:
            return b""
        with self._errors("read", path, missing=True, expect=_PAST_END_CODES) as past_end:
            response = self.client.get_object(
                Bucket=self.bucket,
                Key=self.key(path),
                Range=f"bytes={start}-{start + length - 1}",
            )
            with response["Body"] as body:
                data: bytes = body.read()
        if past_end.error is not None:
            return b""  # starts at or past the end
        return data[:length]

    def read_ranges(
        self, path: PurePosixPath, ranges: Sequence[tuple[int, int]]
    ) -> builtins.list[bytes]:
        """GET requests with a ``Range`` header, run concurrently; a range longer than
        ``part_size`` is read as parts in parallel."""
        parts: builtins.list[tuple[int, int, int]] = []  # (range index, start, length)
        for i, (start, length) in enumerate(ranges):
            for at in range(start, start + length, self.part_size):
                parts.append((i, at, min(self.part_size, start + length - at)))
        if len(parts) <= 1:
            got = [self._get_range(path, s, n) for _, s, n in parts]
        else:
            pool = _range_pool(self.transfer_concurrency)
            got = list(pool.map(lambda p: self._get_range(path, p[1], p[2]), parts))
        out: builtins.list[builtins.list[bytes]] = [[] for _ in ranges]
        short = set()
        for (i, _, n), data in zip(parts, got, strict=True):
            if i not in short:
                out[i].append(data)
            if len(data) < n:
                short.add(i)  # the object ends here: nothing after it belongs to the range
        return [b[0] if len(b) == 1 else b"".join(b) for b in out]


_range_pools: dict[int, Any] = {}
_range_lock = threading.Lock()


def _range_pool(workers: int) -> Any:
    """A thread pool for the concurrent requests of ranged reads (one per size)."""
    from concurrent.futures import ThreadPoolExecutor

    with _range_lock:
        pool = _range_pools.get(workers)
        if pool is None:
            pool = _range_pools[workers] = ThreadPoolExecutor(
                workers, thread_name_prefix="sa_djblob-s3-range"
            )
        return pool


def _no_expect_header(params: dict[str, Any], **_: Any) -> None:
    params.get("headers", {}).pop("Expect", None)


def _avoid_expect_continue(client: Any) -> None:
    """Send request bodies at once, without ``Expect: 100-continue``.

    botocore asks for "100 Continue" before the body of every upload (PutObject,
    UploadPart with a file-like body; no Config option turns it off). If the connection
    closes right after the server's "100 Continue" line, botocore's header loop reads
    EOF forever at 100% CPU, and no timeout applies: the writer hangs while it holds
    row locks. Without the header, a cut connection is an ordinary socket error
    (retried, then a StoreError). This handler runs after botocore's ``before-call.s3``
    handler that adds the header, and removes it.
    """
    client.meta.events.register_last("before-call.s3", _no_expect_header)


def _code(exc: BaseException) -> str:
    """The S3 error code of a ClientError ('' otherwise)."""
    response = getattr(exc, "response", None)
    if not isinstance(response, dict):
        return ""
    code = response.get("Error", {}).get("Code")
    if code:
        return str(code)
    status = response.get("ResponseMetadata", {}).get("HTTPStatusCode")
    return str(status) if status else ""


def _from_s3(exc: BaseException) -> bool:
    """Whether an error response came from an S3 service (its request-id headers)."""
    response = getattr(exc, "response", None)
    if not isinstance(response, dict):
        return False
    headers = response.get("ResponseMetadata", {}).get("HTTPHeaders", {}) or {}
    return any(h.lower() in ("x-amz-request-id", "x-amz-id-2") for h in headers)
