"""Text subtitles and chapters as WebVTT (vsr.media.sidecars): what the fragmented path writes beside an output
it cannot carry them in. Clips are written here with PyAV: SRT and ASS in Matroska, mov_text in MP4, chapters."""

from __future__ import annotations

from fractions import Fraction
from pathlib import Path

import av
import numpy as np
import pytest

from vsr.media import sidecars
from vsr.pipeline import artifacts

CHAPTERS = [
    {"id": 1, "start": 0, "end": 500, "time_base": Fraction(1, 1000), "metadata": {"title": "Opening"}},
    {"id": 2, "start": 500, "end": 1000, "time_base": Fraction(1, 1000), "metadata": {"title": "Rest & <end>"}},
]


def _clip(path: Path, fmt: str, tracks: list[tuple[str, str, list[tuple[int, int, bytes]], Fraction]]) -> Path:
    """25 black frames plus subtitle tracks of (codec, language, [(pts, duration, payload)], time base)."""
    with av.open(str(path), "w", format=fmt) as out:
        video = out.add_stream("libx264", rate=25)
        video.width = video.height = 64
        video.pix_fmt = "yuv420p"
        streams = []
        for codec, language, _, time_base in tracks:
            stream = out.add_mux_stream(codec)
            stream.metadata["language"] = language
            stream.metadata["title"] = f"{codec} {language}"
            stream.time_base = time_base
            streams.append(stream)
        out.set_chapters(CHAPTERS)
        for index in range(25):
            frame = av.VideoFrame.from_ndarray(np.zeros((64, 64, 3), np.uint8), format="rgb24")
            frame.pts = index
            out.mux(video.encode(frame))
        out.mux(video.encode(None))
        for stream, (_, _, cues, time_base) in zip(streams, tracks, strict=True):
            for pts, duration, payload in cues:
                packet = av.Packet(payload)
                packet.stream, packet.time_base = stream, time_base
                packet.pts = packet.dts = pts
                packet.duration = duration
                out.mux(packet)
    return path


def _mov_text(text: str) -> bytes:
    body = text.encode()
    return len(body).to_bytes(2, "big") + body


@pytest.fixture(scope="module")
def mkv(tmp_path_factory: pytest.TempPathFactory) -> Path:
    ms = Fraction(1, 1000)
    srt = [(0, 250, b"first <i>line</i>"), (1300, 400, b"second line\r\nand more")]
    ass = [(0, 250, b"0,0,Default,,0,0,0,,{\\i1}Bonjour{\\i0}\\Nle monde"), (300, 250, b"1,0,Default,,0,0,0,,Deux")]
    return _clip(
        tmp_path_factory.mktemp("sidecars") / "subs.mkv", "matroska", [("srt", "eng", srt, ms), ("ass", "fra", ass, ms)]
    )


def test_every_text_track_becomes_cues_with_its_language_title_and_times(mkv: Path) -> None:
    tracks, images = sidecars.read_text_tracks(str(mkv))
    assert images == 0
    assert [(t.codec, t.language, t.title) for t in tracks] == [("srt", "eng", "srt eng"), ("ssa", "fra", "ass fra")]
    srt, ass = tracks
    assert srt.cues == (
        sidecars.Cue(Fraction(0), Fraction(1, 4), "first <i>line</i>"),  # WebVTT keeps <i>
        sidecars.Cue(Fraction(13, 10), Fraction(17, 10), "second line\nand more"),
    )
    assert [c.text for c in ass.cues] == ["Bonjour\nle monde", "Deux"]  # ASS override tags and \N handled


def test_the_webvtt_is_well_formed_and_escapes_what_it_must(mkv: Path) -> None:
    chapters = sidecars.read_chapters(str(mkv))
    assert [c.text for c in chapters] == ["Opening", "Rest &amp; &lt;end&gt;"]
    text = sidecars.webvtt(chapters)
    assert text.startswith("WEBVTT\n\n1\n00:00:00.000 --> 00:00:00.500\nOpening\n")
    assert "00:00:00.500 --> 00:00:01.000\nRest &amp; &lt;end&gt;" in text
    assert sidecars.timestamp(Fraction(7261, 1) + Fraction(1, 8)) == "02:01:01.125"


def test_mp4_mov_text_reads_without_its_gap_samples(tmp_path: Path) -> None:
    tb = Fraction(1, 90000)
    cues = [(0, 22500, _mov_text("eins")), (90000, 45000, _mov_text("zwei"))]
    clip = _clip(tmp_path / "subs.mp4", "mp4", [("mov_text", "deu", cues, tb)])
    tracks, _ = sidecars.read_text_tracks(str(clip))
    assert len(tracks) == 1 and tracks[0].language == "deu" and tracks[0].title == "mov_text deu"
    assert tracks[0].cues == (
        sidecars.Cue(Fraction(0), Fraction(1, 4), "eins"),
        sidecars.Cue(Fraction(1), Fraction(3, 2), "zwei"),
    )  # the muxer's empty samples between cues are not cues


def test_a_cue_without_a_duration_lasts_until_the_next_sample() -> None:
    cues = sidecars._cues([(Fraction(0), None, "a"), (Fraction(3), None, "b"), (Fraction(4), None, "c")])
    assert cues == (
        sidecars.Cue(Fraction(0), Fraction(3), "a"),
        sidecars.Cue(Fraction(3), Fraction(4), "b"),
        sidecars.Cue(Fraction(4), Fraction(4) + sidecars.DEFAULT_CUE_S, "c"),
    )
    # an empty sample (how MP4 marks a gap) ends the cue before it and is no cue itself
    ended = sidecars._cues([(Fraction(0), None, "a"), (Fraction(1), None, "")])
    assert ended == (sidecars.Cue(Fraction(0), Fraction(1), "a"),)


def test_sidecar_keys_sit_beside_the_output_and_stay_within_the_key_budget() -> None:
    video, _ = artifacts.output_keys("films/my film.mkv", 2)
    assert artifacts.subtitle_key(video, 1, "fra") == "films/my film.upscaled-x2.1.fra.vtt"
    assert artifacts.subtitle_key(video, 2, None) == "films/my film.upscaled-x2.2.und.vtt"
    assert artifacts.subtitle_key(video, 3, "../pt-BR") == "films/my film.upscaled-x2.3.ptb.vtt"
    assert artifacts.chapters_key(video) == "films/my film.upscaled-x2.chapters.vtt"
    long_video, _ = artifacts.output_keys("x" * 1100 + ".mp4", 2)
    assert len(artifacts.chapters_key(long_video).encode()) <= 1024
    assert len(artifacts.subtitle_key(long_video, 99, "eng").encode()) <= 1024
    with pytest.raises(ValueError):
        artifacts.subtitle_key(video, 100, "eng")


def test_reading_past_the_budget_is_refused_and_the_delivery_says_why(mkv: Path) -> None:
    with pytest.raises(sidecars.SidecarBudgetError, match="longer than 0 s"):
        sidecars.read_text_tracks(str(mkv), budget_s=0)
    from vsr.pipeline import sidecars as delivery

    block = delivery.deliver(str(mkv), 2, "no-bucket-is-touched", "clip.upscaled-x2.mp4", budget_s=0)
    assert block["subtitles"] == [] and block["subtitles_dropped"] == 2 and "longer than 0 s" in block["error"]
