"""Delivery formats through the whole pipeline (LocalRuntime against a moto server process): each `vsr-codec`
gives a frame-exact output in its container with its audio and tags, `auto` follows the source, and a bad
`vsr-codec` fails the job once at ingest with a reason."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import av
import pytest

from tests import clips as clipmakers
from tests.local.conftest import wait_for
from tests.local.media_checks import audio_packets, video_size, video_times
from vsr.aws import clients
from vsr.local.runtime import LocalRuntime, Outcome
from vsr.media.probe import probe
from vsr.media.profiles import CODECS, Hdr10
from vsr.pipeline import jobs

pytestmark = pytest.mark.timeout(300)

DECODER = {"h264": "h264", "hevc": "hevc", "av1": "libdav1d", "prores": "prores"}
ENCODER = {"h264": "libx264", "hevc": "libx265", "av1": "libsvtav1", "prores": "prores_ks"}


@pytest.fixture(scope="module")
def sources(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    folder = tmp_path_factory.mktemp("format-sources")
    return {
        "vfr_audio": clipmakers.make_vfr_mp4(folder),  # 96x64, 16 frames, irregular timestamps, AAC
        "hdr10": clipmakers.make_hdr10_hevc(folder),  # 96x64, 8 frames, 10-bit BT.2020 PQ, HDR10 SEI, AAC
    }


def _finish(runtime: LocalRuntime, job_id: str, started: float, out: Path) -> Outcome:
    outcome = runtime.wait(job_id, started=started, timeout_s=240)
    assert outcome.status == jobs.COMPLETE, outcome.error
    runtime.download(outcome, out)
    assert outcome.output is not None and outcome.report is not None
    return outcome


def test_each_codec_and_auto_through_the_pipeline(aws: Any, sources: dict[str, Path], tmp_path: Path) -> None:
    source, hdr = sources["vfr_audio"], sources["hdr10"]
    with LocalRuntime(aws(max_frames=6), log_dir=tmp_path / "logs") as runtime:
        started = time.time()
        submitted = {
            codec: runtime.submit(source, key=f"{codec}/{source.name}", metadata={"vsr-codec": codec})
            for codec in CODECS
        }
        submitted["auto-10bit"] = runtime.submit(hdr, key=f"auto/{hdr.name}")
        outcomes = {name: _finish(runtime, job_id, started, tmp_path / name) for name, job_id in submitted.items()}

    for codec in CODECS:
        outcome = outcomes[codec]
        assert outcome.output is not None and outcome.report is not None and outcome.job is not None
        assert outcome.output.suffix == (".mov" if codec == "prores" else ".mp4")  # the key follows the container
        assert video_times(outcome.output) == video_times(source)  # every frame at its source time (VFR)
        assert video_size(outcome.output) == (192, 128, 16)  # decodable by PyAV, frame for frame
        assert outcome.job.model["delivery"]["codec"] == codec  # the request rode in the job
        report = json.loads(outcome.report.read_text())
        delivery = report["delivery"]
        assert (delivery["codec"], delivery["encoder"]) == (codec, ENCODER[codec])
        assert delivery["container"] == ("mov" if codec == "prores" else "mp4") and delivery["dropped"] == []
        with av.open(str(outcome.output)) as container:
            assert container.streams.video[0].codec_context.name == DECODER[codec]
            audio = [a.codec_context.name for a in container.streams.audio]
        if codec == "prores":
            assert audio == ["pcm_s16le"] and delivery["audio"][0]["action"] == "encoded to pcm_s16le"
        else:
            assert audio_packets(outcome.output) == audio_packets(source)  # the AAC packets, copied
            assert delivery["audio"][0]["action"] == "copied"
        if codec == "hevc":
            with av.open(str(outcome.output)) as container:
                assert container.streams.video[0].codec_context.codec_tag == "hvc1"
        head = clients.s3().head_object(Bucket=outcome.job.output["bucket"], Key=outcome.job.output["key"])
        assert head["ContentType"] == ("video/quicktime" if codec == "prores" else "video/mp4")

    auto = outcomes["auto-10bit"]
    assert auto.output is not None and auto.report is not None
    report = json.loads(auto.report.read_text())
    assert (report["delivery"]["codec"], report["delivery"]["requested"]) == ("hevc", "auto")
    out, src = probe(auto.output), probe(hdr)
    assert out.pix_fmt == "yuv420p10le" and (out.color_primaries, out.color_trc) == (9, 16)
    assert Hdr10.from_dict(out.hdr10) == Hdr10.from_dict(src.hdr10) is not None  # HDR10 metadata kept
    assert video_times(auto.output) == video_times(hdr)
    with av.open(str(auto.output)) as container:
        assert container.streams.video[0].codec_context.codec_tag == "hvc1"


def _depth(url: str) -> int:
    attrs = clients.sqs().get_queue_attributes(
        QueueUrl=url, AttributeNames=["ApproximateNumberOfMessages", "ApproximateNumberOfMessagesNotVisible"]
    )["Attributes"]
    return int(attrs["ApproximateNumberOfMessages"]) + int(attrs["ApproximateNumberOfMessagesNotVisible"])


def test_a_bad_vsr_codec_fails_once_at_ingest_with_a_reason(aws: Any, sources: dict[str, Path], tmp_path: Path) -> None:
    with LocalRuntime(aws(), log_dir=tmp_path / "logs") as runtime:
        r = runtime.resources
        ingest = next(loop for loop in runtime.loops if loop.name == "ingest")
        wait_for(lambda: _depth(r.ingest_queue_url) == 0, 30, "the bucket's s3:TestEvent to be consumed")
        before = ingest.invocations
        started = time.time()
        job_id = runtime.submit(sources["vfr_audio"], metadata={"vsr-codec": "h265"})
        outcome = runtime.wait(job_id, started=started, timeout_s=60)
        assert outcome.status == jobs.FAILED and outcome.job is not None and outcome.job.status == jobs.FAILED
        assert outcome.error is not None and "vsr-codec='h265'" in outcome.error and "hevc" in outcome.error
        wait_for(lambda: _depth(r.ingest_queue_url) == 0, 30, "the ingest message to be deleted")
        assert ingest.invocations - before == 1  # refused once, not retried
        assert _depth(r.segment_queue_url) == 0 and _depth(r.ingest_dlq_url) == 0
        assert outcome.job.segment_count == 0
