"""Camera, tape and broadcast files through the whole pipeline (LocalRuntime against a moto server
process, the real model): the archive corpus's rows (tests/media/test_archive_formats.py runs every row
with a stand-in model) complete frame-exact, with their audio in sync."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import pytest

from tests import archive_clips
from tests.media.test_archive_formats import ROWS, audio_in_sync, audio_span, expected_times, video_times
from vsr.local.runtime import LocalRuntime
from vsr.pipeline import jobs

pytestmark = pytest.mark.timeout(600)

# DV is 720x576 whatever the tape: about 15 s a frame for the real model on 2 cores, so its row runs in
# tests/media only; these are the rows a few seconds of inference covers
PIPELINE_ROWS = [
    "mjpeg_pcm16_avi",
    "mjpeg_pcm8_avi",
    "xdcam_mxf",
    "animated_gif",
    "trim_inside_gop",
    "trim_with_bframes",
    "prores_timecode",
    "mkv_tagged_tracks",
    "interlaced_tff",
    "interlaced_field_rate",
    "anamorphic_vob",
    "one_frame",
]


def test_archive_rows_complete_through_the_pipeline(aws: Any, tmp_path: Path) -> None:
    folder = tmp_path / "sources"
    folder.mkdir()
    sources = {name: ROWS[name].make(folder) for name in PIPELINE_ROWS}
    assert set(PIPELINE_ROWS) <= set(archive_clips.ARCHIVE_CLIPS)
    with LocalRuntime(aws(max_frames=4), log_dir=tmp_path / "logs") as runtime:
        started = time.time()
        submitted = {
            name: runtime.submit(path, key=f"archive/{path.name}", metadata=ROWS[name].metadata or None)
            for name, path in sources.items()
        }
        for name, job_id in submitted.items():
            outcome = runtime.wait(job_id, started=started, timeout_s=500)
            assert outcome.status == jobs.COMPLETE, (name, outcome.error)
            out = tmp_path / name
            runtime.download(outcome, out)
            assert outcome.output is not None and outcome.output.suffix == ".mp4"
            assert outcome.output is not None
            source = sources[name]
            row = ROWS[name]
            assert video_times(outcome.output) == expected_times(source, row), name
            if row.audio:
                got, want = audio_span(outcome.output), audio_span(source)
                assert got is not None and want is not None
                assert got[0] == row.audio and got[1] <= want[1], (name, got, want)
                assert audio_in_sync(source, outcome.output), name
                assert abs(got[2] - want[2]) <= 2 * 1024 / 48000, (name, got, want)
            report = json.loads(outcome.report.read_text()) if outcome.report else {}
            if row.extra is not None:
                row.extra(source, outcome.output, report)
            if name.startswith("interlaced"):
                # the job check pairs output frames (fields at field rate) with the deinterlaced input
                quality = report["quality"]
                assert "skipped" not in quality and "error" not in quality, (name, quality)
                assert quality["pairs"] >= 2 and 0 < quality["flicker_ratio"] < 3, (name, quality)


def test_deinterlace_per_job_through_the_pipeline(aws: Any, tmp_path: Path) -> None:
    """`vsr-deinterlace` metadata on the upload: off keeps the frames as they are (and says so in the report);
    a value that is not a mode or rate, or asks for a rate with off, fails the job once at ingest with the
    accepted values."""
    from tests.media.test_archive_formats import comb_scores

    source = archive_clips.make_interlaced(tmp_path)
    with LocalRuntime(aws(max_frames=4), log_dir=tmp_path / "logs") as runtime:
        started = time.time()
        off = runtime.submit(source, key="off/interlaced.mp4", metadata={"vsr-deinterlace": "off"})
        bad = runtime.submit(source, key="bad/interlaced.mp4", metadata={"vsr-deinterlace": "sometimes"})
        bad_rate = runtime.submit(source, key="bad/rate.mp4", metadata={"vsr-deinterlace": "off:field"})
        done = runtime.wait(off, started=started, timeout_s=300)
        refused = runtime.wait(bad, started=started, timeout_s=300)
        refused_rate = runtime.wait(bad_rate, started=started, timeout_s=300)
        assert done.status == jobs.COMPLETE, done.error
        runtime.download(done, tmp_path / "off")
    assert done.output is not None and done.report is not None
    report = json.loads(done.report.read_text())
    assert report["interlace"]["mode"] == "off" and report["interlace"]["deinterlace"] is False
    assert min(comb_scores(done.output, 2)) > 2.0  # the combs are still there: nothing was done, as asked
    assert refused.status == jobs.FAILED and "auto, on, off" in str(refused.error)
    assert "frame, field" in str(refused.error)  # the rates are named too
    assert refused_rate.status == jobs.FAILED and "use off alone" in str(refused_rate.error)
