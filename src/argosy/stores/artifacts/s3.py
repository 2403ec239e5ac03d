"""The S3 byte store: objects in any S3-compatible service (AWS S3, MinIO, ...) through boto3.

``s3://BUCKET/PREFIX`` names the bucket and the key prefix every object is stored under. The
client is boto3/botocore with the standard AWS credential chain (``AWS_ACCESS_KEY_ID``...,
``AWS_PROFILE``, web identity, container and instance roles); Argosy never holds credentials.

What this backend guarantees:

- **Streaming, verified, atomic writes.** A file above ``multipart_threshold`` is read once,
  in ``part_size`` pieces, and sent as a multipart upload with up to ``max_concurrency`` parts
  in flight (memory: about ``(max_concurrency + 1) x part_size``). Every part carries its own
  ``x-amz-checksum-sha256``, which the service checks on arrival; the whole file is hashed
  while it is read, and for a content-addressed key (``.../blobs/sha256/<ab>/<sha256>``) that
  hash must equal the key's name before ``CompleteMultipartUpload`` is sent. Until then the
  object does not exist; any failure aborts the upload, so nothing partial is ever visible.
  Small files and ``put_bytes`` are one ``PutObject`` whose sha256 the service verifies.
- **Streaming reads.** :meth:`S3ByteStore.open` streams one ``GetObject`` (constant memory);
  a dropped connection resumes with a ranged GET from the current offset, pinned to the
  object's ETag (``If-Match``) so a replaced object is never spliced into the stream. With
  ``download_concurrency > 1`` large objects are read as parallel ranged GETs in order.
- **Encryption and storage class per write.** ``sse`` (``AES256`` = SSE-S3, ``aws:kms`` =
  SSE-KMS with an optional ``kms_key_id``) and ``storage_class`` go on every object written,
  including the copy made by :meth:`S3ByteStore.rename`.
- **HTTPS only**, unless the endpoint is ``http://`` and ``insecure`` is set (local tests).
  TLS certificates are always verified (``AWS_CA_BUNDLE`` names a private CA).

Every failure is a :class:`~argosy.errors.StoreError` with a one-line message saying what to
do; a missing key is ``FileNotFoundError``, as :class:`~argosy.stores.artifacts.base.ByteStore`
promises.
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import io
import re
import threading
from collections import deque
from collections.abc import Iterator, Mapping
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any, BinaryIO

from argosy.errors import IntegrityError, StoreError
from argosy.stores.artifacts.base import ByteStore

MiB = 1024 * 1024
MIN_PART_SIZE = 5 * MiB  # S3's smallest multipart part (except the last)
MAX_PARTS = 10_000  # S3's most parts in one upload
_BUCKET = re.compile(r"^[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]$")
_BLOB_KEY = re.compile(r"(?:^|/)blobs/sha256/[0-9a-f]{2}/([0-9a-f]{64})$")
_SSE = ("AES256", "aws:kms")
_READ_RETRIES = 5
ENCRYPTED_MAGIC = b"ARGOSYE1"  # argosy.stores.encryption.MAGIC (not imported: no crypto here)


@dataclass(frozen=True)
class S3Options:
    """How to reach the service and how to write objects (``Settings.artifact_options()``).

    The first seven fields are the ``ARGOSY_S3_*`` settings; the rest are tuning knobs with
    defaults that suit both AWS and a local endpoint.
    """

    endpoint_url: str | None = None
    region: str | None = None
    path_style: bool = False
    insecure: bool = False
    sse: str | None = None
    kms_key_id: str | None = None
    storage_class: str | None = None
    multipart_threshold: int = 16 * MiB
    part_size: int = 8 * MiB
    max_concurrency: int = 8
    download_concurrency: int = 1
    download_part_size: int = 8 * MiB
    max_attempts: int = 5
    connect_timeout: float = 10.0
    read_timeout: float = 60.0

    @classmethod
    def from_mapping(cls, options: Mapping[str, Any] | None) -> S3Options:
        """Options from a dict (``None`` values mean "default"); unknown names are an error."""
        given = dict(options or {})
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(given) - known)
        if unknown:
            raise StoreError(
                f"unknown S3 artifact store option(s) {', '.join(unknown)}; "
                f"the options are: {', '.join(sorted(known))}"
            )
        opts = cls(**{k: v for k, v in given.items() if v is not None})
        opts.check()
        return opts

    def check(self) -> None:
        if self.sse not in (None, *_SSE):
            raise StoreError(
                f"unknown S3 server-side encryption {self.sse!r}; "
                "set ARGOSY_S3_SSE to 'AES256' (SSE-S3) or 'aws:kms' (SSE-KMS)"
            )
        if self.kms_key_id and self.sse != "aws:kms":
            raise StoreError(
                "ARGOSY_S3_KMS_KEY_ID is set but ARGOSY_S3_SSE is not 'aws:kms'; "
                "set ARGOSY_S3_SSE=aws:kms to encrypt with that key, or unset the key id"
            )
        if self.part_size < MIN_PART_SIZE or self.download_part_size < 1:
            raise StoreError(f"S3 part_size must be at least {MIN_PART_SIZE} bytes (5 MiB)")
        if self.multipart_threshold < self.part_size:
            raise StoreError("S3 multipart_threshold must be at least part_size")
        if self.max_concurrency < 1 or self.download_concurrency < 1 or self.max_attempts < 1:
            raise StoreError(
                "S3 max_concurrency, download_concurrency and max_attempts must be >= 1"
            )
        endpoint = self.endpoint_url
        if endpoint is not None:
            if endpoint.startswith("http://"):
                if not self.insecure:
                    raise StoreError(
                        f"the S3 endpoint {endpoint} is plain http; use an https:// endpoint, "
                        "or set ARGOSY_S3_INSECURE=true for a local test endpoint"
                    )
            elif not endpoint.startswith("https://"):
                raise StoreError(
                    f"the S3 endpoint {endpoint!r} is not a URL; write it as https://HOST[:PORT]"
                )


def parse_s3_url(url: str) -> tuple[str, str]:
    """``s3://bucket/some/prefix`` -> ``("bucket", "some/prefix")`` (prefix may be empty)."""
    if not url.startswith("s3://"):
        raise StoreError(f"not an S3 URL: {url!r}; write it as s3://BUCKET/PREFIX")
    bucket, _, prefix = url[len("s3://") :].partition("/")
    if not _BUCKET.match(bucket) or ".." in bucket:
        raise StoreError(
            f"invalid S3 bucket name {bucket!r} in {url!r}: use 3-63 lowercase letters, digits, "
            "'-' and '.', as in s3://my-bucket/argosy"
        )
    prefix = prefix.strip("/")
    if any(p in ("", ".", "..") for p in prefix.split("/")) and prefix:
        raise StoreError(f"invalid key prefix {prefix!r} in {url!r}: no empty, '.' or '..' parts")
    return bucket, prefix


def _b64(digest: bytes) -> str:
    return base64.b64encode(digest).decode("ascii")


def _error_code(exc: BaseException) -> str:
    response = getattr(exc, "response", None)
    if isinstance(response, dict):
        return str(response.get("Error", {}).get("Code", ""))
    return ""


def _http_status(exc: BaseException) -> int | None:
    response = getattr(exc, "response", None)
    if isinstance(response, dict):
        status = response.get("ResponseMetadata", {}).get("HTTPStatusCode")
        return int(status) if status is not None else None
    return None


def _is_not_found(exc: BaseException) -> bool:
    return _error_code(exc) in ("404", "NoSuchKey", "NotFound") or (
        _http_status(exc) == 404 and _error_code(exc) != "NoSuchBucket"
    )


class S3ByteStore(ByteStore):
    """Objects under ``s3://bucket/prefix/``; see the module docstring for the guarantees."""

    def __init__(self, bucket: str, prefix: str = "", options: S3Options | None = None) -> None:
        self.options = opts = options or S3Options()
        opts.check()
        self.bucket = bucket
        self.prefix = prefix.strip("/")
        self.root = f"{self.prefix}/" if self.prefix else ""
        self.url = f"s3://{bucket}/{self.prefix}"
        self.where = f"{self.url} (endpoint {opts.endpoint_url or 'AWS'})"
        self._client: Any = None
        self._client_lock = threading.Lock()
        self._bucket_checked = False

    @property
    def client(self) -> Any:
        """The boto3 S3 client, made on first use (importing boto3 and making a client take
        a few hundred milliseconds: commands that never touch an artifact do not pay it)."""
        if self._client is None:
            with self._client_lock:
                if self._client is None:
                    self._client = self._make_client()
        return self._client

    def _make_client(self) -> Any:
        import boto3
        from botocore.config import Config

        opts = self.options
        config = Config(
            region_name=opts.region,
            s3={"addressing_style": "path" if opts.path_style else "auto"},
            retries={"mode": "standard", "max_attempts": opts.max_attempts},
            max_pool_connections=max(10, opts.max_concurrency + opts.download_concurrency + 2),
            connect_timeout=opts.connect_timeout,
            read_timeout=opts.read_timeout,
            tcp_keepalive=True,
            user_agent_extra="argosy",
        )
        session = boto3.session.Session(
            botocore_session=_botocore_session(), region_name=opts.region
        )
        return session.client(
            "s3",
            endpoint_url=opts.endpoint_url,
            use_ssl=not (opts.endpoint_url or "").startswith("http://"),
            config=config,
        )

    @classmethod
    def from_url(cls, url: str, options: Mapping[str, Any] | None = None) -> S3ByteStore:
        bucket, prefix = parse_s3_url(url)
        return cls(bucket, prefix, S3Options.from_mapping(options))

    def __repr__(self) -> str:
        return f"S3ByteStore({self.where})"

    # -- keys and errors ----------------------------------------------------------------------
    def _key(self, key: str) -> str:
        parts = key.split("/")
        if not key or key.startswith("/") or any(p in ("", ".", "..") for p in parts):
            raise StoreError(f"invalid artifact key {key!r}: keys are relative paths without '..'")
        return self.root + key

    def _fail(self, exc: BaseException, action: str, key: str | None = None) -> StoreError:
        """A one-line StoreError for a botocore failure, saying what to do about it."""
        from botocore import exceptions as bx

        what = f"s3://{self.bucket}/{self.root}{key}" if key is not None else self.where
        code = _error_code(exc)
        if code == "NoSuchBucket":
            return self._no_bucket()
        if isinstance(exc, bx.NoCredentialsError | bx.PartialCredentialsError):
            return StoreError(
                f"no AWS credentials for the artifact store {self.url}: set AWS_ACCESS_KEY_ID "
                "and AWS_SECRET_ACCESS_KEY, or AWS_PROFILE, or run with an IAM role"
            )
        if isinstance(exc, bx.SSLError):
            return StoreError(
                f"TLS to the S3 endpoint of {self.where} failed ({exc}); if it uses a private "
                "CA, point AWS_CA_BUNDLE at the CA certificate"
            )
        if isinstance(exc, bx.EndpointConnectionError | bx.ConnectTimeoutError):
            return StoreError(
                f"cannot reach the S3 endpoint of {self.where} to {action} ({exc}); "
                "check ARGOSY_S3_ENDPOINT_URL / ARGOSY_S3_REGION and the network"
            )
        if code in ("AccessDenied", "403", "Forbidden", "InvalidAccessKeyId", "AllAccessDisabled"):
            return StoreError(
                f"S3 denied {action} {what} ({code}); check the AWS credentials in use and "
                "that their policy allows s3:GetObject, s3:PutObject, s3:ListBucket and "
                "s3:DeleteObject on this bucket and prefix (and kms:GenerateDataKey/kms:Decrypt "
                "for SSE-KMS)"
            )
        if code in (
            "SignatureDoesNotMatch",
            "InvalidToken",
            "ExpiredToken",
            "TokenRefreshRequired",
        ):
            return StoreError(
                f"S3 rejected the credentials used to {action} {what} ({code}); refresh or fix "
                "the AWS credentials (AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY/AWS_SESSION_TOKEN)"
            )
        if code == "InvalidObjectState":
            return StoreError(
                f"{what} is archived (storage class "
                f"{getattr(exc, 'response', {}).get('Error', {}).get('StorageClass', '?')}) and "
                "cannot be read until it is restored; request its retrieval (restore), then read it again"
            )
        if code == "InvalidStorageClass":
            return StoreError(
                f"S3 refused the storage class {self.options.storage_class!r} for {what}; set "
                "ARGOSY_S3_STORAGE_CLASS to one the service supports, e.g. STANDARD_IA"
            )
        if code.startswith("KMS") or "KMS" in code:
            return StoreError(
                f"S3 could not use the KMS key for {what} ({code}); check ARGOSY_S3_KMS_KEY_ID "
                "and that the credentials may use that key"
            )
        if code == "PreconditionFailed":
            return StoreError(f"{what} was replaced while it was being read; read it again")
        if isinstance(exc, bx.BotoCoreError | bx.ClientError):
            detail = str(exc).replace("\n", " ")
            return StoreError(
                f"S3 failed to {action} {what}: {detail}; retry, or check the service"
            )
        return StoreError(f"S3 failed to {action} {what}: {exc!r}")

    def _no_bucket(self) -> StoreError:
        return StoreError(
            f"the S3 bucket {self.bucket!r} does not exist at {self.options.endpoint_url or 'AWS'}; "
            f"create it (aws s3 mb s3://{self.bucket}) or fix ARGOSY_ARTIFACT_URL"
        )

    def _check_bucket(self) -> None:
        """Tell a missing bucket apart from a missing key (HEAD answers 404 for both)."""
        if self._bucket_checked:
            return
        try:
            self.client.head_bucket(Bucket=self.bucket)
        except Exception as exc:
            if _http_status(exc) == 404 or _error_code(exc) in ("404", "NoSuchBucket"):
                raise self._no_bucket() from None
            if _http_status(exc) != 403:  # 403: may not HEAD the bucket; that is fine
                raise self._fail(exc, "check the bucket of") from None
        self._bucket_checked = True

    def _write_args(self) -> dict[str, Any]:
        opts = self.options
        args: dict[str, Any] = {}
        if opts.sse:
            args["ServerSideEncryption"] = opts.sse
            if opts.sse == "aws:kms" and opts.kms_key_id:
                args["SSEKMSKeyId"] = opts.kms_key_id
        if opts.storage_class:
            args["StorageClass"] = opts.storage_class
        return args

    # -- writes -------------------------------------------------------------------------------
    def put_bytes(self, key: str, data: bytes) -> None:
        full = self._key(key)
        digest = hashlib.sha256(data)
        self._check_content_key(key, digest.hexdigest(), f"{len(data)} bytes", data[:8])
        self._put_object(full, key, data, digest.digest())

    def put_file(self, key: str, source: Path, *, move: bool = False) -> None:
        full = self._key(key)
        size = source.stat().st_size
        if size <= self.options.multipart_threshold:
            data = source.read_bytes()
            if len(data) != size:
                raise IntegrityError(f"file {source} changed while being stored; write it again")
            digest = hashlib.sha256(data)
            self._check_content_key(key, digest.hexdigest(), str(source), data[:8])
            self._put_object(full, key, data, digest.digest())
        else:
            self._multipart_upload(full, key, source, size)
        if move:
            source.unlink(missing_ok=True)

    def _check_content_key(self, key: str, actual: str, what: str, head: bytes = b"") -> None:
        """A content-addressed key must name the sha256 of the bytes about to be stored.

        An encrypted object (``head`` starts with the encryption header) is named by the
        sha256 of its plaintext, which the artifact store checked before encrypting it."""
        named = _BLOB_KEY.search(key)
        if named and head.startswith(ENCRYPTED_MAGIC):
            return
        if named and named.group(1) != actual:
            raise IntegrityError(
                f"refused to store {what} as s3://{self.bucket}/{self.root}{key}: its bytes hash "
                f"to sha256:{actual}, not the sha256:{named.group(1)} the key names (did the "
                "file change while it was being stored?); write it again"
            )

    def _put_object(self, full: str, key: str, data: bytes, sha256: bytes) -> None:
        try:
            self.client.put_object(
                Bucket=self.bucket,
                Key=full,
                Body=data,
                ChecksumAlgorithm="SHA256",
                ChecksumSHA256=_b64(sha256),
                Metadata={"sha256": sha256.hex()},
                **self._write_args(),
            )
        except Exception as exc:
            raise self._fail(exc, "write", key) from None

    def _part_size(self, size: int) -> int:
        needed = -(-size // MAX_PARTS)  # ceil
        part = max(self.options.part_size, needed)
        return -(-part // MiB) * MiB

    def _multipart_upload(self, full: str, key: str, source: Path, size: int) -> None:
        named = _BLOB_KEY.search(key)
        extra = self._write_args()
        if named:
            extra["Metadata"] = {"sha256": named.group(1)}
        try:
            upload = self.client.create_multipart_upload(
                Bucket=self.bucket, Key=full, ChecksumAlgorithm="SHA256", **extra
            )
        except Exception as exc:
            raise self._fail(exc, "start an upload to", key) from None
        upload_id: str = upload["UploadId"]
        try:
            parts, actual, read = self._upload_parts(full, upload_id, source, self._part_size(size))
            if read != size:
                raise IntegrityError(f"file {source} changed while being stored; write it again")
            with source.open("rb") as f:
                head = f.read(len(ENCRYPTED_MAGIC))
            self._check_content_key(key, actual, str(source), head)
            self.client.complete_multipart_upload(
                Bucket=self.bucket,
                Key=full,
                UploadId=upload_id,
                MultipartUpload={"Parts": parts},
            )
        except BaseException as exc:
            with contextlib.suppress(Exception):
                self.client.abort_multipart_upload(Bucket=self.bucket, Key=full, UploadId=upload_id)
            if isinstance(exc, Exception) and not isinstance(exc, StoreError | OSError):
                raise self._fail(exc, "upload", key) from None
            raise

    def _upload_parts(
        self, full: str, upload_id: str, source: Path, part_size: int
    ) -> tuple[list[dict[str, Any]], str, int]:
        """Read ``source`` once, hashing it in order, with parts uploaded concurrently."""
        limit = self.options.max_concurrency
        whole = hashlib.sha256()
        done_parts: list[dict[str, Any]] = []
        pending: set[Future[dict[str, Any]]] = set()
        read = 0
        pool = ThreadPoolExecutor(max_workers=limit, thread_name_prefix="argosy-s3-upload")
        try:
            with source.open("rb") as f:
                number = 0
                while chunk := f.read(part_size):
                    number += 1
                    read += len(chunk)
                    whole.update(chunk)
                    pending.add(pool.submit(self._upload_part, full, upload_id, number, chunk))
                    del chunk
                    if len(pending) >= limit:
                        finished, pending = wait(pending, return_when=FIRST_COMPLETED)
                        done_parts.extend(fut.result() for fut in finished)
            finished, pending = wait(pending)
            done_parts.extend(fut.result() for fut in finished)
        finally:
            for fut in pending:
                fut.cancel()
            pool.shutdown(wait=True, cancel_futures=True)
        done_parts.sort(key=lambda p: int(p["PartNumber"]))
        return done_parts, whole.hexdigest(), read

    def _upload_part(self, full: str, upload_id: str, number: int, data: bytes) -> dict[str, Any]:
        checksum = _b64(hashlib.sha256(data).digest())
        response = self.client.upload_part(
            Bucket=self.bucket,
            Key=full,
            UploadId=upload_id,
            PartNumber=number,
            Body=data,
            ChecksumAlgorithm="SHA256",
            ChecksumSHA256=checksum,
        )
        return {"PartNumber": number, "ETag": response["ETag"], "ChecksumSHA256": checksum}

    # -- reads --------------------------------------------------------------------------------
    def _get(self, key: str, start: int | None = None, end: int | None = None, **kw: Any) -> Any:
        """One GetObject (ranged when ``start`` is given); a missing key is FileNotFoundError."""
        args: dict[str, Any] = {"Bucket": self.bucket, "Key": self._key(key), **kw}
        if start is not None:
            args["Range"] = f"bytes={start}-{'' if end is None else end}"
        try:
            return self.client.get_object(**args)
        except Exception as exc:
            if start == 0 and _error_code(exc) == "InvalidRange":
                return None  # an empty object has no byte 0
            if _is_not_found(exc):
                raise FileNotFoundError(f"no object s3://{self.bucket}/{args['Key']}") from None
            raise self._fail(exc, "read", key) from None

    def open(self, key: str) -> BinaryIO:
        opts = self.options
        raw: io.RawIOBase
        if opts.download_concurrency > 1:
            first = self._get(key, 0, opts.download_part_size - 1)
            if first is None:
                return io.BytesIO(b"")
            raw = _RangedReader(self, key, first)
        else:
            raw = _StreamReader(self, key, self._get(key))
        return io.BufferedReader(raw, buffer_size=1 * MiB)

    def exists(self, key: str) -> bool:
        try:
            self.client.head_object(Bucket=self.bucket, Key=self._key(key))
        except Exception as exc:
            if _is_not_found(exc):
                self._check_bucket()
                return False
            raise self._fail(exc, "look up", key) from None
        return True

    def list(self, prefix: str) -> Iterator[str]:
        paginator = self.client.get_paginator("list_objects_v2")
        try:
            for page in paginator.paginate(Bucket=self.bucket, Prefix=self.root + prefix):
                for item in page.get("Contents", []):
                    yield str(item["Key"])[len(self.root) :]
        except Exception as exc:
            raise self._fail(exc, "list", prefix + "*") from None

    def rename(self, key: str, new_key: str) -> None:
        from boto3.s3.transfer import TransferConfig

        source, dest = self._key(key), self._key(new_key)
        config = TransferConfig(
            multipart_threshold=max(self.options.multipart_threshold, 5 * 1024 * MiB),
            multipart_chunksize=max(self.options.part_size, 64 * MiB),
            max_concurrency=self.options.max_concurrency,
        )
        try:
            self.client.copy(
                {"Bucket": self.bucket, "Key": source},
                self.bucket,
                dest,
                ExtraArgs=self._write_args(),
                Config=config,
            )
        except Exception as exc:
            if _is_not_found(exc):
                self._check_bucket()
                raise FileNotFoundError(f"no object s3://{self.bucket}/{source}") from None
            raise self._fail(exc, f"rename to {new_key}", key) from None
        try:
            self.client.delete_object(Bucket=self.bucket, Key=source)
        except Exception as exc:
            raise self._fail(exc, "delete", key) from None

    def delete(self, key: str) -> None:
        """Remove an object (no error if it is already gone)."""
        try:
            self.client.delete_object(Bucket=self.bucket, Key=self._key(key))
        except Exception as exc:
            raise self._fail(exc, "delete", key) from None

    # -- presigned URLs (the task store hands them to tasks: server/routes/task_direct.py) ----
    @property
    def _presigner(self) -> Any:
        """A client that signs with SigV4 (headers such as the checksum are signed too)."""
        if getattr(self, "_signing_client", None) is None:
            import boto3
            from botocore.config import Config

            opts = self.options
            config = Config(
                region_name=opts.region,
                signature_version="s3v4",
                s3={"addressing_style": "path" if opts.path_style else "auto"},
            )
            session = boto3.session.Session(
                botocore_session=_botocore_session(), region_name=opts.region
            )
            self._signing_client = session.client(
                "s3", endpoint_url=opts.endpoint_url, config=config,
                use_ssl=not (opts.endpoint_url or "").startswith("http://"),
            )  # fmt: skip
        return self._signing_client

    def presigned_get(self, key: str, seconds: int) -> str:
        """A URL that reads exactly ``key`` for ``seconds``, with no other credential."""
        params = {"Bucket": self.bucket, "Key": self._key(key)}
        url: str = self._presigner.generate_presigned_url("get_object", Params=params,
                                                          ExpiresIn=seconds)  # fmt: skip
        return url

    def presigned_put(self, key: str, sha256_hex: str, seconds: int) -> tuple[str, dict[str, str]]:
        """A URL that writes exactly ``key`` once (``If-None-Match: *``) with bytes whose
        sha256 is ``sha256_hex`` (the signed ``x-amz-checksum-sha256``: S3 refuses other
        bytes), with this store's encryption and storage class. Returns the URL and the
        headers the request must send as they are."""
        checksum = _b64(bytes.fromhex(sha256_hex))
        params: dict[str, Any] = {
            "Bucket": self.bucket, "Key": self._key(key), "ChecksumSHA256": checksum,
            "IfNoneMatch": "*", "Metadata": {"sha256": sha256_hex}, **self._write_args(),
        }  # fmt: skip
        url: str = self._presigner.generate_presigned_url("put_object", Params=params,
                                                          ExpiresIn=seconds)  # fmt: skip
        headers = {"x-amz-checksum-sha256": checksum, "If-None-Match": "*",
                   "x-amz-meta-sha256": sha256_hex}  # fmt: skip
        opts = self.options
        if opts.sse:
            headers["x-amz-server-side-encryption"] = opts.sse
            if opts.sse == "aws:kms" and opts.kms_key_id:
                headers["x-amz-server-side-encryption-aws-kms-key-id"] = opts.kms_key_id
        if opts.storage_class:
            headers["x-amz-storage-class"] = opts.storage_class
        return url, headers

    def describe(self, key: str) -> dict[str, Any] | None:
        """``{"etag", "size", "sha256"}`` of an object (``sha256``: the checksum S3 verified
        on upload, hex, when it kept one), or None if there is none."""
        try:
            head = self.client.head_object(Bucket=self.bucket, Key=self._key(key),
                                           ChecksumMode="ENABLED")  # fmt: skip
        except Exception as exc:
            if _is_not_found(exc):
                return None
            raise self._fail(exc, "look up", key) from None
        checksum = head.get("ChecksumSHA256")
        return {
            "etag": str(head.get("ETag", "")).strip('"'),
            "size": int(head.get("ContentLength", 0)),
            "sha256": base64.b64decode(checksum).hex() if checksum else None,
        }


_loader: Any = None
_loader_lock = threading.Lock()


def _botocore_session() -> Any:
    """A new botocore session (its own credential chain) sharing one loader per process.

    The loader caches botocore's parsed JSON models, which are most of a client's creation
    time; a server opening one store per tenant makes each client in milliseconds.
    """
    import botocore.session

    global _loader
    session = botocore.session.get_session()
    with _loader_lock:
        if _loader is None:
            _loader = session.get_component("data_loader")
        else:
            session.register_component("data_loader", _loader)
    return session


def _stream_errors() -> tuple[type[BaseException], ...]:
    from botocore import exceptions as bx
    from urllib3 import exceptions as ux

    return (
        bx.ResponseStreamingError,
        bx.ReadTimeoutError,
        bx.IncompleteReadError,
        bx.ConnectionError,
        bx.ConnectionClosedError,
        ux.HTTPError,
        ConnectionError,
        TimeoutError,
    )


class _StreamReader(io.RawIOBase):
    """Sequential reads from one streamed GET, resumed by a ranged GET after a dropped stream.

    Resumed reads are pinned to the first response's ETag (``If-Match``), so an object that
    was replaced meanwhile fails the read instead of mixing two objects' bytes.
    """

    def __init__(self, store: S3ByteStore, key: str, response: Any) -> None:
        super().__init__()
        self._store = store
        self._key = key
        self._size = int(response["ContentLength"])
        self._etag = str(response["ETag"])
        self._body: Any = response["Body"]
        self._pos = 0
        self._errors = _stream_errors()

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def tell(self) -> int:
        return self._pos

    def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:
        base = {io.SEEK_SET: 0, io.SEEK_CUR: self._pos, io.SEEK_END: self._size}[whence]
        target = base + offset
        if target < 0:
            raise ValueError(f"negative seek position {target}")
        if target != self._pos:
            self._drop()
            self._pos = target
        return target

    def _drop(self) -> None:
        if self._body is not None:
            with contextlib.suppress(Exception):
                self._body.close()
            self._body = None

    def readinto(self, buffer: Any) -> int:
        view = memoryview(buffer).cast("B")
        want = min(len(view), self._size - self._pos)
        if want <= 0:
            return 0
        last: BaseException | None = None
        for _ in range(_READ_RETRIES):
            try:
                if self._body is None:
                    response = self._store._get(self._key, self._pos, IfMatch=self._etag)
                    self._body = response["Body"]
                n = int(self._body.readinto(view[:want]) or 0)
                if n == 0:
                    raise ConnectionError("the stream ended early")
                self._pos += n
                return n
            except self._errors as exc:
                last = exc
                self._drop()
        raise StoreError(
            f"reading s3://{self._store.bucket}/{self._store.root}{self._key} failed at byte "
            f"{self._pos} of {self._size} after {_READ_RETRIES} tries ({last}); check the "
            "network and retry"
        )

    def close(self) -> None:
        self._drop()
        super().close()


class _RangedReader(io.RawIOBase):
    """Sequential reads served by parallel ranged GETs, at most ``download_concurrency`` ahead.

    Memory is bounded by ``(download_concurrency + 1) x download_part_size``.
    """

    def __init__(self, store: S3ByteStore, key: str, first: Any) -> None:
        super().__init__()
        self._store = store
        self._key = key
        self._etag = str(first["ETag"])
        content_range = str(first.get("ContentRange") or "")
        self._size = (
            int(content_range.rsplit("/", 1)[1])
            if "/" in content_range
            else int(first["ContentLength"])
        )
        self._part = store.options.download_part_size
        self._window = store.options.download_concurrency
        self._errors = _stream_errors()
        self._pool = ThreadPoolExecutor(self._window, thread_name_prefix="argosy-s3-download")
        self._pending: deque[Future[bytes]] = deque()
        length = int(first["ContentLength"])
        try:
            data = self._read_body(first["Body"], length, 0)
        except self._errors:
            data = self._fetch(0, length - 1)
        self._current = memoryview(data)
        self._offset = 0  # within _current
        self._pos = 0  # of the next byte returned
        self._next = len(self._current)  # first byte not yet requested
        self._fill()

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def tell(self) -> int:
        return self._pos

    def _read_body(self, body: Any, length: int, start: int) -> bytes:
        try:
            data: bytes = body.read()
        finally:
            body.close()
        if len(data) != length:
            raise ConnectionError(f"short ranged read at byte {start}")
        return data

    def _fetch(self, start: int, end: int) -> bytes:
        last: BaseException | None = None
        for _ in range(_READ_RETRIES):
            try:
                response = self._store._get(self._key, start, end, IfMatch=self._etag)
                return self._read_body(response["Body"], end - start + 1, start)
            except self._errors as exc:
                last = exc
        raise StoreError(
            f"reading s3://{self._store.bucket}/{self._store.root}{self._key} failed at byte "
            f"{start} of {self._size} after {_READ_RETRIES} tries ({last}); check the network "
            "and retry"
        )

    def _fill(self) -> None:
        while len(self._pending) < self._window and self._next < self._size:
            end = min(self._next + self._part, self._size) - 1
            self._pending.append(self._pool.submit(self._fetch, self._next, end))
            self._next = end + 1

    def _cancel(self) -> None:
        for fut in self._pending:
            fut.cancel()
        self._pending.clear()

    def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:
        base = {io.SEEK_SET: 0, io.SEEK_CUR: self._pos, io.SEEK_END: self._size}[whence]
        target = base + offset
        if target < 0:
            raise ValueError(f"negative seek position {target}")
        if target != self._pos:
            self._cancel()
            self._current = memoryview(b"")
            self._offset = 0
            self._pos = self._next = target
        return target

    def readinto(self, buffer: Any) -> int:
        view = memoryview(buffer).cast("B")
        if not len(view) or self._pos >= self._size:
            return 0
        if self._offset >= len(self._current):
            self._fill()
            if not self._pending:
                return 0
            self._current = memoryview(self._pending.popleft().result())
            self._offset = 0
            self._fill()
        n = min(len(view), len(self._current) - self._offset)
        view[:n] = self._current[self._offset : self._offset + n]
        self._offset += n
        self._pos += n
        return n

    def close(self) -> None:
        self._cancel()
        self._pool.shutdown(wait=False, cancel_futures=True)
        self._current = memoryview(b"")
        super().close()


def open_s3_store(url: str, options: Mapping[str, Any] | None = None) -> S3ByteStore:
    """The byte store for ``s3://bucket/prefix`` with ``Settings.artifact_options()``."""
    return S3ByteStore.from_url(url, options)


__all__ = ["S3ByteStore", "S3Options", "open_s3_store", "parse_s3_url"]
