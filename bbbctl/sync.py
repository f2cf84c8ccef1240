"""Upload templates, scripts and the wheel to S3, only what changed, by SHA-256.

The checksum lives in each object's metadata (``x-amz-meta-sha256``): S3's
ETag is an MD5 only for single-part, non-KMS uploads, so it cannot be trusted
to compare. Deciding what to upload is a pure diff of two checksum maps.
"""

from __future__ import annotations

import asyncio
import hashlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from botocore.exceptions import ClientError

from bbbcore import aws, logs

if TYPE_CHECKING:
    from types_aiobotocore_s3.client import S3Client
    from types_aiobotocore_s3.type_defs import ObjectIdentifierTypeDef

log = logs.get(__name__)

CHECKSUM_KEY = "sha256"
_CONCURRENCY = 8
_CONTENT_TYPES = {
    ".yaml": "application/yaml",
    ".json": "application/json",
    ".sh": "text/x-shellscript",
}


@dataclass(frozen=True, slots=True)
class LocalFile:
    """A file to sync and the key it goes to."""

    key: str
    path: Path
    sha256: str


@dataclass(frozen=True, slots=True)
class SyncPlan:
    """What a sync does: upload new or changed files, delete keys no longer local."""

    upload: tuple[LocalFile, ...]
    unchanged: tuple[LocalFile, ...]
    stale: tuple[str, ...]


def plan(local: Sequence[LocalFile], remote: Mapping[str, str | None]) -> SyncPlan:
    """Diff local files against remote checksums (None: object without a checksum)."""
    upload = tuple(f for f in local if remote.get(f.key) != f.sha256 or f.key not in remote)
    unchanged = tuple(f for f in local if f not in upload)
    keys = {f.key for f in local}
    stale = tuple(sorted(k for k in remote if k not in keys))
    return SyncPlan(upload, unchanged, stale)


def sha256_file(path: Path) -> str:
    """Hex SHA-256 of a file, read in chunks."""
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def collect(root: Path, patterns: Sequence[str], prefix: str) -> list[LocalFile]:
    """Every regular file matching the patterns under ``root``, keyed by prefix + relative path."""
    seen: dict[str, LocalFile] = {}
    for pattern in patterns:
        for path in sorted(root.glob(pattern)):
            if path.is_file():
                key = prefix + path.relative_to(root).as_posix()
                seen[key] = LocalFile(key, path, sha256_file(path))
    return sorted(seen.values(), key=lambda f: f.key)


async def remote_checksums(s3: S3Client, bucket: str, prefix: str) -> dict[str, str | None]:
    """Key -> stored SHA-256 (None when the object carries none) of every object under prefix."""
    keys: list[str] = []
    paginator = s3.get_paginator("list_objects_v2")
    async for page in paginator.paginate(Bucket=bucket, Prefix=prefix):
        keys.extend(obj["Key"] for obj in page.get("Contents", []) if "Key" in obj)
    limit = asyncio.Semaphore(_CONCURRENCY)

    async def head(key: str) -> tuple[str, str | None]:
        async with limit:
            meta = await s3.head_object(Bucket=bucket, Key=key)
        return key, meta.get("Metadata", {}).get(CHECKSUM_KEY)

    return dict(await asyncio.gather(*(head(k) for k in keys)))


async def apply(s3: S3Client, bucket: str, todo: SyncPlan) -> None:
    """Upload what changed (with its checksum), then delete stale keys."""
    limit = asyncio.Semaphore(_CONCURRENCY)

    async def put(item: LocalFile) -> None:
        async with limit:
            body = await asyncio.to_thread(item.path.read_bytes)
            await s3.put_object(
                Bucket=bucket,
                Key=item.key,
                Body=body,
                ContentType=_CONTENT_TYPES.get(item.path.suffix, "application/octet-stream"),
                Metadata={CHECKSUM_KEY: item.sha256},
            )
        log.info("uploaded", key=item.key, bytes=len(body))

    await asyncio.gather(*(put(f) for f in todo.upload))
    await delete_keys(s3, bucket, todo.stale)


async def delete_keys(s3: S3Client, bucket: str, keys: Sequence[str]) -> None:
    """Delete keys (the current version of each)."""
    await _delete(s3, bucket, [{"Key": k} for k in keys])


async def empty_bucket(s3: S3Client, bucket: str, prefix: str = "") -> int:
    """Delete every object version under prefix (all of an unversioned bucket too); the count."""
    count = 0
    paginator = s3.get_paginator("list_object_versions")
    try:
        async for page in paginator.paginate(Bucket=bucket, Prefix=prefix):
            entries = [*page.get("Versions", []), *page.get("DeleteMarkers", [])]
            batch: list[ObjectIdentifierTypeDef] = [
                {"Key": v["Key"], "VersionId": v["VersionId"]}
                for v in entries
                if "Key" in v and "VersionId" in v
            ]
            await _delete(s3, bucket, batch)
            count += len(batch)
    except ClientError as exc:
        if aws.error_code(exc) == "NoSuchBucket":
            return count
        raise
    return count


async def _delete(s3: S3Client, bucket: str, objects: Sequence[ObjectIdentifierTypeDef]) -> None:
    # DeleteObjects takes at most 1,000 keys and reports failures per key
    # with HTTP 200, so errors must be read from the body.
    for start in range(0, len(objects), 1000):
        batch = list(objects[start : start + 1000])
        result = await s3.delete_objects(Bucket=bucket, Delete={"Objects": batch, "Quiet": True})
        if result.get("Errors"):
            first = result["Errors"][0]
            raise RuntimeError(
                f"cannot delete s3://{bucket}/{first.get('Key')}: {first.get('Message')}"
            )
