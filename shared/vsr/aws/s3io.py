"""A seekable, read-only file object over one S3 object, served by bounded ranged GETs.

PyAV (FFmpeg) reads through Python file objects with small reads and frequent seeks (the moov atom at the end
of an mp4, keyframe seeks). Each read is served from 1 MiB blocks fetched with `Range: bytes=a-b` and kept in
a small LRU, so decoding a window touches a few MiB of a large file instead of downloading it. Sequential
scans (a demux pass over the whole file) are detected and served with up to `readahead_blocks` blocks per
GET, which cuts the request count (and latency) of a multi-GB probe by that factor; each GET stays bounded.
FFmpeg's own http protocol is not used: it sends open-ended ranges and has no timeout by default.

When the caller knows the object's version id (versioned bucket) or ETag, every GET is pinned to it, so an
object replaced mid-read raises `InputChangedError` instead of mixing bytes of two uploads.
"""

from __future__ import annotations

import io
import threading
from collections import OrderedDict
from typing import Any

from vsr.aws import clients
from vsr.aws.clients import error_code, http_status
from vsr.errors import PermanentError
from vsr.logs import get_logger

log = get_logger(__name__)

DEFAULT_BLOCK_SIZE = 1 << 20
DEFAULT_CACHE_BLOCKS = 8
DEFAULT_READAHEAD_BLOCKS = 4  # sequential scans (the probe's demux pass) fetch up to 4 blocks per GET


class InputChangedError(PermanentError):
    code = "input_changed"


class InputMissingError(PermanentError):
    code = "input_missing"


def _classify(exc: Exception, bucket: str, key: str) -> Exception | None:
    """The user's input changed or vanished (permanent); None leaves the error to clients.call."""
    code, status = error_code(exc), http_status(exc)
    if code == "PreconditionFailed" or status == 412:
        return InputChangedError(f"s3://{bucket}/{key} was replaced while it was being read")
    if code in ("NoSuchKey", "NoSuchVersion", "404", "NotFound") or status == 404:
        return InputMissingError(f"s3://{bucket}/{key} does not exist (deleted after upload?)")
    return None


class S3RangeReader(io.RawIOBase):
    """`io.RawIOBase` over s3://bucket/key; `bytes_fetched` and `requests` count what was actually transferred."""

    def __init__(
        self,
        client: Any,
        bucket: str,
        key: str,
        version_id: str | None = None,
        size: int | None = None,
        block_size: int = DEFAULT_BLOCK_SIZE,
        *,
        etag: str | None = None,
        cache_blocks: int = DEFAULT_CACHE_BLOCKS,
        readahead_blocks: int = DEFAULT_READAHEAD_BLOCKS,
    ) -> None:
        super().__init__()
        if block_size <= 0 or cache_blocks <= 0:
            raise ValueError("block_size and cache_blocks must be positive")
        self._client = client
        self.bucket = bucket
        self.key = key
        self.version_id = version_id or None
        self.etag = etag or None
        self.block_size = block_size
        self._cache_blocks = cache_blocks
        self._max_run = max(1, min(readahead_blocks, cache_blocks // 2))
        self._run = 1  # blocks per GET, doubled while reads stay sequential
        self._next_block = -1  # the block after the last one fetched
        self._blocks: OrderedDict[int, bytes] = OrderedDict()
        self._pos = 0
        self._lock = threading.Lock()  # PyAV may read from its own threads; keep block cache coherent
        self.bytes_fetched = 0
        self.requests = 0
        self.metadata: dict[str, str] = {}  # user metadata, known when the size came from a HEAD
        self.size = size if size is not None else self._head_size()
        self.name = f"s3://{bucket}/{key}"

    # --- S3 --------------------------------------------------------------------------------------
    def _pin(self) -> dict[str, str]:
        pin: dict[str, str] = {}
        if self.version_id:
            pin["VersionId"] = self.version_id
        elif self.etag:
            pin["IfMatch"] = self.etag if self.etag.startswith('"') else f'"{self.etag}"'
        return pin

    def _head_size(self) -> int:
        def head() -> dict[str, Any]:
            self.requests += 1
            return self._client.head_object(Bucket=self.bucket, Key=self.key, **self._pin())

        response = clients.call(
            f"HEAD s3://{self.bucket}/{self.key}", head, on_error=lambda exc: _classify(exc, self.bucket, self.key)
        )
        self.metadata = dict(response.get("Metadata") or {})
        return int(response["ContentLength"])

    def _fetch(self, index: int, count: int) -> bytes:
        """Blocks [index, index + count) in one ranged GET (the last block may be short)."""
        start = index * self.block_size
        end = min(self.size, start + count * self.block_size) - 1

        def get() -> bytes:
            self.requests += 1
            response = self._client.get_object(
                Bucket=self.bucket, Key=self.key, Range=f"bytes={start}-{end}", **self._pin()
            )
            # reading the body is inside the retry: a stream that breaks mid-block is retried as a whole
            return bytes(response["Body"].read())

        data = clients.call(
            f"ranged GET s3://{self.bucket}/{self.key}", get, on_error=lambda exc: _classify(exc, self.bucket, self.key)
        )
        if len(data) != end - start + 1:
            raise InputChangedError(
                f"s3://{self.bucket}/{self.key}: expected {end - start + 1} bytes at {start}, got {len(data)}"
            )
        self.bytes_fetched += len(data)
        return data

    def _block(self, index: int) -> bytes:
        block = self._blocks.get(index)
        if block is not None:
            self._blocks.move_to_end(index)
            return block
        self._run = min(self._max_run, self._run * 2) if index == self._next_block else 1
        last_block = (self.size - 1) // self.block_size
        count = max(1, min(self._run, last_block - index + 1))
        data = self._fetch(index, count)
        for i in range(count):
            self._blocks[index + i] = data[i * self.block_size : (i + 1) * self.block_size]
            self._blocks.move_to_end(index + i)
        self._next_block = index + count
        while len(self._blocks) > self._cache_blocks:
            self._blocks.popitem(last=False)
        return self._blocks[index]

    # --- io.RawIOBase ----------------------------------------------------------------------------
    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def tell(self) -> int:
        return self._pos

    def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:
        if whence == io.SEEK_SET:
            target = offset
        elif whence == io.SEEK_CUR:
            target = self._pos + offset
        elif whence == io.SEEK_END:
            target = self.size + offset
        else:
            raise ValueError(f"invalid whence {whence}")
        if target < 0:
            raise ValueError(f"negative seek position {target}")
        self._pos = target  # past the end is allowed (reads return b"")
        return self._pos

    def readinto(self, buffer: Any) -> int:
        view = memoryview(buffer).cast("B")
        wanted = min(len(view), max(0, self.size - self._pos))
        done = 0
        with self._lock:
            while done < wanted:
                index, offset = divmod(self._pos, self.block_size)
                block = self._block(index)
                take = min(wanted - done, len(block) - offset)
                view[done : done + take] = block[offset : offset + take]
                done += take
                self._pos += take
        return done

    def readall(self) -> bytes:
        chunks = []
        while chunk := self.read(self.block_size):
            chunks.append(chunk)
        return b"".join(chunks)

    def stats(self) -> dict[str, int]:
        return {"bytes_fetched": self.bytes_fetched, "requests": self.requests, "size": self.size}
