"""Camera, tape and broadcast files (issue 20): a table-driven corpus built from real footage
(tests/archive_clips.py), each row upscaled end to end by `vsr upscale`'s code path (probe, segments,
encode, join) with an instant nearest-neighbour stand-in for the model, then checked frame-exact (count
and timestamps as FFmpeg shows them), for its audio (codec, start, length: in sync) and for the row's own
property. The same rows run through the whole serverless pipeline in tests/local/test_archive.py.
"""

from __future__ import annotations

import itertools
import json
import shutil
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from fractions import Fraction
from pathlib import Path
from typing import Any

import av
import numpy as np
import pytest

from tests import archive_clips, clips

SCALE = 2


@dataclass(frozen=True)
class Row:
    make: Callable[[Path], Path]
    audio: str | None = None  # the output's audio codec (None: no audio)
    extra: Callable[[Path, Path, dict[str, Any]], None] | None = None  # the row's own check
    kwargs: dict[str, Any] = field(default_factory=dict)  # upscale_file's options
    metadata: dict[str, str] = field(default_factory=dict)  # the same options as the upload's, for `vsr run`
    field_rate: bool = False  # deinterlaced 25i -> 50p: two output frames per source frame


def video_times(path: Path) -> list[Fraction]:
    """What FFmpeg shows: the presentation time of every decoded frame."""
    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        return [Fraction(frame.pts) * Fraction(stream.time_base) for frame in container.decode(stream)]


def expected_times(source: Path, row: Row) -> list[Fraction]:
    """The output's frame times: the source's, or at field rate each source frame's time and the time
    half-way to the next frame (after the last frame, half a frame at the stream's rate)."""
    times = video_times(source)
    if not row.field_rate:
        return times
    with av.open(str(source)) as container:
        rate = container.streams.video[0].average_rate
    assert rate
    after = [*times[1:], times[-1] + 1 / Fraction(rate)]
    return [t for a, b in zip(times, after, strict=True) for t in (a, (a + b) / 2)]


def audio_span(path: Path) -> tuple[str, Fraction, Fraction] | None:
    """(codec, first sample's time, decoded length) of the first audio stream."""
    with av.open(str(path)) as container:
        if not container.streams.audio:
            return None
        stream = container.streams.audio[0]
        start, samples, rate = None, 0, stream.codec_context.sample_rate
        for frame in container.decode(stream):
            if start is None and frame.pts is not None:
                start = Fraction(frame.pts) * Fraction(stream.time_base)
            samples += frame.samples
        return stream.codec_context.name, start or Fraction(0), Fraction(samples, rate)


def audio_at(path: Path, start: Fraction, count: int) -> np.ndarray:
    """`count` samples of the first audio channel from presentation time `start` (by frame timestamps)."""
    with av.open(str(path)) as container:
        stream = container.streams.audio[0]
        rate = stream.codec_context.sample_rate
        pieces, first = [], None
        for frame in container.decode(stream):
            if first is None:
                first = Fraction(frame.pts) * Fraction(stream.time_base)
            pieces.append(
                frame.to_ndarray().reshape(len(frame.layout.channels), -1)[0].astype(np.float64)
                if frame.format.is_planar
                else frame.to_ndarray()[0, :: len(frame.layout.channels)].astype(np.float64)
            )
        samples = np.concatenate(pieces)
    assert first is not None
    offset = round((start - first) * rate)
    return samples[offset : offset + count]


def audio_in_sync(source: Path, output: Path) -> bool:
    """The clips' audio is a 440 Hz tone: the same presentation time must hold the same phase in both
    files (a shift of one AAC frame, 21 ms, turns the correlation to about 0.07)."""
    begin = audio_span(source)
    assert begin is not None
    at = begin[1] + Fraction(1, 100)
    a, b = audio_at(source, at, 960), audio_at(output, at, 960)
    a, b = a - a.mean(), b - b.mean()
    return len(a) == len(b) == 960 and float(np.dot(a, b) / np.sqrt(np.dot(a, a) * np.dot(b, b))) > 0.9


ROWS: dict[str, Row] = {
    "mjpeg_pcm16_avi": Row(archive_clips.make_mjpeg_pcm16_avi, audio="aac"),
    "mjpeg_pcm8_avi": Row(archive_clips.make_mjpeg_pcm8_avi, audio="aac"),
    "dv_pcm_avi": Row(archive_clips.make_dv_pcm_avi, audio="aac"),
    "raw_dv": Row(
        archive_clips.make_raw_dv, audio="aac", extra=lambda s, o, r: _timecode_check(o, archive_clips.DV_TIMECODE)
    ),
    "dv_mov": Row(archive_clips.make_dv_mov, audio="aac"),
    "xdcam_mxf": Row(archive_clips.make_xdcam_mxf, audio="aac"),
    "animated_gif": Row(archive_clips.make_animated_gif, extra=lambda s, o, r: _gif_check(s, o)),
    "trim_inside_gop": Row(archive_clips.make_trim_inside_gop, extra=lambda s, o, r: _trim_check(s, o, 22)),
    "trim_at_keyframe": Row(archive_clips.make_trim_at_keyframe, extra=lambda s, o, r: _trim_check(s, o, 20)),
    "trim_with_bframes": Row(archive_clips.make_trim_with_bframes, extra=lambda s, o, r: _trim_check(s, o, 23)),
    "start_delay": Row(archive_clips.make_start_delay, extra=lambda s, o, r: _trim_check(s, o, 12)),
    "prores_timecode": Row(
        archive_clips.make_prores_timecode,
        audio="aac",
        extra=lambda s, o, r: _timecode_check(o, archive_clips.PRORES_TIMECODE),
        kwargs={"codec": "h264"},
    ),
    "mkv_tagged_tracks": Row(archive_clips.make_mkv_tagged_tracks, audio="aac", extra=lambda s, o, r: _tags_check(o)),
    "interlaced_tff": Row(archive_clips.make_interlaced, extra=lambda s, o, r: _deinterlaced_check(s, o, r, 8)),
    "interlaced_unflagged": Row(
        archive_clips.make_interlaced_unflagged, extra=lambda s, o, r: _deinterlaced_check(s, o, r, 0)
    ),
    "interlaced_field_rate": Row(
        archive_clips.make_interlaced_with_audio,
        audio="aac",
        extra=lambda s, o, r: _field_rate_check(s, o, r),
        kwargs={"deinterlace": "field"},
        metadata={"vsr-deinterlace": "on:field"},
        field_rate=True,
    ),
    # cases that worked before issue 20 and must keep working
    "anamorphic_vob": Row(archive_clips.make_anamorphic_vob, audio="aac", extra=lambda s, o, r: _sar_check(s, o)),
    "ffv1_flac": Row(archive_clips.make_ffv1_flac, audio="flac"),
    "one_frame": Row(archive_clips.make_one_frame),
    "hdr10_hevc": Row(clips.make_hdr10_hevc, audio="aac", extra=lambda s, o, r: _hdr_check(s, o)),
}


def _sar_check(source: Path, output: Path) -> None:
    """Non-square pixels stay non-square: the output's SAR is the source's (MPEG-2 stores the display
    aspect as a code, so the source's own SAR is what the encoder made of 64:45)."""
    from vsr.media.probe import probe

    sar = probe(source).sample_aspect_ratio
    assert sar is not None and sar != 1 and probe(output).sample_aspect_ratio == sar


def _hdr_check(source: Path, output: Path) -> None:
    """BT.2020 / PQ tags and the HDR10 static metadata survive, in 10 bits."""
    from vsr.media.probe import probe

    before, after = probe(source), probe(output)
    assert (after.color_primaries, after.color_trc, after.colorspace) == (9, 16, 9)
    assert after.bit_depth == 10 and after.hdr10 == before.hdr10 and after.hdr10 is not None


def comb_scores(path: Path, scale: int = 1) -> list[float]:
    from vsr.media.interlace import comb_score

    with av.open(str(path)) as container:
        return [comb_score(f.to_ndarray(format="gray"), scale) for f in container.decode(video=0)]


def _deinterlaced_check(source: Path, output: Path, report: dict[str, Any], flagged: int) -> None:
    """Detected (idet confirms the flags, or overrules them), deinterlaced by bwdif, no comb lines left
    (comb score on the output area-downscaled by the model's scale), frames flagged progressive."""
    interlace = report["interlace"]
    assert interlace["detected"] == "tff" and interlace["deinterlace"] and interlace["parity"] == "tff"
    assert interlace["detection"]["flagged"] == flagged
    before, after = comb_scores(source), comb_scores(output, SCALE)
    assert min(before) > 2.0, before  # the woven fields comb every frame
    assert max(after) < 1.0, after  # as smooth vertically as horizontally: no combs
    with av.open(str(output)) as container:
        assert not any(frame.interlaced_frame for frame in container.decode(video=0))


def _field_rate_check(source: Path, output: Path, report: dict[str, Any]) -> None:
    """25i -> 50p: deinterlaced (no combs, flagged progressive), one frame per field at half the spacing,
    the report saying so; the two frames of a source frame are two instants (the fields), not a copy."""
    _deinterlaced_check(source, output, report, archive_clips.INTERLACED_FRAMES)
    interlace = report["interlace"]
    assert interlace["rate"] == "field" and interlace["filter"] == "bwdif (send_field)"
    assert interlace["source"]["frames"] == archive_clips.INTERLACED_FRAMES
    frames = report["frames"] if "frames" in report else report["output"]["frames"]  # vsr upscale | vsr run
    assert frames == 2 * archive_clips.INTERLACED_FRAMES
    times = video_times(output)
    assert len(times) == 2 * len(video_times(source))
    assert {b - a for a, b in itertools.pairwise(times)} == {Fraction(1, 50)}
    with av.open(str(output)) as container:
        pictures = [f.to_ndarray(format="gray").astype(np.float64) for f in container.decode(video=0)]
    moved = [float(np.abs(pictures[i + 1] - pictures[i]).mean()) for i in range(0, len(pictures), 2)]
    assert min(moved) > 1.0, moved  # the second field's frame shows the later instant


def _timecode_check(output: Path, timecode: str) -> None:
    """The start timecode survives as the output's tmcd track."""
    with av.open(str(output)) as container:
        assert container.streams.video[0].metadata.get("timecode") == timecode
        assert [stream.metadata.get("timecode") for stream in container.streams.data] == [timecode]


def _tags_check(output: Path) -> None:
    """Every audio and subtitle track keeps its language and title (MP4 stores a title as the track's udta
    name and, for players, as its handler name)."""
    with av.open(str(output)) as container:
        audio = [(s.codec_context.name, dict(s.metadata)) for s in container.streams.audio]
        subtitles = [dict(s.metadata) for s in container.streams.subtitles]
    assert [name for name, _ in audio] == ["aac", "opus"]
    for (_, tags), (_, language, title) in zip(audio, archive_clips.MKV_AUDIO_TAGS, strict=True):
        assert tags.get("language") == language
        if title:
            assert tags.get("name") == title and tags.get("handler_name") == title
    language, title = archive_clips.MKV_SUBTITLE_TAGS
    assert len(subtitles) == 1
    assert subtitles[0].get("language") == language and subtitles[0].get("name") == title


def _trim_check(source: Path, output: Path, shown: int) -> None:
    """Exactly the frames the edit list shows (counted by hand from the cut), with their pictures: the
    output's first frame is the source's first shown frame, not its hidden keyframe."""
    assert len(video_times(output)) == shown
    with av.open(str(source)) as src, av.open(str(output)) as out:
        want = next(iter(src.decode(video=0))).reformat(width=64, height=48, format="gray").to_ndarray()
        got = next(iter(out.decode(video=0))).reformat(width=64, height=48, format="gray").to_ndarray()
    assert float(abs(got.astype(float) - want.astype(float)).mean()) < 4.0


def _gif_check(source: Path, output: Path) -> None:
    """The GIF's frame delays are the output's frame durations (VFR kept); the output is H.264 in MP4."""
    delays = [Fraction(d, 100) for d in archive_clips.GIF_DELAYS_CS]
    times = video_times(output)
    assert [b - a for a, b in itertools.pairwise(times)] == delays[:-1]
    with av.open(str(output)) as container:
        assert container.format.name.startswith("mov,mp4") and container.streams.video[0].codec_context.name == "h264"


@pytest.fixture(scope="module")
def corpus(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("archive-corpus")


@pytest.mark.parametrize("name", list(ROWS))
def test_archive_row_upscales_frame_exact(
    name: str, corpus: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import vsr.engine
    from vsr.upscale import upscale_file

    row = ROWS[name]
    source = row.make(corpus)
    monkeypatch.setattr(vsr.engine, "get_upscaler", lambda *a, **k: clips.NearestUpscaler(SCALE))
    output = tmp_path / f"{name}.mp4"
    report = upscale_file(
        source, output, model="realesr-animevideov3-x2", segment_frames=3, progress=False, **row.kwargs
    )
    output = Path(report.get("output", output))
    assert output.suffix == ".mp4"
    expected = expected_times(source, row)
    assert expected and video_times(output) == expected  # every frame, at its source time (or field time)
    with av.open(str(source)) as src, av.open(str(output)) as out:
        assert out.streams.video[0].codec_context.width == src.streams.video[0].codec_context.width * SCALE
    if row.audio is None:
        assert audio_span(output) is None
    else:
        source_audio, output_audio = audio_span(source), audio_span(output)
        assert source_audio is not None and output_audio is not None
        codec, start, length = output_audio
        assert codec == row.audio
        assert start <= source_audio[1]  # nothing lost at the front (an AAC encoder's priming may lead)
        assert abs(length - source_audio[2]) <= Fraction(1024, 48000) * 2, (length, source_audio[2])
        assert audio_in_sync(source, output), "the audio moved against the picture"
    if row.extra is not None:
        row.extra(source, output, report)


@pytest.mark.parametrize(
    ("name", "channels", "expected"),
    [("2 channels", 2, "2c"), ("6 channels", 6, "6c"), ("stereo", 2, "stereo"), ("5.1", 6, "5.1"), ("", 1, "1c")],
)
def test_encoder_layout_gives_unspecified_pcm_layouts_a_default_order(name: str, channels: int, expected: str) -> None:
    from vsr.media.profiles import encoder_layout

    class Layout:
        def __init__(self, name: str) -> None:
            self.name = name

    assert encoder_layout(Layout(name), channels) == expected
    assert av.AudioLayout(encoder_layout(Layout(name), channels)).nb_channels == channels


_OPEN_PROBE = """
import sys
from vsr.media.probe import probe
try:
    probe(sys.argv[1])
except Exception as exc:
    print(type(exc).__name__, exc)
"""


def _files_opened_by_probe(source: Path, workdir: Path) -> tuple[set[str], str]:
    """Every file under `source`'s folder that probing it opened (strace of the whole process), and what
    the probe printed (an error, or nothing)."""
    trace = workdir / "trace.log"
    done = subprocess.run(
        [
            "strace",
            "-f",
            "-qq",
            "-e",
            "trace=open,openat,openat2",
            "-o",
            str(trace),
            sys.executable,
            "-c",
            _OPEN_PROBE,
            str(source),
        ],
        capture_output=True,
        text=True,
        check=True,
        timeout=120,
    )
    folder = str(source.parent.resolve())
    opened = {line.split('"')[1] for line in trace.read_text().splitlines() if f'"{folder}/' in line}
    return opened, done.stdout.strip()


@pytest.mark.skipif(shutil.which("strace") is None, reason="strace shows which files FFmpeg opens")
@pytest.mark.parametrize(
    "name", ["raw_dv", "dv_mov", "dv_pcm_avi", "xdcam_mxf", "mxf_external_essence", "animated_gif"]
)
def test_new_demuxers_open_nothing_but_the_input(name: str, tmp_path: Path) -> None:
    """DV and MXF under the upload protocol whitelist: the only file the process opens in the upload's
    folder is the upload; an MXF whose essence lives elsewhere fails with a reason instead of reading the
    sibling file that holds it."""
    folder = tmp_path / "upload"
    folder.mkdir()
    make = getattr(archive_clips, f"make_{name}")
    source = make(folder).resolve()
    opened, printed = _files_opened_by_probe(source, tmp_path)
    assert opened == {str(source)}, opened
    if name == "mxf_external_essence":
        assert (folder / "master_essence.mxf").is_file()  # the bait was there to be read
        assert printed.startswith("CorruptInputError") and "stored in other files" in printed, printed
    else:
        assert printed == ""


def test_dv_and_mxf_are_accepted_and_named() -> None:
    from vsr.media.safety import ACCEPTED_IN_WORDS, ALLOWED_FORMATS

    assert {"dv", "mxf"} <= set(ALLOWED_FORMATS)
    assert "MXF" in ACCEPTED_IN_WORDS and "DV" in ACCEPTED_IN_WORDS


@pytest.mark.parametrize(
    ("average", "base", "pts", "time_base", "expected"),
    [
        (Fraction(60000), Fraction(25), [0, 2400, 4800], Fraction(1, 60000), Fraction(25)),  # raw DV
        (Fraction(25), Fraction(25), [0, 512, 1024], Fraction(1, 12800), Fraction(25)),
        (Fraction(30000, 1001), Fraction(60000, 1001), [0, 1001, 2002], Fraction(1, 30000), Fraction(30000, 1001)),
        (None, None, [0, 10, 20], Fraction(1, 100), Fraction(10)),
        (Fraction(60000), None, [0], Fraction(1, 60000), Fraction(60000)),  # one frame: nothing to check against
    ],
)
def test_plausible_rate(
    average: Fraction | None, base: Fraction | None, pts: list[int], time_base: Fraction, expected: Fraction
) -> None:
    from vsr.media.probe import _plausible_rate

    assert _plausible_rate(average, base, pts, time_base) == expected


def test_a_one_frame_gif_is_still_a_still_image(tmp_path: Path) -> None:
    from vsr.errors import NotAVideoError
    from vsr.media.probe import probe

    with pytest.raises(NotAVideoError, match=r"still image \(gif\)"):
        probe(archive_clips.make_still_gif(tmp_path))
    assert probe(archive_clips.make_animated_gif(tmp_path)).is_vfr


def test_a_progressive_source_is_left_alone(tmp_path: Path) -> None:
    from vsr.media.probe import probe

    info = probe(archive_clips.make_trim_at_keyframe(tmp_path))
    assert info.interlace is not None and info.interlace["detected"] == "progressive"
    assert info.deinterlace_parity is None


@pytest.mark.parametrize(
    ("mode", "field_order", "expected"),
    [("auto", "bff", "bff"), ("auto", None, None), ("on", None, "tff"), ("on", "bff", "bff"), ("off", "tff", None)],
)
def test_deinterlace_decision(mode: str, field_order: str | None, expected: str | None) -> None:
    from vsr.media.interlace import Detection, decision

    counts = {"tff": (5, 1, 2), "bff": (1, 5, 2), None: (1, 0, 7)}[field_order]
    found = Detection(0, 8, counts[0], counts[1], counts[2], 0)
    assert found.field_order == field_order
    result = decision(found if mode != "off" else None, mode)
    assert result["parity"] == expected and result["deinterlace"] == (expected is not None)
    with pytest.raises(ValueError, match=r"input\.deinterlace"):
        decision(found, "sometimes")
    at_field_rate = decision(found if mode != "off" else None, mode, "field")
    assert at_field_rate["rate"] == ("field" if expected else None)
    assert at_field_rate["filter"] == ("bwdif (send_field)" if expected else None)
    with pytest.raises(ValueError, match=r"input\.deinterlace_rate"):
        decision(found, mode, "double")


def test_deinterlaced_segments_equal_one_run(tmp_path: Path) -> None:
    """bwdif reads a frame on each side: windows that read their neighbours give the frames of one run."""
    from vsr.media.decode import decode_window
    from vsr.media.probe import probe

    source = archive_clips.make_interlaced(tmp_path)
    info = probe(source)
    whole = list(decode_window(source, info.pts[0], info.frame_count, deinterlace="tff"))
    assert [f.pts for f in whole] == info.pts
    for start, count in ((0, 3), (3, 3), (6, 2)):
        previous = info.pts[start - 1] if start else None
        part = list(decode_window(source, info.pts[start], count, deinterlace="tff", previous_pts=previous))
        assert [f.pts for f in part] == info.pts[start : start + count]
        assert all(np.array_equal(a.image, b.image) for a, b in zip(part, whole[start : start + count], strict=True))


def test_the_plan_includes_deinterlacing(tmp_path: Path) -> None:
    """An interlaced source costs its bwdif time per frame on top of the model (settings
    latency.deinterlace_s_per_input_mpix); the same source judged progressive does not."""
    import dataclasses

    from vsr.admission import ModelCost, plan_for
    from vsr.media.probe import probe
    from vsr.settings import Settings, deep_merge, get_settings

    settings = get_settings()
    source = archive_clips.make_interlaced(tmp_path)
    interlaced = probe(source, "auto", settings.idet_frames)
    progressive = dataclasses.replace(interlaced, interlace=None)
    assert interlaced.deinterlace_parity == "tff" and progressive.deinterlace_parity is None
    model = ModelCost(name="m", scale=2, macs_per_input_pixel=619_200)
    # a large bwdif cost makes the term visible in the plan's predicted wall time
    slow = Settings(deep_merge(settings.raw, {"latency": {"deinterlace_s_per_input_mpix": 1000.0}}))
    with_bwdif = plan_for(interlaced, model, slow).chosen
    without = plan_for(progressive, model, slow).chosen
    assert with_bwdif.predicted_wall_s > without.predicted_wall_s
    assert settings.latency.deinterlace_s_per_input_mpix > 0  # the shipped setting is a measurement, not 0


def test_a_failing_interlace_detection_does_not_fail_the_probe(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from vsr.media import interlace
    from vsr.media.probe import probe

    def broken(*_: Any, **__: Any) -> interlace.Detection:
        raise av.error.ArgumentError(22, "idet cannot take this")

    monkeypatch.setattr(interlace, "detect", broken)
    info = probe(archive_clips.make_interlaced(tmp_path), "auto", 24)
    assert info.interlace is not None and info.interlace["error"] and info.deinterlace_parity is None


def test_vsr_plan_says_it_deinterlaces(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    import json

    from vsr import cli

    source = archive_clips.make_interlaced(tmp_path)
    assert cli.main(["plan", str(source)]) == 0
    assert "deinterlaced (tff, bwdif)" in capsys.readouterr().out
    assert cli.main(["plan", str(source), "--json"]) == 0
    assert json.loads(capsys.readouterr().out.strip().splitlines()[-1])["interlace"]["parity"] == "tff"


def test_vsr_plan_follows_the_rate_setting(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """settings input.deinterlace_rate field: `vsr plan` plans the output's frames, one per field."""
    from vsr import cli

    monkeypatch.setenv("VSR_SETTINGS_OVERRIDES", '{"input": {"deinterlace_rate": "field"}}')
    source = archive_clips.make_interlaced(tmp_path)
    assert cli.main(["plan", str(source)]) == 0
    assert "128x96, 16 frames" in capsys.readouterr().out
    assert cli.main(["plan", str(source), "--json"]) == 0
    assert json.loads(capsys.readouterr().out.strip().splitlines()[-1])["interlace"]["rate"] == "field"


@pytest.mark.parametrize(
    ("metadata", "expected"),
    [
        ({}, ("auto", "frame")),
        ({"vsr-deinterlace": "OFF"}, ("off", "frame")),
        ({"Vsr-Deinterlace": "on"}, ("on", "frame")),
        ({"vsr-deinterlace": " "}, ("auto", "frame")),
        ({"vsr-deinterlace": "field"}, ("auto", "field")),
        ({"vsr-deinterlace": "on:field"}, ("on", "field")),
        ({"vsr-deinterlace": " Frame : Auto "}, ("auto", "frame")),
    ],
)
def test_requested_deinterlace(metadata: dict[str, str], expected: tuple[str, str]) -> None:
    from vsr.media.interlace import requested_deinterlace

    assert requested_deinterlace(metadata, "auto") == expected


def test_the_requested_rate_defaults_to_the_settings() -> None:
    from vsr.media.interlace import requested_deinterlace

    assert requested_deinterlace({}, "auto", "field") == ("auto", "field")
    assert requested_deinterlace({"vsr-deinterlace": "on"}, "auto", "field") == ("on", "field")
    assert requested_deinterlace({"vsr-deinterlace": "frame"}, "on", "field") == ("on", "frame")


@pytest.mark.parametrize("value", ["sometimes", "on:off", "field:frame", "on:field:frame", "off:field", "on:"])
def test_a_bad_deinterlace_request_is_refused_with_the_modes(value: str) -> None:
    from vsr.errors import BadRequestError
    from vsr.media.interlace import requested_deinterlace

    with pytest.raises(BadRequestError, match="vsr-deinterlace") as caught:
        requested_deinterlace({"vsr-deinterlace": value}, "auto")
    assert "auto, on, off" in caught.value.reason or "off alone" in caught.value.reason


def test_the_deinterlace_rate_setting_is_checked() -> None:
    from vsr.settings import Settings, deep_merge, get_settings

    assert get_settings().deinterlace_rate == "frame"  # the shipped default: 25i -> 25p
    with pytest.raises(ValueError, match=r"input\.deinterlace_rate"):
        _ = Settings(deep_merge(get_settings().raw, {"input": {"deinterlace_rate": "double"}})).deinterlace_rate


def test_field_rate_windows_equal_one_run_and_split_at_any_field(tmp_path: Path) -> None:
    """At field rate a segment may start at a second field: windows (segment._field_window, as workers
    decode them) give exactly the frames and timestamps of one run; each source frame's first field is the
    frame-rate picture (bwdif's send_frame output), its second a later instant."""
    from vsr.media.decode import decode_window
    from vsr.media.geometry import FrameConformer
    from vsr.media.probe import probe
    from vsr.planning import split_segments
    from vsr.segment import _window

    source = archive_clips.make_interlaced(tmp_path)
    info = probe(source, "auto", 24, "field")
    assert info.field_rate and info.frame_count == 2 * archive_clips.INTERLACED_FRAMES
    conform = FrameConformer(info.first_geometry())
    whole = list(_window(source, split_segments(info.pts, 1)[0], info.frame_count, conform, info))
    assert [f.pts for f in whole] == info.pts
    for segment in split_segments(info.pts, 5, context_frames=1):  # sizes 4/3/3/3/3: starts at odd frames
        part = list(_window(source, segment, segment.context_before + segment.frame_count, conform, info))
        first = segment.start_frame - segment.context_before
        assert [f.pts for f in part] == info.pts[first : segment.start_frame + segment.frame_count]
        assert all(np.array_equal(a.image, b.image) for a, b in zip(part, whole[first:], strict=False))
    frame_rate = probe(source, "auto", 24)
    per_frame = list(decode_window(source, frame_rate.pts[0], frame_rate.frame_count, deinterlace="tff"))
    assert all(np.array_equal(a.image, b.image) for a, b in zip(per_frame, whole[::2], strict=True))
    assert not any(np.array_equal(a.image, b.image) for a, b in zip(whole[::2], whole[1::2], strict=True))


def test_field_rate_doubles_the_planned_model_work(tmp_path: Path) -> None:
    """The planner sees the output's frames: twice as many at field rate, each priced like a frame-rate
    frame (model and bwdif), so the predicted work doubles; the probe summary keeps the source's count."""
    from vsr.admission import ModelCost, plan_for, probe_summary
    from vsr.media.probe import probe
    from vsr.settings import get_settings

    settings = get_settings()
    source = archive_clips.make_interlaced(tmp_path)
    per_frame = probe(source, "auto", settings.idet_frames)
    per_field = probe(source, "auto", settings.idet_frames, "field")
    model = ModelCost(name="m", scale=2, macs_per_input_pixel=619_200)
    frame_plan, field_plan = plan_for(per_frame, model, settings), plan_for(per_field, model, settings)
    assert sum(s.frame_count for s in field_plan.segments) == 2 * sum(s.frame_count for s in frame_plan.segments)
    assert field_plan.chosen.seconds_per_frame == frame_plan.chosen.seconds_per_frame
    assert field_plan.chosen.predicted_cost_usd > frame_plan.chosen.predicted_cost_usd
    summary = probe_summary(per_field)
    assert summary["frames"] == 16 and summary["source_frames"] == 8  # progress counts output frames
    assert summary["fps"] == "50/1" and summary["source_fps"] == "25/1"
    assert summary["duration_s"] == pytest.approx(probe_summary(per_frame)["duration_s"])


def test_field_rate_and_frame_interpolation_are_refused_together(tmp_path: Path) -> None:
    from vsr.errors import BadRequestError
    from vsr.media.probe import probe
    from vsr.pipeline import timejob
    from vsr.settings import get_settings

    info = probe(archive_clips.make_interlaced(tmp_path), "auto", 24, "field")
    request = timejob.request_from_upload({"vsr-interpolate": "2"}, 2)
    with pytest.raises(BadRequestError, match="field-rate"):
        timejob.check(request, info, 2, get_settings())


def test_vsr_upscale_deinterlace_off_keeps_the_combs(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import json

    import vsr.engine
    from vsr.upscale import upscale_file

    monkeypatch.setattr(vsr.engine, "get_upscaler", lambda *a, **k: clips.NearestUpscaler(SCALE))
    source = archive_clips.make_interlaced(tmp_path)
    report = upscale_file(
        source, tmp_path / "off.mp4", model="realesr-animevideov3-x2", progress=False, deinterlace="off"
    )
    assert json.loads(json.dumps(report["interlace"]))["mode"] == "off" and not report["interlace"]["deinterlace"]
    assert min(comb_scores(tmp_path / "off.mp4", SCALE)) > 2.0


def test_field_rate_through_the_fragmented_path(tmp_path: Path) -> None:
    """Long jobs join fMP4 fragments (vsr.media.fragmented) against the same doubled timeline: segments
    that start at second fields join into the field-rate times, with the audio in sync."""
    from vsr.media import fragmented
    from vsr.media.probe import probe
    from vsr.planning import split_segments
    from vsr.segment import process_segment
    from vsr.settings import get_settings

    row = ROWS["interlaced_field_rate"]
    source = row.make(tmp_path)
    info = probe(source, "on", 24, "field")
    encode = get_settings().encode_settings
    media, files = [], []
    segments = split_segments(info.pts, 3)
    assert [s.start_frame for s in segments] == [0, 6, 11]  # the last starts at a second field
    for segment in segments:
        encoded = tmp_path / f"{segment.index}.nut"
        process_segment(
            str(source),
            segment,
            clips.NearestUpscaler(SCALE),
            info,
            encoded,
            encode=encode,
            crf=encode.crf,
            encoder_options=fragmented.FRAGMENT_ENCODER_OPTIONS,
        )
        files.append(tmp_path / f"{segment.index}.m4s")
        media.append(fragmented.write_media_segment(encoded, str(source), info, segment, files[-1]))
    output = tmp_path / "film.mp4"
    with open(output, "wb") as out:  # what the multipart join does in S3
        out.write(files[0].read_bytes()[: media[0].init_bytes])
        for path, item in zip(files, media, strict=True):
            out.write(path.read_bytes()[item.init_bytes :])
    assert video_times(output) == expected_times(source, row)
    assert audio_in_sync(source, output)
    assert max(comb_scores(output, SCALE)) < 1.0
