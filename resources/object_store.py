"""An index root on object storage, ``s3://bucket/prefix``: a thin layer over obstore (no Dagster).

The contract the index writers and readers build on (paths are relative to the URL's prefix, with
``/`` between folders, e.g. ``MANIFEST.json``, ``log/00000001-00000040-<uuid>.parquet``):

- ``put(path, data)``: a plain PUT, bytes or a local file (streamed, multipart when large). Only for
  new names: immutable files carry a unique name, so nothing is ever overwritten (I4).
- ``put_if_absent(path, data)``: ``If-None-Match: *``; the new ETag, or None when the name exists
  (another writer created it first).
- ``put_if_match(path, data, etag)``: ``If-Match: <etag>``, the manifest's publish point; raises
  ConcurrentPublishError when another writer replaced or deleted the object since ``etag`` was read.
  Of writers racing from one ETag, exactly one wins. The body must carry an id unique to the publish
  (a uuid): an ETag of a single PUT is the MD5 of its bytes, so identical bytes published again would
  give the old ETag back, and a writer holding that stale ETag would win (the ABA problem).
- ``get(path)`` -> (bytes, ETag); ``head(path)`` -> ObjectInfo; ``list(prefix)`` -> ObjectInfo of every
  object under the folder ``prefix``, sorted by path; ``download(path, file)`` streams to a temp file
  beside ``file``, checks the size, fsyncs and renames (files.atomic_write); ``delete(path)``, which
  succeeds when the object is already gone.

Configuration: the standard AWS environment variables, read when the store is made:
``AWS_ENDPOINT_URL_S3`` or ``AWS_ENDPOINT_URL`` (unset: AWS S3), ``AWS_REGION`` or
``AWS_DEFAULT_REGION`` (default us-east-1), ``AWS_ALLOW_HTTP=true`` for a plain-HTTP endpoint (a local
test server), and credentials: ``AWS_ACCESS_KEY_ID`` + ``AWS_SECRET_ACCESS_KEY`` (+
``AWS_SESSION_TOKEN``), or web identity (``AWS_WEB_IDENTITY_TOKEN_FILE`` + ``AWS_ROLE_ARN``, as EKS
sets them), or container credentials (``AWS_CONTAINER_CREDENTIALS_RELATIVE_URI``/``_FULL_URI``), or
``AWS_SKIP_SIGNATURE=true`` for a public bucket. Without any, the store refuses to start rather than
ask the EC2 metadata endpoint (which hangs or fails obscurely off EC2); ``~/.aws`` profiles are not
read (export them: ``eval "$(aws configure export-credentials --format env)"``).

Conditional writes are probed once per ObjectStore, before its first ``put_if_absent`` or
``put_if_match`` (readers never probe): a unique key under ``_quiver_probe/`` is created, created again
with ``If-None-Match: *`` (must fail) and replaced with a wrong ``If-Match`` (must fail), then deleted.
A store that lets either through is refused (ConditionalWritesUnsupportedError): on it, two writers
could both publish. ``check()`` (run by ``open_store``) lists one object to prove the endpoint, the
credentials and the bucket.

Every error names the URL and the fix; each has its class below, all ObjectStoreError.
"""

from __future__ import annotations

import logging
import os
import threading
import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from urllib.parse import urlparse

from quiver.resources.files import atomic_write

log = logging.getLogger(__name__)

SCHEME = "s3"
PROBE_FOLDER = "_quiver_probe"
DEFAULT_REGION = "us-east-1"
CONNECT_TIMEOUT = "5s"
MAX_RETRIES = 3  # transient errors (5xx, resets) retried with backoff; then the error is the caller's
RETRY_TIMEOUT = timedelta(seconds=30)
_DOWNLOAD_CHUNK = 8 << 20
_TRUE = {"1", "true", "yes", "on"}


class ObjectStoreError(Exception):
    """Base of the errors below; each message names the URL and the fix."""


class ObjectStoreURLError(ObjectStoreError, ValueError):
    """Not an ``s3://bucket/prefix`` URL."""


class ObjectStoreNotInstalledError(ObjectStoreError, ImportError):
    """obstore is missing: the ``s3`` extra is not installed."""


class ObjectStoreConfigError(ObjectStoreError, ValueError):
    """The environment variables contradict each other (e.g. an http:// endpoint without AWS_ALLOW_HTTP)."""


class MissingCredentialsError(ObjectStoreError, PermissionError):
    """No credentials in the environment."""


class CredentialsRejectedError(ObjectStoreError, PermissionError):
    """The store refused the credentials (unknown key, bad signature, access denied)."""


class StoreUnreachableError(ObjectStoreError, ConnectionError):
    """The endpoint does not answer."""


class NoSuchBucketError(ObjectStoreError, FileNotFoundError):
    """The URL's bucket does not exist at the endpoint."""


class ObjectNotFoundError(ObjectStoreError, FileNotFoundError):
    """No object at that path."""


class ConditionalWritesUnsupportedError(ObjectStoreError, RuntimeError):
    """The store ignores If-None-Match or If-Match on PUT."""


class ConcurrentPublishError(ObjectStoreError, RuntimeError):
    """Another writer changed the object between this writer's read and its conditional publish."""


@dataclass(frozen=True)
class ObjectInfo:
    path: str  # relative to the store's prefix
    size: int
    etag: str | None
    last_modified: datetime


@dataclass(frozen=True)
class S3Location:
    bucket: str
    prefix: str  # no leading or trailing slash; "" for the bucket's root

    @property
    def url(self) -> str:
        return f"{SCHEME}://{self.bucket}/{self.prefix}".rstrip("/")


def is_object_store_url(value: str | os.PathLike) -> bool:
    return str(value).startswith(f"{SCHEME}://")


def parse_url(url: str) -> S3Location:
    parsed = urlparse(url)
    if parsed.scheme != SCHEME or not parsed.netloc or parsed.query or parsed.fragment:
        raise ObjectStoreURLError(f"{url!r} is not an object store URL; write it as s3://bucket/prefix")
    return S3Location(parsed.netloc, parsed.path.strip("/"))


def _flag(environ: Mapping[str, str], name: str) -> bool:
    return environ.get(name, "").strip().lower() in _TRUE


def store_config(location: S3Location, environ: Mapping[str, str]) -> tuple[dict, dict]:
    """obstore's (config, client_options) from the AWS environment variables; raises for a missing
    or contradictory setting."""
    url = location.url
    config: dict = {"region": environ.get("AWS_REGION") or environ.get("AWS_DEFAULT_REGION") or DEFAULT_REGION}
    client = {"connect_timeout": CONNECT_TIMEOUT, "allow_http": _flag(environ, "AWS_ALLOW_HTTP")}
    endpoint = environ.get("AWS_ENDPOINT_URL_S3") or environ.get("AWS_ENDPOINT_URL")
    if endpoint:
        if endpoint.startswith("http://") and not client["allow_http"]:
            raise ObjectStoreConfigError(
                f"{url}: the endpoint {endpoint} is plain HTTP; set AWS_ALLOW_HTTP=true to use it (a local test "
                "server), or give an https:// endpoint"
            )
        config["endpoint"] = endpoint
    names = {
        "access_key_id": "AWS_ACCESS_KEY_ID",
        "secret_access_key": "AWS_SECRET_ACCESS_KEY",
        "session_token": "AWS_SESSION_TOKEN",
        "web_identity_token_file": "AWS_WEB_IDENTITY_TOKEN_FILE",
        "role_arn": "AWS_ROLE_ARN",
        "role_session_name": "AWS_ROLE_SESSION_NAME",
        "container_credentials_relative_uri": "AWS_CONTAINER_CREDENTIALS_RELATIVE_URI",
        "container_credentials_full_uri": "AWS_CONTAINER_CREDENTIALS_FULL_URI",
    }
    config.update({key: environ[name] for key, name in names.items() if environ.get(name)})
    if _flag(environ, "AWS_SKIP_SIGNATURE"):
        config["skip_signature"] = True
    keys = ("access_key_id" in config) + ("secret_access_key" in config)
    if keys == 1:
        given, missing = (
            ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY")
            if "access_key_id" in config
            else ("AWS_SECRET_ACCESS_KEY", "AWS_ACCESS_KEY_ID")
        )
        raise MissingCredentialsError(f"{url}: {given} is set but {missing} is not; set both")
    roles = ("web_identity_token_file" in config and "role_arn" in config) or any(
        key.startswith("container_credentials") for key in config
    )
    if not keys and not roles and not config.get("skip_signature"):
        raise MissingCredentialsError(
            f"{url}: no credentials for the object store; set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY "
            "(and AWS_SESSION_TOKEN for temporary ones), or AWS_WEB_IDENTITY_TOKEN_FILE with AWS_ROLE_ARN, or "
            "AWS_SKIP_SIGNATURE=true for a public bucket (a ~/.aws profile: "
            'eval "$(aws configure export-credentials --format env)")'
        )
    return config, client


def _obstore():
    try:
        import obstore
        import obstore.exceptions
        import obstore.store
    except ImportError as exc:
        raise ObjectStoreNotInstalledError(
            f"an s3:// index root needs obstore ({exc}); install the extra: pip install 'quiver[s3]'"
        ) from None
    return obstore


def open_store(url: str, environ: Mapping[str, str] | None = None) -> ObjectStore:
    """The store at ``url``, checked: the endpoint answers, the credentials pass, the bucket exists."""
    store = ObjectStore(url, environ)
    store.check()
    return store


class ObjectStore:
    """Objects under ``s3://bucket/prefix``; thread-safe (one obstore client, its own connection pool)."""

    def __init__(self, url: str, environ: Mapping[str, str] | None = None):
        self.location = parse_url(url)
        self.url = self.location.url
        config, client = store_config(self.location, os.environ if environ is None else environ)
        self.endpoint = config.get("endpoint") or f"AWS S3 ({config['region']})"
        self._ob = _obstore()
        self._store = self._ob.store.S3Store(
            self.location.bucket,
            prefix=self.location.prefix or None,
            config=config,
            client_options=client,
            retry_config={"max_retries": MAX_RETRIES, "retry_timeout": RETRY_TIMEOUT},
        )
        self._probe_lock = threading.Lock()
        self._conditional_ok = False

    def __repr__(self) -> str:
        return f"ObjectStore({self.url!r} at {self.endpoint})"

    def where(self, path: str) -> str:
        return f"{self.url}/{path}" if path else self.url

    # -- writes -----------------------------------------------------------------------------------
    def put(self, path: str, data: bytes | Path) -> str:
        """Write a new name (never one that a reader may hold); its ETag."""
        if isinstance(data, Path) and not data.is_file():
            raise FileNotFoundError(f"{data}: no such local file to upload to {self.where(path)}")
        return self._call("PUT", path, self._ob.put, self._store, path, data)["e_tag"]

    def put_if_absent(self, path: str, data: bytes | Path) -> str | None:
        """Create ``path`` unless it exists: its ETag, or None when another writer created it first."""
        if isinstance(data, Path) and not data.is_file():
            raise FileNotFoundError(f"{data}: no such local file to upload to {self.where(path)}")
        self.check_conditional_writes()
        try:
            return self._call("PUT", path, self._ob.put, self._store, path, data, mode="create")["e_tag"]
        except self._ob.exceptions.AlreadyExistsError:
            return None

    def put_if_match(self, path: str, data: bytes, etag: str) -> str:
        """Replace ``path`` if it is still at ``etag``: the new ETag; ConcurrentPublishError when not."""
        self.check_conditional_writes()
        try:
            return self._call("PUT", path, self._ob.put, self._store, path, data, mode={"e_tag": etag})["e_tag"]
        except (self._ob.exceptions.PreconditionError, ObjectNotFoundError) as exc:
            gone = isinstance(exc, ObjectNotFoundError) or "NoSuchKey" in str(exc)  # S3 answers 404 here
            raise ConcurrentPublishError(
                f"{self.where(path)} was {'deleted' if gone else 'replaced'} by another writer since this one read it "
                f"(at ETag {etag}); nothing of this publish was written: read it again and publish on top of "
                "the new state"
            ) from None

    def delete(self, path: str) -> None:
        self._call("DELETE", path, self._ob.delete, self._store, path)

    # -- reads ------------------------------------------------------------------------------------
    def get(self, path: str) -> tuple[bytes, str]:
        result = self._call("GET", path, self._ob.get, self._store, path)
        return bytes(self._call("GET", path, result.bytes)), result.meta["e_tag"]

    def head(self, path: str) -> ObjectInfo:
        return _info(self._call("HEAD", path, self._ob.head, self._store, path))

    def list(self, prefix: str = "") -> list[ObjectInfo]:
        """Every object under the folder ``prefix`` (all of the store's when empty), sorted by path."""
        prefix = prefix.strip("/")
        found = self._call("LIST", prefix, lambda: self._ob.list(self._store, prefix=prefix or None).collect())
        return sorted((_info(meta) for meta in found), key=lambda info: info.path)

    def download(self, path: str, destination: Path) -> ObjectInfo:
        """Stream ``path`` into the local file ``destination``, whole or not at all."""
        result = self._call("GET", path, self._ob.get, self._store, path)
        info = _info(result.meta)

        def write(temp: Path) -> None:
            chunks = result.stream(min_chunk_size=_DOWNLOAD_CHUNK)
            with open(temp, "wb") as out:  # only the network side goes through _call: a local error stays local
                while (chunk := self._call("GET", path, next, chunks, None)) is not None:
                    out.write(chunk)
            if temp.stat().st_size != info.size:
                raise ObjectStoreError(
                    f"{self.where(path)}: downloaded {temp.stat().st_size} bytes of {info.size}; download it again"
                )

        atomic_write(Path(destination), write, label="object_store.download")
        return info

    # -- checks -----------------------------------------------------------------------------------
    def check(self) -> None:
        """Prove the endpoint, the credentials and the bucket with one listing request."""
        self._call("LIST", "", lambda: next(iter(self._ob.list(self._store, chunk_size=1)), None))

    def check_conditional_writes(self) -> None:
        """The probe of the module docstring, once per store; raises ConditionalWritesUnsupportedError."""
        with self._probe_lock:
            if self._conditional_ok:
                return
            path = f"{PROBE_FOLDER}/{uuid.uuid4().hex}"
            first = self._call("PUT", path, self._ob.put, self._store, path, b"first", mode="create")["e_tag"]
            try:
                ignored = []
                try:
                    self._call("PUT", path, self._ob.put, self._store, path, b"second", mode="create")
                    ignored.append("If-None-Match: * (a second create replaced the object)")
                except self._ob.exceptions.AlreadyExistsError:
                    pass
                try:
                    wrong = '"' + uuid.uuid4().hex + '"'
                    self._call("PUT", path, self._ob.put, self._store, path, b"third", mode={"e_tag": wrong})
                    ignored.append("If-Match (a PUT with a wrong ETag replaced the object)")
                except self._ob.exceptions.PreconditionError:
                    pass
            except ObjectStoreError as exc:
                raise self._unsupported(f"a conditional PUT failed: {exc}") from None
            finally:
                self.delete(path)
            if ignored:
                raise self._unsupported(f"it ignores {' and '.join(ignored)}")
            log.debug("%s honours conditional writes (probe %s, first ETag %s)", self.url, path, first)
            self._conditional_ok = True

    def _unsupported(self, what: str) -> ConditionalWritesUnsupportedError:
        return ConditionalWritesUnsupportedError(
            f"{self.url}: the object store at {self.endpoint} does not honour conditional writes: {what}; "
            "two writers could both publish. Use a store that honours If-None-Match and If-Match on PUT (AWS S3 "
            "does since November 2024; upgrade an S3-compatible store to a version that does), or keep the index "
            "root on a local disk"
        )

    # -- errors -----------------------------------------------------------------------------------
    def _call(self, op: str, path: str, fn, *args, **kwargs):
        """``fn(*args, **kwargs)``, with obstore's failures turned into this module's errors.
        AlreadyExistsError and PreconditionError pass through: the conditional writes read them."""
        ex = self._ob.exceptions
        try:
            return fn(*args, **kwargs)
        except (ex.AlreadyExistsError, ex.PreconditionError):
            raise
        except ObjectStoreError:
            raise
        except (ex.BaseError, OSError, RuntimeError, ValueError) as exc:
            raise self._translate(op, path, exc) from None

    def _translate(self, op: str, path: str, exc: Exception) -> ObjectStoreError:
        text = str(exc)
        reason = _reason(text)
        where = self.where(path)
        if "NoSuchBucket" in text:
            return NoSuchBucketError(
                f"{self.url}: the bucket {self.location.bucket!r} does not exist at {self.endpoint}; create it "
                f"(aws s3 mb s3://{self.location.bucket}) or fix the bucket in the URL"
            )
        if isinstance(exc, FileNotFoundError):
            return ObjectNotFoundError(
                f"{where}: no such object ({op}); check the path, or whether a writer removed it"
            )
        if isinstance(
            exc, (self._ob.exceptions.PermissionDeniedError, self._ob.exceptions.UnauthenticatedError)
        ) or any(
            code in text for code in ("InvalidAccessKeyId", "SignatureDoesNotMatch", "AccessDenied", "403 Forbidden")
        ):
            return CredentialsRejectedError(
                f"{where}: the object store at {self.endpoint} refused the credentials ({reason}); check "
                "AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY (AWS_SESSION_TOKEN when temporary) and the bucket's policy"
            )
        if "error sending request" in text or "timed out" in text.lower() or "dns error" in text.lower():
            return StoreUnreachableError(
                f"{where}: cannot reach the object store at {self.endpoint} ({op}: {reason}); check that it is up "
                "and that AWS_ENDPOINT_URL names it (unset it for AWS S3)"
            )
        return ObjectStoreError(f"{where}: {op} failed at {self.endpoint}: {reason}")


def _reason(text: str) -> str:
    """One line out of obstore's message: the S3 error code and message when there is a body."""
    head = text.split("\n\nDebug source", 1)[0]
    if "<Code>" in head:
        code = head.split("<Code>", 1)[1].split("</Code>", 1)[0]
        message = head.split("<Message>", 1)[1].split("</Message>", 1)[0] if "<Message>" in head else ""
        return f"{code}: {message}".rstrip(": ")
    line = head.strip().splitlines()[0] if head.strip() else type(text).__name__
    return line.split(" - ", 1)[-1][:200]


def _info(meta: Mapping) -> ObjectInfo:
    return ObjectInfo(path=meta["path"], size=meta["size"], etag=meta.get("e_tag"), last_modified=meta["last_modified"])
