"""Local file names for S3 keys (the `vsr serve` outbox), for any key S3 accepts.

- The path is relative and stays inside the outbox: empty, `.` and `..` components are dropped.
- Characters a terminal or a filesystem should not get (NUL, other C0/C1 control characters) become `_`.
- Every component fits NAME_MAX bytes. Files are written under a short hidden name first (`partial_name`),
  so what a download adds to that name (s3transfer writes `<path>.<8 random characters>`) never counts.
- A key whose path could not be kept as it is (dropped or replaced characters, a name cut short) gets a tag,
  `~<short hash>`, in its file name, before the file's short suffixes (`.upscaled-x2.mp4`, `.error.json`): keys
  that differ only in what was dropped or cut still get distinct names, and those files of one job (video,
  report, preview) that need a tag share it (a preview's longer suffix may need one where the video's name
  still fits). Keys kept as they are get no tag; one that already ends like a tag gets one anyway, so a kept
  name never equals a tagged one.

The original key stays in what is delivered (the report's `input.key`, the error files' `input`).
"""

from __future__ import annotations

import re
import unicodedata
from pathlib import PurePosixPath

from vsr import keys

NAME_MAX = 255  # bytes in one path component (ext4, xfs, btrfs, APFS, NTFS in UTF-16 units)
UNNAMED = "unnamed"
REPLACEMENT = "_"
_SUFFIX = r"\.[A-Za-z0-9_-]{1,16}"
# \Z, not $: `$` also matches before a final newline, which would drop a key's trailing "\n" from its name
_TAIL = re.compile(rf"(?:{_SUFFIX}){{0,4}}\Z")  # the short suffixes kept verbatim at the end of a name
_LOOKS_TAGGED = re.compile(rf"{re.escape(keys.TAG_SEPARATOR)}[0-9a-f]{{{keys.HASH_CHARS}}}(?:{_SUFFIX})*\Z")


DOWNLOAD_TEMP_BYTES = 9  # s3transfer's download_file writes `<path>.<8 random characters>`, then renames


def partial_name(name: str) -> str:
    """The hidden name a file is written under until complete (a watcher of the outbox sees whole files):
    short whatever `name` is, and distinct per name."""
    return f".{keys.short_hash(name)}.part"


def _unsafe(char: str) -> bool:
    return unicodedata.category(char) in ("Cc", "Cs")  # control characters (NUL included), lone surrogates


def _clean(text: str) -> str:
    return "".join(REPLACEMENT if _unsafe(c) else c for c in text)


def printable(text: str) -> str:
    """`text` for a terminal line: control characters escaped (`\\x1b`), so a key cannot drive the terminal."""
    return "".join(c.encode("unicode_escape").decode("ascii") if _unsafe(c) else c for c in text)


def _directory(component: str) -> tuple[str, bool]:
    """(local directory name, whether it differs from the key's component)."""
    clean = keys.shorten(_clean(component), NAME_MAX, component)
    return clean, clean != component


def local_path(key: str) -> PurePosixPath:
    """The relative local path for `key` (see the module doc); the same key always gives the same path."""
    *folders, name = key.split("/")
    changed = False
    directories = []
    for folder in folders:
        if folder in ("", ".", ".."):
            changed = True
            continue
        directory, differs = _directory(folder)
        directories.append(directory)
        changed |= differs
    if name in ("", ".", ".."):
        changed, name = True, UNNAMED
    tail = _TAIL.search(name)
    assert tail is not None  # the pattern matches the empty string at the end
    suffixes = tail.group()
    stem = _clean(name[: tail.start()])
    changed |= stem != name[: tail.start()]
    if changed or keys.utf8_len(stem + suffixes) > NAME_MAX or _LOOKS_TAGGED.search(name):
        # the tag hashes the whole key but its short suffixes: one job's video, report and preview share it
        untagged = key[: len(key) - len(suffixes)] if suffixes else key
        stem = keys.tagged(stem, NAME_MAX - keys.utf8_len(suffixes), untagged)
    return PurePosixPath(*directories, stem + suffixes)
