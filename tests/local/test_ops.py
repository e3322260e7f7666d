"""`vsr redrive` and `vsr status` against a real moto server process (no handlers involved)."""

from __future__ import annotations

import io
import json
from contextlib import redirect_stdout
from pathlib import Path
from typing import Any

import pytest

from vsr import ops
from vsr.aws import clients
from vsr.cli import main
from vsr.local.provision import provision
from vsr.pipeline import jobs


@pytest.fixture
def provisioned(aws: Any, tmp_path: Path) -> Any:
    model = tmp_path / "model.onnx"
    model.write_bytes(b"not a real model: these tests never run a worker")
    return provision(model_path=model)


def _cli(*argv: str) -> tuple[int, str]:
    out = io.StringIO()
    with redirect_stdout(out):
        code = main(list(argv))
    return code, out.getvalue()


def test_redrive_falls_back_to_a_loop_that_keeps_bodies_and_attributes(provisioned: Any, moto_url: str) -> None:
    sqs = clients.sqs()
    entries = [
        {
            "Id": str(i),
            "MessageBody": json.dumps({"n": i, "text": "é" * i}),
            "MessageAttributes": {
                "kind": {"DataType": "String", "StringValue": f"k{i}"},
                "blob": {"DataType": "Binary", "BinaryValue": bytes([i, 255])},
                "count": {"DataType": "Number", "StringValue": str(i)},
            },
        }
        for i in range(13)  # more than one receive batch
    ]
    for start in (0, 10):
        sqs.send_message_batch(QueueUrl=provisioned.segment_dlq_url, Entries=entries[start : start + 10])

    code, text = _cli("redrive", "--queue", "segments", "--endpoint", moto_url)
    assert code == 0
    assert "segments: moved 13 message(s)" in text and "receive/send/delete" in text  # moto lacks the API
    assert ops.queue_depth(provisioned.segment_dlq_url) == 0

    received: dict[int, dict[str, Any]] = {}
    while len(received) < 13:
        batch = sqs.receive_message(
            QueueUrl=provisioned.segment_queue_url,
            MaxNumberOfMessages=10,
            WaitTimeSeconds=1,
            MessageAttributeNames=["All"],
        ).get("Messages", [])
        assert batch, f"only {len(received)} of 13 messages came back"
        for message in batch:
            received[json.loads(message["Body"])["n"]] = message
    for i, message in received.items():
        assert json.loads(message["Body"]) == {"n": i, "text": "é" * i}
        attrs = message["MessageAttributes"]
        assert attrs["kind"]["StringValue"] == f"k{i}"
        assert attrs["blob"]["BinaryValue"] == bytes([i, 255])
        assert attrs["count"]["StringValue"] == str(i) and attrs["count"]["DataType"] == "Number"


def test_redrive_keeps_messages_whose_send_fails(provisioned: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    sqs = clients.sqs()
    sqs.send_message(QueueUrl=provisioned.segment_dlq_url, MessageBody="keep me")
    real = sqs.send_message_batch

    def failing(**kwargs: Any) -> dict[str, Any]:
        return {
            "Successful": [],
            "Failed": [{"Id": e["Id"], "Code": "Boom", "SenderFault": False} for e in kwargs["Entries"]],
        }

    monkeypatch.setattr(sqs, "send_message_batch", failing)
    moved, failed = ops.move_messages(provisioned.segment_dlq_url, provisioned.segment_queue_url)
    monkeypatch.setattr(sqs, "send_message_batch", real)
    assert (moved, failed) == (0, 1)
    assert ops.queue_depth(provisioned.segment_dlq_url) == 1  # still in the DLQ (invisible until its timeout)
    assert ops.queue_depth(provisioned.segment_queue_url) == 0


def test_dlq_is_read_from_the_redrive_policy(provisioned: Any) -> None:
    pair = ops.queue_pair("segments")
    assert pair.source_url == provisioned.segment_queue_url
    assert pair.dlq_url == provisioned.segment_dlq_url


def test_status_lists_jobs_and_shows_one(provisioned: Any, moto_url: str) -> None:
    table = provisioned.names.table
    for name, status in (("a.mp4", jobs.QUEUED), ("b.mp4", jobs.FAILED)):
        item = jobs.new_job_item(
            job_id=jobs.job_id_for("in", name, None, "etag"),
            status=status,
            input_ref={"bucket": "in", "key": name},
            now=1.0 if name == "a.mp4" else 2.0,
            ttl_s=60,
            segment_count=3 if status == jobs.QUEUED else 0,
            error={"code": "not_a_video", "reason": "not a video file"} if status == jobs.FAILED else None,
        )
        jobs.create_job(item, table)
    code, text = _cli("status", "--json", "--endpoint", moto_url)
    assert code == 0
    listing = json.loads(text)
    assert [row["input"] for row in listing] == ["s3://in/b.mp4", "s3://in/a.mp4"]  # newest first
    assert listing[0]["error"] == "not a video file"
    code, text = _cli("status", "--endpoint", moto_url)
    assert code == 0 and "not a video file" in text and "0/3" in text

    queued = jobs.job_id_for("in", "a.mp4", None, "etag")
    code, text = _cli("status", queued, "--endpoint", moto_url)
    assert code == 0
    assert "QUEUED" in text and "pending" in text and "0/3 done" in text
    code, _ = _cli("status", "0" * 32, "--endpoint", moto_url)
    assert code == 1
