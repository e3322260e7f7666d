"""Which failures are permanent at their first occurrence: a table of real causes (an input or a fault) and
the class each must get. Permanent means the job fails at once with a reason; transient means backoff and
retry, then FAILED with a reason after the last attempt (vsr.pipeline.retry)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import av
import botocore.exceptions
import numpy as np
import pytest

from tests import clips
from vsr.aws.resources import ConfigurationError
from vsr.errors import CorruptInputError, GeometryChangeError, PermanentError, TransientError, UnsupportedCodecError
from vsr.failures import classify
from vsr.media.decode import decode_window
from vsr.media.encode import SegmentEncoder
from vsr.media.geometry import FAIL, FrameConformer
from vsr.media.probe import probe
from vsr.settings import get_settings

PERMANENT, TRANSIENT = "permanent", "transient"


def _decode_everything(path: Path) -> None:
    """What a worker's decoder does with the raw file (no prior checks by the probe)."""
    with av.open(str(path)) as container:
        for _ in container.decode(video=0):
            pass


def _raised(cause: Callable[[], object]) -> BaseException:
    with pytest.raises(BaseException) as caught:
        cause()
    return caught.value


def _wrong_size_frame(directory: Path) -> None:
    path = clips.make_vfr_mp4(directory)
    info = probe(path)
    with SegmentEncoder(directory / "x.nut", info=info, scale=2, encode=get_settings().encode_settings) as encoder:
        encoder.write(np.zeros((info.height * 2 - 2, info.width * 2, 3), np.uint8), info.pts[0])


def _geometry_change_refused(directory: Path) -> None:
    path = clips.make_geometry_changes(directory / "switch.ts", [(176, 144, "yuv420p", 3), (160, 128, "yuv420p", 3)])
    info = probe(path)
    for _ in decode_window(path, info.pts[0], info.frame_count, FrameConformer(info.first_geometry(), FAIL)):
        pass


def _throttled() -> None:
    raise botocore.exceptions.ClientError(
        {"Error": {"Code": "ThrottlingException", "Message": "Rate exceeded"}}, "UpdateItem"
    )


def _unreachable() -> None:
    raise botocore.exceptions.EndpointConnectionError(endpoint_url="https://sqs.eu-west-1.amazonaws.com")


def _injected_fault() -> None:  # what vsr.local.faults raises inside the engine
    raise TransientError("injected: the GPU fell off the bus")


def _broken_model() -> None:  # the deployed model cannot be loaded: an operator fixes it, then redrives
    raise ConfigurationError("the deployed model cannot be used: truncated weights")


def _network_reset_inside_ffmpeg() -> None:  # a ranged S3 read that failed mid-decode, as FFmpeg reports it
    raise av.error.ConnectionResetError(104, "Connection reset by peer")


def _bug() -> None:
    raise RuntimeError("unexpected None")


CAUSES: list[tuple[str, Callable[[Path], object], str, type[BaseException] | None]] = [
    # the input itself: the same bytes fail the same way on every attempt
    ("truncated mp4, decoded", lambda d: _decode_everything(clips.make_truncated_mp4(d)), PERMANENT, CorruptInputError),
    ("text file named .mp4", lambda d: _decode_everything(clips.make_not_a_video(d)), PERMANENT, CorruptInputError),
    (
        "codec FFmpeg lacks",
        lambda d: _decode_everything(clips.make_unknown_codec_avi(d)),
        PERMANENT,
        UnsupportedCodecError,
    ),
    ("frame of the wrong size at the encoder", _wrong_size_frame, PERMANENT, GeometryChangeError),
    ("size change with geometry_changes=fail", _geometry_change_refused, PERMANENT, GeometryChangeError),
    # the world around it: may pass next time
    ("injected worker fault", lambda d: _injected_fault(), TRANSIENT, None),
    ("DynamoDB/SQS throttling", lambda d: _throttled(), TRANSIENT, None),
    ("endpoint unreachable", lambda d: _unreachable(), TRANSIENT, None),
    ("connection reset inside FFmpeg", lambda d: _network_reset_inside_ffmpeg(), TRANSIENT, None),
    ("broken model deployment", lambda d: _broken_model(), TRANSIENT, None),
    ("a bug", lambda d: _bug(), TRANSIENT, None),
]


@pytest.mark.parametrize(("cause", "make", "expected", "kind"), CAUSES, ids=[c[0] for c in CAUSES])
def test_each_real_cause_gets_its_class(
    cause: str, make: Callable[[Path], object], expected: str, kind: type[BaseException] | None, tmp_path: Path
) -> None:
    error = _raised(lambda: make(tmp_path))
    verdict = classify(error)
    assert (PERMANENT if isinstance(verdict, PermanentError) else TRANSIENT) == expected, (cause, repr(error))
    if kind is not None:
        assert isinstance(verdict, kind), repr(verdict)
        assert verdict.reason  # a user-facing sentence, stored as the job's reason
    else:
        assert verdict is error  # retried as it is
