"""Names derived from a user's S3 key that must stay within a byte limit: shorten to a stable prefix plus a
short hash of the whole key, so two long keys never share a derived name.

Used for output keys in S3 (`vsr.pipeline.artifacts.output_keys`: S3 keys are at most 1024 bytes of UTF-8) and
for local file names in the outbox (`vsr.local.names`: a path component is at most 255 bytes).
"""

from __future__ import annotations

import hashlib

MAX_KEY_BYTES = 1024  # S3's limit on an object key, in bytes of UTF-8
HASH_CHARS = 12  # hex digits of sha256 (48 bits): no collision in any one user's bucket in practice
TAG_SEPARATOR = "~"
TAG_BYTES = len(TAG_SEPARATOR) + HASH_CHARS


def utf8_len(text: str) -> int:
    return len(text.encode("utf-8", "surrogatepass"))


def short_hash(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8", "surrogatepass")).hexdigest()[:HASH_CHARS]


def fit_utf8(text: str, max_bytes: int) -> str:
    """The longest prefix of `text` that is at most `max_bytes` of UTF-8 (never splits a character)."""
    return text.encode("utf-8", "surrogatepass")[: max(0, max_bytes)].decode("utf-8", "ignore")


def tagged(prefix: str, max_bytes: int, key: str) -> str:
    """`prefix` cut to fit `max_bytes` together with `~<short hash of key>`."""
    return f"{fit_utf8(prefix, max_bytes - TAG_BYTES)}{TAG_SEPARATOR}{short_hash(key)}"


def shorten(text: str, max_bytes: int, key: str) -> str:
    """`text` itself when it fits in `max_bytes`; else a prefix of it tagged with the hash of `key`."""
    return text if utf8_len(text) <= max_bytes else tagged(text, max_bytes, key)
