"""The files themselves: uploads, batch inputs and generated output/error files, on S3.

boto3, called in a thread, rather than aiobotocore: S3 is touched a handful of times per batch
(the upload, one read when the batch is prepared, two writes when it is finalized, downloads),
never per line, so an async S3 client would save nothing measurable while aiobotocore pins
botocore to a narrow range that moves with every release (docs/async.md).
Uploads stream: parts of PART_BYTES go to S3 as they arrive (multipart upload), so a 100 MiB
batch file never sits whole in the gateway's memory.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import boto3
from botocore.config import Config

from vocabulary.pipelines import FileStore

PART_BYTES = 8 * 2**20  # S3's minimum part is 5 MiB (all but the last)


class S3Files:
    def __init__(self, cfg: FileStore) -> None:
        self.bucket = cfg.bucket
        self.prefix = cfg.prefix
        self._s3 = boto3.client(
            "s3",
            region_name=cfg.region,
            endpoint_url=cfg.endpoint_url,
            config=Config(retries={"max_attempts": 5, "mode": "standard"}, max_pool_connections=32),
        )

    def _key(self, file_id: str) -> str:
        return f"{self.prefix}{file_id}"

    async def put(self, file_id: str, data: bytes) -> None:
        await asyncio.to_thread(
            self._s3.put_object, Bucket=self.bucket, Key=self._key(file_id), Body=data
        )

    async def get(self, file_id: str) -> bytes:
        def read() -> bytes:
            return self._s3.get_object(Bucket=self.bucket, Key=self._key(file_id))["Body"].read()

        return await asyncio.to_thread(read)

    async def chunks(self, file_id: str, size: int = 2**20) -> AsyncIterator[bytes]:
        """The file's bytes, streamed."""
        obj = await asyncio.to_thread(
            self._s3.get_object, Bucket=self.bucket, Key=self._key(file_id)
        )
        body = obj["Body"]
        try:
            while chunk := await asyncio.to_thread(body.read, size):
                yield chunk
        finally:
            body.close()

    async def delete(self, file_id: str) -> None:
        await asyncio.to_thread(self._s3.delete_object, Bucket=self.bucket, Key=self._key(file_id))

    def upload(self, file_id: str) -> Upload:
        return Upload(self, file_id)


class Upload:
    """A streamed upload: `write` chunks as they arrive, then `finish` (or `abort`)."""

    def __init__(self, files: S3Files, file_id: str) -> None:
        self.files = files
        self.key = files._key(file_id)
        self.size = 0
        self._buf = bytearray()
        self._upload_id: str | None = None
        self._parts: list[dict[str, Any]] = []

    async def write(self, chunk: bytes) -> None:
        self._buf += chunk
        self.size += len(chunk)
        if len(self._buf) >= PART_BYTES:
            await self._part(bytes(self._buf))
            self._buf.clear()

    async def _part(self, data: bytes) -> None:
        s3, bucket = self.files._s3, self.files.bucket
        if self._upload_id is None:
            created = await asyncio.to_thread(
                s3.create_multipart_upload, Bucket=bucket, Key=self.key
            )
            self._upload_id = created["UploadId"]
        n = len(self._parts) + 1
        done = await asyncio.to_thread(
            s3.upload_part,
            Bucket=bucket,
            Key=self.key,
            UploadId=self._upload_id,
            PartNumber=n,
            Body=data,
        )
        self._parts.append({"PartNumber": n, "ETag": done["ETag"]})

    async def finish(self) -> None:
        s3, bucket = self.files._s3, self.files.bucket
        if self._upload_id is None:  # small: one PUT
            await asyncio.to_thread(
                s3.put_object, Bucket=bucket, Key=self.key, Body=bytes(self._buf)
            )
            return
        if self._buf:
            await self._part(bytes(self._buf))
        await asyncio.to_thread(
            s3.complete_multipart_upload,
            Bucket=bucket,
            Key=self.key,
            UploadId=self._upload_id,
            MultipartUpload={"Parts": self._parts},
        )

    async def abort(self) -> None:
        if self._upload_id is not None:
            await asyncio.to_thread(
                self.files._s3.abort_multipart_upload,
                Bucket=self.files.bucket,
                Key=self.key,
                UploadId=self._upload_id,
            )
