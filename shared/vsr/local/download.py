"""Download one S3 object to a local path whole or not at all, whatever the path's length.

The object is written under a short hidden name in the target's folder (`vsr.local.names.partial_name`:
s3transfer adds `.<8 random characters>` to the name it is given, which a 250-byte name cannot take), then
renamed: a watcher of the folder sees whole files only, and a failed download leaves nothing behind.
"""

from __future__ import annotations

from pathlib import Path

from vsr.aws import clients
from vsr.local.names import partial_name


def download(bucket: str, key: str, target: Path) -> Path:
    target.parent.mkdir(parents=True, exist_ok=True)
    partial = target.with_name(partial_name(target.name))
    try:
        clients.s3().download_file(bucket, key, str(partial))
        partial.replace(target)
    except BaseException:
        partial.unlink(missing_ok=True)
        raise
    return target
