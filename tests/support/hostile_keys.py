"""Object keys S3 accepts but a naive drop box trips over, drawn reproducibly from a seed.

S3 takes any UTF-8 up to 1024 bytes as a key. The draws mix unicode (accents, combining marks, CJK, emoji,
right-to-left overrides, zero-width characters), spaces, `%`, `+`, `..`, leading and repeated slashes, control
characters and lengths up to the limit. One character is left out: LF. moto's server answers 404 to a PUT
whose key holds it (measured: every other C0 control, DEL and C1 controls are stored), so it cannot be tested
here. `FIXED` are the cases a draw must always include; `draw` adds random ones.
"""

from __future__ import annotations

import random

from vsr import keys

MAX_KEY_BYTES = keys.MAX_KEY_BYTES
UNTESTABLE = "\n"  # see the module doc

PIECES = (
    "/", "//", "///", "..", "../", "./", ".", "%", "%2F", "%25", "%00", "+", "++", " ", "  ", "\t", "\x00", "\x01",
    "\x1b[31m", "\x7f", "\r", "\u0085", "é", "e\u0301", "ß", "日本語", "한국어", "😀", "👨\u200d👩\u200d👧", "\u202e",
    "\u200b", "\ufeff", "~", "-", "'", '"', "\\", "$(x)", "`", "*", "?", "#", "&", "=", ":", ";", "<", ">", "|",
    ".mp4", ".mov", ".upscaled-x2", ".error.json", ".part",
)  # fmt: skip
WORDS = ("clip", "video", "Film", "a", "z9", "holiday", "ÉTÉ", "видео", "视频", "فيديو")

# Always in a draw: the keys, the limits, and the names that normalise alike.
FIXED = (
    "drop/../../../../tmp/x.mp4",
    "/abs/evil.mp4",
    "..%2F..%2Fx.mp4",
    "hostile/" + "n" * 300 + ".mp4",  # a 300-byte name
    "deep/" + "d" * 1015 + ".mp4",  # exactly 1024 bytes
    "//double//slash.mp4",
    "hostile/x.mp4/..",
    "hostile/+ %2B %25 100%.mp4",
    "hostile/ctl\x00\x01\x1b[2J\x7f.mp4",
)


def is_testable(key: str) -> bool:
    size = len(key.encode())
    return 0 < size <= MAX_KEY_BYTES and UNTESTABLE not in key


def _one(rng: random.Random) -> str:
    target = rng.choice((16, 64, 200, 300, 700, MAX_KEY_BYTES))
    parts: list[str] = []
    while len("".join(parts).encode()) < target and len(parts) < 400:
        parts.append(rng.choice(PIECES) if rng.random() < 0.6 else rng.choice(WORDS))
        if rng.random() < 0.05:
            parts.append("x" * rng.randint(50, 300))
    key = keys.fit_utf8("".join(parts), MAX_KEY_BYTES - 4)
    if rng.random() < 0.7:
        key += rng.choice((".mp4", ".mov", ".MP4", ""))
    return key.replace(UNTESTABLE, " ") or "x"


def draw(seed: int, count: int, *, fixed: bool = True) -> list[str]:
    """`count` distinct keys (the FIXED ones first when `fixed`), every one accepted by S3 and by moto."""
    rng = random.Random(seed)
    drawn = list(FIXED[:count]) if fixed else []
    while len(drawn) < count:
        key = _one(rng)
        if is_testable(key) and key not in drawn:
            drawn.append(key)
    return drawn
