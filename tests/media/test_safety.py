"""Bad uploads are refused with the right error type and a message a user understands."""

from __future__ import annotations

from pathlib import Path

import av
import pytest

from tests import clips
from vsr import errors
from vsr.media.probe import probe
from vsr.media.safety import open_input

EXPECTED = {
    "zero_bytes": (errors.EmptyInputError, "empty"),
    "not_a_video": (errors.NotAVideoError, "not a video file"),
    "audio_only": (errors.NoVideoStreamError, "no video stream"),
    "truncated_mp4": (errors.CorruptInputError, "truncated"),
    "unknown_codec": (errors.UnsupportedCodecError, "codec"),
    "hls_playlist": (errors.UnsafeInputError, "playlist"),
    "concat_script": (errors.UnsafeInputError, "playlist"),
}


@pytest.mark.parametrize("name", sorted(EXPECTED))
@pytest.mark.parametrize("as_file_object", [False, True], ids=["path", "fileobj"])
def test_bad_input_is_classified(media_clips: dict[str, Path], name: str, as_file_object: bool) -> None:
    error_type, words = EXPECTED[name]
    source = clips.as_file_object(media_clips[name]) if as_file_object else media_clips[name]
    with pytest.raises(error_type) as caught:
        probe(source)  # probe = open + demux pass + first decoded frame: where real uploads fail
    reason = caught.value.reason
    assert words in reason
    assert isinstance(caught.value, errors.PermanentError)
    assert "Errno" not in reason and "Traceback" not in reason  # no raw FFmpeg text for users


def test_hls_playlist_would_be_read_without_the_allow_list(media_clips: dict[str, Path]) -> None:
    """The playlist is a real threat: plain PyAV follows it to the local .ts file it names."""
    with av.open(str(media_clips["hls_playlist"])) as container:
        assert container.format.name == "hls"
        assert container.streams.video
    with pytest.raises(errors.UnsafeInputError):
        open_input(media_clips["hls_playlist"])


def test_playlist_renamed_to_mp4_is_still_refused(media_clips: dict[str, Path], tmp_path: Path) -> None:
    disguised = tmp_path / "holiday.mp4"
    disguised.write_bytes(media_clips["hls_playlist"].read_bytes())
    with pytest.raises(errors.UnsafeInputError):
        open_input(disguised)


def test_still_image_is_not_a_video(tmp_path: Path) -> None:
    image = tmp_path / "photo.mp4"
    av.VideoFrame.from_ndarray(clips.footage(1, 64, 48)[0], format="rgb24").to_image().save(image, format="PNG")
    with pytest.raises(errors.NotAVideoError, match="still image"):
        open_input(image)


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(errors.NotAVideoError, match="does not exist"):
        open_input(tmp_path / "nope.mp4")


@pytest.mark.parametrize("name", sorted(clips.GOOD_CLIPS))
def test_good_clips_open_from_file_objects(media_clips: dict[str, Path], name: str) -> None:
    with open_input(clips.as_file_object(media_clips[name])) as container:
        assert container.streams.video[0].codec_context.width > 0


def test_file_object_is_reusable(media_clips: dict[str, Path]) -> None:
    """The worker hands the same S3 reader to several calls: each seeks back to the start."""
    handle = clips.as_file_object(media_clips["vfr_mp4"])
    first = probe(handle)
    handle.seek(1234)
    assert probe(handle) == first


class _FakeStream:
    def __init__(self, index: int, disposition: av.stream.Disposition) -> None:
        self.index, self.disposition, self.type = index, disposition, "video"


class _FakeContainer:
    def __init__(self, *streams: _FakeStream) -> None:
        self.streams = type("Streams", (), {"video": list(streams)})()


def test_cover_art_is_never_the_video() -> None:
    from vsr.media.safety import video_stream

    cover = _FakeStream(0, av.stream.Disposition.attached_pic)
    movie = _FakeStream(1, av.stream.Disposition.default)
    assert video_stream(_FakeContainer(cover, movie)) is movie  # type: ignore[arg-type]
    with pytest.raises(errors.NoVideoStreamError, match="cover image"):
        video_stream(_FakeContainer(cover))  # type: ignore[arg-type]


def test_fuzzed_uploads_raise_only_input_errors(media_clips: dict[str, Path]) -> None:
    """Randomly damaged real files: every failure is a classified InputError (never a raw FFmpeg error)."""
    import io
    import random

    from vsr.media.decode import decode_window

    rng = random.Random(7)
    original = media_clips["vfr_mp4"].read_bytes()
    outcomes: dict[str, int] = {}
    for _ in range(40):
        data = bytearray(original)
        for _ in range(rng.choice((1, 10, 50))):
            data[rng.randrange(len(data))] = rng.getrandbits(8)
        try:
            info = probe(io.BytesIO(bytes(data)))
            frames = list(decode_window(io.BytesIO(bytes(data)), info.pts[0], info.frame_count))
            assert len(frames) <= info.frame_count
            outcome = "ok"
        except errors.InputError as exc:
            assert exc.reason and "Errno" not in exc.reason
            outcome = type(exc).__name__
        outcomes[outcome] = outcomes.get(outcome, 0) + 1
    assert sum(outcomes.values()) == 40 and len(outcomes) >= 2, outcomes
