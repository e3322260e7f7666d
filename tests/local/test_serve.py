"""`vsr serve` as a drop box for the official AWS CLI (awscli v1 from PyPI), a folder inbox and an outbox.

One served stack (a real `vsr serve` subprocess on a fixed port, one worker, test-sized settings) is shared by
the module's tests; each test uploads under its own key. Stopping with SIGTERM and a port in use get their own.
Hostile keys (tests/support/hostile_keys.py) go in beside ordinary uploads: every one must end delivered or
with an error file that gives the reason, and the ordinary ones are delivered on serve's first look.
"""

from __future__ import annotations

import json
import os
import shlex
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import boto3
import pytest

from tests import clips as clip_builders
from tests.local.conftest import overrides, wait_for
from tests.local.media_checks import video_size, video_times
from tests.support import fuzz, hostile_keys
from tests.support.load import make_clip
from tests.support.serve import Served, serve
from vsr import keys
from vsr.local.names import NAME_MAX, local_path
from vsr.local.provision import local_names
from vsr.pipeline import jobs

pytestmark = pytest.mark.timeout(600)

NAMES = local_names()
UNICODE_NAME = "my clip (1) é.mp4"
# Quick delivery retries, so a delivery that keeps failing reaches its error file within the test.
DELIVERY = {"delivery_attempts": 3, "delivery_backoff_s": 0.5, "delivery_backoff_max_s": 1}
FUZZ_SEED = int(os.environ.get("VSR_FUZZ_SEED", "2026"))  # another seed: VSR_FUZZ_SEED=... pytest ...
FUZZ_KEYS = 8


@pytest.fixture(scope="module")
def media(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    folder = tmp_path_factory.mktemp("serve-clips")
    return {
        "good": clip_builders.make_mov_h264(folder),  # 128x72, 20 frames: 4 segments of 5
        "bad": clip_builders.make_not_a_video(folder),
        "tiny": make_clip(folder / "tiny.mp4", 3, 64, 48),  # 3 frames: one segment, seconds of work
    }


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Served]:
    work = tmp_path_factory.mktemp("served")
    with serve(
        work,
        "--workers",
        "1",
        "--inbox",
        str(work / "inbox"),
        "--outbox",
        str(work / "outbox"),
        overrides={**overrides(), "serve": DELIVERY},
    ) as stack:
        stack.env["VSR_TEST_WORK"] = str(work)
        yield stack


def _ddb(served: Served) -> object:
    return boto3.client("dynamodb", endpoint_url=served.endpoint, region_name="us-east-1", **_keys())


def _keys() -> dict[str, str]:
    return {"aws_access_key_id": "testing", "aws_secret_access_key": "testing"}


def jobs_for(served: Served, key: str) -> list[jobs.Job]:
    items = _ddb(served).scan(TableName=NAMES.table, ConsistentRead=True)["Items"]  # type: ignore[attr-defined]
    return [job for job in map(jobs.Job.from_item, items) if job.input.get("key") == key]


def terminal_job(served: Served, key: str, timeout_s: float = 300) -> jobs.Job:
    def done() -> jobs.Job | None:
        found = jobs_for(served, key)
        return found[0] if found and found[0].terminal else None

    return wait_for(done, timeout_s, f"the job of {key} to finish")


def work_dir(served: Served) -> Path:
    return Path(served.env["VSR_TEST_WORK"])


def test_aws_cli_upload_completes_once_and_is_fetched_back(
    served: Served, media: dict[str, Path], tmp_path: Path
) -> None:
    key = f"drop/{UNICODE_NAME}"
    served.aws(
        "s3", "cp", str(media["good"]), f"s3://{NAMES.input_bucket}/{key}", "--metadata", "vsr-plan=cost,owner=qa"
    )
    job = terminal_job(served, key)
    assert job.status == jobs.COMPLETE, job.error
    assert len(jobs_for(served, key)) == 1
    # user metadata from `--metadata` is on the job, and the planner read vsr-plan from it
    assert job.input["metadata"] == {"vsr-plan": "cost", "owner": "qa"}
    assert job.plan["strategy"] == "cost"

    listing = served.aws("s3", "ls", f"s3://{NAMES.output_bucket}/drop/").stdout
    assert "my clip (1) é.upscaled-x2.mp4" in listing and "my clip (1) é.upscaled-x2.json" in listing
    fetched = tmp_path / "fetched.mp4"
    served.aws("s3", "cp", f"s3://{NAMES.output_bucket}/{job.output['key']}", str(fetched))
    assert video_size(fetched) == (256, 144, 20)
    assert video_times(fetched) == video_times(media["good"])

    # the outbox got the same output and its report; the progress lines named the job with frames
    outbox = work_dir(served) / "outbox" / "drop"
    assert (outbox / "my clip (1) é.upscaled-x2.mp4").read_bytes() == fetched.read_bytes()
    assert json.loads((outbox / "my clip (1) é.upscaled-x2.json").read_text())
    assert f"{job.job_id[:8]} COMPLETE" in served.output() and "20/20 frames" in served.output()


def test_multipart_upload_gives_exactly_one_job(served: Served, media: dict[str, Path], tmp_path: Path) -> None:
    # Over the CLI's multipart threshold (64 KB in the test's AWS_CONFIG_FILE): moto sends two ObjectCreated
    # events for one CompleteMultipartUpload, as S3 may redeliver; ingest must make one job of them.
    padded = clip_builders.trim(clip_builders.real_footage()["carphone"], tmp_path / "multipart.mp4", 12, crf=0)
    assert padded.stat().st_size > 64 * 1024
    key = "multipart/clip.mp4"
    served.aws("s3", "cp", str(padded), f"s3://{NAMES.input_bucket}/{key}")
    head = json.loads(served.aws("s3api", "head-object", "--bucket", NAMES.input_bucket, "--key", key).stdout)
    assert head["ETag"].strip('"').endswith("-1")  # a multipart ETag: "<md5 of part md5s>-<parts>"
    job = terminal_job(served, key)
    assert job.status == jobs.COMPLETE, job.error
    wait_for(lambda: _ingest_queue_empty(served), 60, "the second event of the upload to be consumed")
    assert len(jobs_for(served, key)) == 1
    outputs = served.aws("s3", "ls", f"s3://{NAMES.output_bucket}/multipart/").stdout
    assert outputs.count(".mp4") == 1


def _ingest_queue_empty(served: Served) -> bool:
    sqs = boto3.client("sqs", endpoint_url=served.endpoint, region_name="us-east-1", **_keys())
    url = sqs.get_queue_url(QueueName=NAMES.ingest_queue)["QueueUrl"]
    attrs = sqs.get_queue_attributes(
        QueueUrl=url, AttributeNames=["ApproximateNumberOfMessages", "ApproximateNumberOfMessagesNotVisible"]
    )["Attributes"]
    return attrs["ApproximateNumberOfMessages"] == "0" and attrs["ApproximateNumberOfMessagesNotVisible"] == "0"


def test_bad_upload_fails_with_reason_and_error_file(served: Served, media: dict[str, Path]) -> None:
    key = "bad/notes.mp4"
    served.aws("s3", "cp", str(media["bad"]), f"s3://{NAMES.input_bucket}/{key}")
    job = terminal_job(served, key)
    assert job.status == jobs.FAILED
    assert "not a video" in job.error["reason"]
    error_file = work_dir(served) / "outbox" / "bad" / "notes.mp4.error.json"
    wait_for(error_file.is_file, 30, "the error file in the outbox")
    assert json.loads(error_file.read_text())["error"]["reason"] == job.error["reason"]


def test_inbox_uploads_only_fully_written_files(served: Served, media: dict[str, Path]) -> None:
    inbox = work_dir(served) / "inbox"
    data = media["good"].read_bytes()
    partial = inbox / UNICODE_NAME
    with partial.open("wb") as handle:
        handle.write(data[: len(data) // 2])
        handle.flush()
        # While it stays open for writing, a later file is uploaded (serve looked at the inbox several times
        # since), but this one is not.
        (inbox / "later.mov").write_bytes(data)
        wait_for(lambda: jobs_for(served, "later.mov"), 60, "the later inbox file to be uploaded")
        assert jobs_for(served, UNICODE_NAME) == []
        handle.write(data[len(data) // 2 :])
    job = terminal_job(served, UNICODE_NAME)
    assert job.status == jobs.COMPLETE, job.error
    assert job.input["size"] == len(data)
    output = work_dir(served) / "outbox" / "my clip (1) é.upscaled-x2.mp4"
    wait_for(output.is_file, 30, "the inbox file's output in the outbox")
    assert video_size(output)[2] == 20


def test_vsr_status_and_redrive_reach_the_served_stack(served: Served, media: dict[str, Path]) -> None:
    key = "status/clip.mov"
    served.aws("s3", "cp", str(media["good"]), f"s3://{NAMES.input_bucket}/{key}")
    job = terminal_job(served, key)
    listed = served.vsr("status", "--json")
    assert listed.returncode == 0, listed.stderr
    assert job.job_id in listed.stdout
    one = served.vsr("status", job.job_id, "--json")
    assert one.returncode == 0 and json.loads(one.stdout)["status"] == jobs.COMPLETE

    # a dead-lettered segment message (of a job that does not exist) goes back to its queue and is consumed
    sqs = boto3.client("sqs", endpoint_url=served.endpoint, region_name="us-east-1", **_keys())
    dlq = sqs.get_queue_url(QueueName=NAMES.segment_dlq)["QueueUrl"]
    body = json.loads(_segment_body(job))
    body["job_id"] = "0" * 32
    sqs.send_message(QueueUrl=dlq, MessageBody=json.dumps(body))
    redriven = served.vsr("redrive")
    assert redriven.returncode == 0, redriven.stderr
    assert "segments: moved 1 message(s)" in redriven.stdout
    wait_for(lambda: _depth(sqs, dlq) == 0, 60, "the dead-letter queue to be empty")


def _depth(sqs: object, url: str) -> int:
    attrs = sqs.get_queue_attributes(  # type: ignore[attr-defined]
        QueueUrl=url, AttributeNames=["ApproximateNumberOfMessages", "ApproximateNumberOfMessagesNotVisible"]
    )["Attributes"]
    return int(attrs["ApproximateNumberOfMessages"]) + int(attrs["ApproximateNumberOfMessagesNotVisible"])


def _segment_body(job: jobs.Job) -> str:
    from vsr.pipeline.messages import SegmentMessage
    from vsr.planning import Segment

    segment = Segment(
        index=0, start_frame=0, frame_count=1, start_pts=0, end_pts=None, context_before=0, context_start_pts=0
    )
    return SegmentMessage(
        job_id=job.job_id, segment=segment, input=job.input, probe={"bucket": "b", "key": "k"}, model=job.model
    ).to_json()


def test_port_in_use_is_one_clear_error_line(served: Served) -> None:
    port = served.endpoint.rsplit(":", 1)[1]
    done = served.vsr("serve", "--port", port)
    assert done.returncode == 2
    lines = [line for line in done.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and port in lines[0] and "--port" in lines[0], done.stderr


def test_sigterm_stops_cleanly_and_names_unfinished_jobs(tmp_path: Path, media: dict[str, Path]) -> None:
    plan = tmp_path / "plan.json"  # segment 0 hangs inside the engine: the job cannot finish before the stop
    plan.write_text(json.dumps({"rules": [{"segment": 0, "action": "block", "block_s": 300}]}))
    with serve(tmp_path / "stack", "--workers", "1", "--fault-plan", str(plan), overrides=overrides()) as stack:
        key = "unfinished.mov"
        stack.aws("s3", "cp", str(media["good"]), f"s3://{NAMES.input_bucket}/{key}")
        stack.wait_for_line(f"PROCESSING {key}", 120)
        code = stack.stop(timeout_s=10)  # the bound: stopped within 10 s of SIGTERM
    assert code == 0, stack.output()
    assert f"1 unfinished job(s): {key}" in stack.output()
    assert stack.output().rstrip().endswith("vsr serve: stopped")


def test_port_probe_helper_sees_a_listener(tmp_path: Path) -> None:
    from vsr.local.runtime import PortInUseError, check_port_free

    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen()
        with pytest.raises(PortInUseError, match="--port"):
            check_port_free("127.0.0.1", listener.getsockname()[1])


# --- hostile keys -------------------------------------------------------------------------------------------
def _settled(
    served: Served, hostile: list[str], ordinary: list[str], clip: Path, other: dict[str, Path] | None = None
) -> fuzz.FuzzResult:
    result = fuzz.run_keys(served, work_dir(served) / "outbox", hostile, ordinary, clip, timeout_s=600, other=other)
    assert not result.problems(), (result.counts(), result.problems())
    outbox = work_dir(served) / "outbox"
    for outcome in result.outcomes:
        if outcome.ordinary:  # not held back by the hostile ones: out on serve's first look at it COMPLETE
            assert outcome.job is not None
            assert fuzz.delivered_on_first_look(served.output(), outcome.job, outbox), outcome.key
    return result


def test_hostile_keys_end_delivered_or_with_an_error_file_and_never_hold_back_others(
    served: Served, media: dict[str, Path], tmp_path: Path
) -> None:
    outbox = work_dir(served) / "outbox"
    blocked = "blocked/clip.mp4"  # a folder where its video must go: every delivery attempt fails
    (outbox / local_path("blocked/clip.upscaled-x2.mp4")).mkdir(parents=True)
    bad = "hostile/bad \x01" + "b" * 300 + ".mp4"  # not a video, under a long name with a control character
    hostile = [*hostile_keys.FIXED, blocked, bad]
    ordinary = ["ordinary/first.mp4", "ordinary/second.mp4"]
    result = _settled(served, hostile, ordinary, media["tiny"], other={bad: media["bad"]})
    by_key = {outcome.key: outcome for outcome in result.outcomes}
    failed = by_key[bad]
    assert failed.job is not None and failed.job.status == jobs.FAILED and "not a video" in str(failed.reason)
    assert failed.error_file is not None and failed.error_file.name.endswith(".mp4.error.json")

    # the 300-byte name and the 1024-byte key completed, under output keys S3 accepts and names that fit
    for key in ("hostile/" + "n" * 300 + ".mp4", "deep/" + "d" * 1015 + ".mp4"):
        outcome = by_key[key]
        assert outcome.job is not None and outcome.job.status == jobs.COMPLETE and outcome.delivered
        assert len(outcome.job.output["key"].encode()) <= keys.MAX_KEY_BYTES
        assert all(len(path.name.encode()) <= NAME_MAX for path in outcome.delivered)
        report = json.loads(outcome.delivered[1].read_text())
        assert report["input"]["key"] == key  # the report records the original key
    assert len(by_key["deep/" + "d" * 1015 + ".mp4"].key.encode()) == keys.MAX_KEY_BYTES
    # traversal stays inside the outbox
    for outcome in result.outcomes:
        for path in outcome.delivered:
            assert path.resolve().is_relative_to(outbox.resolve())

    # the blocked one: one line per attempt, then its delivery error, whose command fetches the output
    failed_lines = [line for line in served.output().splitlines() if f"delivery of {blocked} failed" in line]
    assert len(failed_lines) == DELIVERY["delivery_attempts"], failed_lines
    body = json.loads(by_key[blocked].error_file.read_text())  # type: ignore[union-attr]
    assert "IsADirectoryError" in body["reason"] and body["input"]["key"] == blocked
    video = body["objects"][0]
    assert video["location"] == f"s3://{NAMES.output_bucket}/blocked/clip.upscaled-x2.mp4"
    env = {**served.env, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"}
    done = subprocess.run(
        ["bash", "-c", video["command"]], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, (video["command"], done.stderr)
    assert video_size(tmp_path / shlex.split(video["command"])[-1]) == (128, 96, 3)


def test_fuzzed_keys_end_delivered_or_with_a_reason(served: Served, media: dict[str, Path]) -> None:
    hostile = hostile_keys.draw(FUZZ_SEED, FUZZ_KEYS, fixed=False)
    result = _settled(served, hostile, [f"ordinary/fuzz-{FUZZ_SEED}.mp4"], media["tiny"])
    assert result.counts()["uploads"] == FUZZ_KEYS + 1, f"seed {FUZZ_SEED}"
