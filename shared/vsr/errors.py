"""Error classification shared by every stage.

A `PermanentError` means retrying cannot help (bad input, unsupported codec, limit exceeded): the job fails
once and its `reason` is stored for the user. A `TransientError` (throttling, network) is retried with
backoff and, inside SQS, by redelivery. Anything unclassified is treated as transient by the workers so a
bug never silently drops work: it ends in the dead-letter queue where `vsr redrive` can replay it.
"""

from __future__ import annotations


class VsrError(Exception):
    """Base class of every error this project raises on purpose."""

    code: str = "error"

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason

    def to_dict(self) -> dict[str, str]:
        return {"code": self.code, "reason": self.reason}


class PermanentError(VsrError):
    code = "permanent"


class TransientError(VsrError):
    code = "transient"


# --- bad input (all permanent) ---------------------------------------------------------------------
class InputError(PermanentError):
    code = "bad_input"


class EmptyInputError(InputError):
    code = "empty_input"


class NotAVideoError(InputError):
    code = "not_a_video"


class NoVideoStreamError(InputError):
    code = "no_video_stream"


class CorruptInputError(InputError):
    code = "corrupt_input"


class UnsupportedCodecError(InputError):
    code = "unsupported_codec"


class UnsafeInputError(InputError):
    """The upload asks FFmpeg for a demuxer or protocol that could read other files or URLs."""

    code = "unsafe_input"


class GeometryChangeError(InputError):
    """A frame's size, pixel format or sample aspect differs from the job's first frame where the settings
    (`input.geometry_changes` = "fail") or the code path cannot convert it."""

    code = "geometry_change"


class LimitExceededError(InputError):
    code = "limit_exceeded"


class CostLimitError(LimitExceededError):
    """The job's predicted cost is above `limits.max_job_cost_usd`."""

    code = "cost_limit"


class BadRequestError(InputError):
    """The upload asks for something this service does not offer (e.g. an unknown `vsr-plan` metadata value)."""

    code = "bad_request"


# --- retries ---------------------------------------------------------------------------------------
class DeadLetteredError(PermanentError):
    """A stage's message ran out of attempts and is kept in its dead-letter queue; `vsr redrive` can return
    the job to work (the only FAILED state that is not final: see vsr.pipeline.jobs.transitions)."""

    code = "dead_lettered"


# --- models ----------------------------------------------------------------------------------------
class ModelError(PermanentError):
    code = "model_error"


class UnsupportedModelError(ModelError):
    """The converter met a layer type or weight encoding it does not implement."""

    code = "unsupported_model"
