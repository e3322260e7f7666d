"""Which failures will happen again on every attempt: those are permanent at their first occurrence.

A stage that catches an unexpected exception asks `classify` before it retries. Retrying an error that depends
only on the input (FFmpeg cannot decode it, a codec or feature it does not support, a frame whose geometry
the pipeline cannot take) costs every attempt's backoff and ends in the dead-letter queue anyway; the user
should hear the reason at once. Everything else (throttling, network, a broken deployment, a bug) stays
transient: it is retried with backoff and, after the last attempt, fails the job with a reason while its
message waits in the dead-letter queue for `vsr redrive`.

tests/unit/test_failures.py holds the table of real causes (an input or a fault -> its class).
"""

from __future__ import annotations

import av

from vsr.errors import CorruptInputError, PermanentError, UnsupportedCodecError, VsrError

# FFmpeg errors about the data itself: the same bytes fail the same way next time.
_CORRUPT = (av.error.InvalidDataError, av.error.EOFError)
# FFmpeg lacks the codec, demuxer or feature ("patch welcome"): no retry adds it.
_UNSUPPORTED = (
    av.error.DecoderNotFoundError,
    av.error.DemuxerNotFoundError,
    av.error.PatchWelcomeError,
)


def classify(error: BaseException) -> BaseException:
    """The error to act on: a PermanentError (with a user-facing reason) when retrying cannot help, else
    `error` itself (retried). Errors this project raised on purpose keep their own class."""
    if isinstance(error, VsrError):
        return error
    if isinstance(error, _UNSUPPORTED):
        return _chain(UnsupportedCodecError(f"the video uses something FFmpeg cannot decode ({_what(error)})"), error)
    if isinstance(error, _CORRUPT):
        return _chain(CorruptInputError(f"the video file is damaged or incomplete ({_what(error)})"), error)
    return error


def is_permanent(error: BaseException) -> bool:
    return isinstance(classify(error), PermanentError)


def _what(error: BaseException) -> str:
    return f"{type(error).__name__}: {error}"


def _chain(new: PermanentError, cause: BaseException) -> PermanentError:
    new.__cause__ = cause
    return new
