"""The S3 backend: `s3://bucket/prefix/<sha256>/<file>`, on AWS S3 or an S3-compatible server.

One object per file the adapter hash covers, named by its path in the folder, so an operator
can list and check an adapter with any S3 tool. Tested against MinIO's API through moto's
server; GCS works through its S3 interoperability endpoint (HMAC keys).

Uploads come from a private copy of the source folder, hashed after the copy, so the objects
are exactly the bytes that were hashed and checked. Reads are verified by the caller
(`adapters.artifacts.sync`) once every object is on local disk: a changed, added or missing
object changes the hash and the copy is refused.
"""

from __future__ import annotations

import os
import tempfile
import uuid
from pathlib import Path, PurePosixPath
from typing import Any

import boto3
import structlog
from boto3.exceptions import S3UploadFailedError
from botocore.config import Config
from botocore.exceptions import BotoCoreError, ClientError

from adapters.artifacts.store import ArtifactStoreUnavailableError, Check, StoredArtifact
from adapters.files import InvalidAdapterError, adapter_files, adapter_sha256, copy_adapter_files
from twinloop.errors import AdapterIntegrityError
from twinloop.settings import ArtifactSettings

log = structlog.get_logger(__name__)

_S3_ERRORS = (BotoCoreError, ClientError, S3UploadFailedError)


def s3_client(settings: ArtifactSettings) -> Any:
    """A boto3 S3 client for the configured endpoint; no network until the first call."""
    config = Config(
        connect_timeout=settings.s3_timeout_s,
        read_timeout=settings.s3_timeout_s,
        retries={"max_attempts": 3, "mode": "standard"},
        # Path-style: MinIO and other S3-compatible servers are rarely set up for bucket DNS.
        s3={"addressing_style": "path"} if settings.s3_endpoint_url else {},
        # boto3 >= 1.36 adds CRC checksums to every upload, which GCS interop and older MinIO
        # refuse; integrity is the adapter's sha256, checked after every read.
        request_checksum_calculation="when_required",
        response_checksum_validation="when_required",
    )
    key_id, secret = settings.s3_access_key_id, settings.s3_secret_access_key
    return boto3.session.Session().client(
        "s3",
        endpoint_url=settings.s3_endpoint_url,
        region_name=settings.s3_region,
        aws_access_key_id=key_id.get_secret_value() if key_id else None,
        aws_secret_access_key=secret.get_secret_value() if secret else None,
        config=config,
    )


class S3Store:
    kind = "s3"

    def __init__(self, *, bucket: str, prefix: str, client: Any) -> None:
        self.bucket = bucket
        self.prefix = prefix.strip("/")
        self._client = client

    @classmethod
    def from_url(cls, url: str, settings: ArtifactSettings) -> S3Store:
        bucket, _, prefix = url.removeprefix("s3://").partition("/")
        return cls(bucket=bucket, prefix=prefix, client=s3_client(settings))

    @property
    def location(self) -> str:
        return f"s3://{self.bucket}/{self.prefix}" if self.prefix else f"s3://{self.bucket}"

    def put(self, source: Path, check: Check | None = None) -> StoredArtifact:
        sha256 = adapter_sha256(source)
        with tempfile.TemporaryDirectory(prefix="twinloop-upload-") as tmp:
            snapshot = Path(tmp) / sha256
            snapshot.mkdir()
            copy_adapter_files(source, snapshot)
            if adapter_sha256(snapshot) != sha256:
                raise InvalidAdapterError(
                    f"{source} changed while it was being copied; register it once it is fully "
                    "written"
                )
            if check is not None:
                check(snapshot)
            self._upload(snapshot, sha256)
        return StoredArtifact(sha256=sha256, location=f"{self.location}/{sha256}")

    def fetch(self, sha256: str, dest: Path) -> None:
        base = self._key(sha256, "")
        keys = self._keys(base)
        if not keys:
            raise AdapterIntegrityError(
                f"adapter {sha256} is missing from the store {self.location}; it will not be loaded"
            )
        for key in keys:
            name = key[len(base) :]
            out = dest / _safe_name(sha256, name)
            out.parent.mkdir(parents=True, exist_ok=True)
            self._call(f"read {key}", self._client.download_file, self.bucket, key, str(out))
            out.chmod(0o644)
            with out.open("rb") as f:
                os.fsync(f.fileno())

    def local_folder(self, sha256: str) -> None:
        return None

    def check(self, *, create: bool = False) -> None:
        if create and not self._bucket_exists():
            log.info("adapter_store_creating_bucket", bucket=self.bucket)
            region = self._client.meta.region_name
            # us-east-1 is the one region S3 refuses a location constraint for.
            where = (
                {"CreateBucketConfiguration": {"LocationConstraint": region}}
                if region and region != "us-east-1"
                else {}
            )
            create_bucket = self._client.create_bucket
            self._call(f"create bucket {self.bucket}", create_bucket, Bucket=self.bucket, **where)
        key = self._key(f".twinloop-probe-{uuid.uuid4().hex}", "probe")
        put = self._client.put_object
        self._call(f"write {key}", put, Bucket=self.bucket, Key=key, Body=b"probe")
        try:
            read = self._call(f"read {key}", self._client.get_object, Bucket=self.bucket, Key=key)
            if read["Body"].read() != b"probe":
                raise ArtifactStoreUnavailableError(
                    f"the adapter store {self.location} gave back other bytes than were written"
                )
        finally:
            self._call(f"delete {key}", self._client.delete_object, Bucket=self.bucket, Key=key)

    def close(self) -> None:
        self._client.close()

    def _bucket_exists(self) -> bool:
        try:
            self._client.head_bucket(Bucket=self.bucket)
        except ClientError as e:
            if e.response.get("Error", {}).get("Code") in {"404", "NoSuchBucket", "NotFound"}:
                return False
            raise ArtifactStoreUnavailableError(
                f"the adapter store {self.location} failed to find bucket {self.bucket}: {e}"
            ) from e
        except BotoCoreError as e:
            raise ArtifactStoreUnavailableError(
                f"the adapter store {self.location} cannot be reached: {e}"
            ) from e
        return True

    def _upload(self, snapshot: Path, sha256: str) -> None:
        names = {name: path for name, path in adapter_files(snapshot)}
        for name, path in names.items():
            key = self._key(sha256, name)
            self._call(f"write {key}", self._client.upload_file, str(path), self.bucket, key)
        # Objects a tampering hand added under this hash would change what a read hashes to.
        base = self._key(sha256, "")
        strays = [key for key in self._keys(base) if key[len(base) :] not in names]
        for key in strays:
            log.warning("adapter_store_removing_stray_object", key=key, sha256=sha256)
            self._call(f"delete {key}", self._client.delete_object, Bucket=self.bucket, Key=key)

    def _keys(self, base: str) -> list[str]:
        def list_all() -> list[str]:
            pages = self._client.get_paginator("list_objects_v2").paginate(
                Bucket=self.bucket, Prefix=base
            )
            return [
                item["Key"]
                for page in pages
                for item in page.get("Contents", [])
                if not item["Key"].endswith("/")  # folder markers some tools create
            ]

        keys: list[str] = self._call(f"list {base}", list_all)
        return sorted(keys)

    def _key(self, sha256: str, name: str) -> str:
        return f"{self.prefix}/{sha256}/{name}" if self.prefix else f"{sha256}/{name}"

    def _call(self, what: str, function: Any, *args: Any, **kwargs: Any) -> Any:
        try:
            return function(*args, **kwargs)
        except _S3_ERRORS as e:
            raise ArtifactStoreUnavailableError(
                f"the adapter store {self.location} failed to {what}: {e}"
            ) from e


def _safe_name(sha256: str, name: str) -> str:
    """An object's name inside the adapter folder, refused if it could land outside it."""
    path = PurePosixPath(name)
    if not name or path.is_absolute() or any(part in {"", ".", ".."} for part in name.split("/")):
        raise AdapterIntegrityError(
            f"adapter {sha256} in the store holds an object named {name!r}, which is no file "
            "inside an adapter folder; it will not be loaded"
        )
    return str(path)
