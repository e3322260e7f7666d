"""One real moto server process for the stage tests; state reset and resources re-created per test.

The server is `python -m moto.server` with moto's DynamoDB item operations serialised
(`vsr.local.moto_compat`, via tests.support.moto_server): real DynamoDB applies a conditional update atomically, threaded moto does not,
and the concurrent-duplicate tests check our conditions, not moto's missing lock. Set
VSR_TEST_PLAIN_MOTO=1 to run against unpatched moto (the concurrency test then fails about 1 run in 6).
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.moto_server import fake_credentials, moto_server, reset
from vsr.aws import clients
from vsr.aws.resources import Resources
from vsr.pipeline import jobs
from vsr.settings import get_settings


@pytest.fixture(scope="session")
def moto_url() -> Iterator[str]:
    with moto_server() as url:
        yield url


@pytest.fixture
def aws(moto_url: str, monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    """A clean moto server with VSR_ENDPOINT_URL and fake credentials in the environment."""
    reset(moto_url)
    for name, value in fake_credentials().items():
        monkeypatch.setenv(name, value)
    monkeypatch.setenv("VSR_ENDPOINT_URL", moto_url)
    clients.reset_clients()
    yield moto_url
    clients.reset_clients()


@pytest.fixture
def resources(aws: str, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Resources:
    """Buckets, queues and the job table as the pipeline expects them; their names set in the environment."""
    suffix = uuid.uuid4().hex[:8]
    s3, sqs = clients.s3(), clients.sqs()
    buckets = {name: f"vsr-{name}-{suffix}" for name in ("input", "output", "work", "models")}
    for bucket in buckets.values():
        s3.create_bucket(Bucket=bucket)
    settings = get_settings()
    max_receive = {"ingest": settings.ingest_max_receive_count, "segments": settings.segment_max_receive_count}
    queues = {}
    for name in ("ingest", "segments"):
        dlq = sqs.create_queue(QueueName=f"vsr-{name}-dlq-{suffix}")["QueueUrl"]
        dlq_arn = sqs.get_queue_attributes(QueueUrl=dlq, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]
        queues[name] = sqs.create_queue(
            QueueName=f"vsr-{name}-{suffix}",
            Attributes={
                "RedrivePolicy": json.dumps({"deadLetterTargetArn": dlq_arn, "maxReceiveCount": str(max_receive[name])})
            },
        )["QueueUrl"]
    table = f"vsr-jobs-{suffix}"
    clients.dynamodb().create_table(TableName=table, **jobs.table_spec())
    res = Resources(
        input_bucket=buckets["input"],
        output_bucket=buckets["output"],
        work_bucket=buckets["work"],
        models_bucket=buckets["models"],
        ingest_queue_url=queues["ingest"],
        segment_queue_url=queues["segments"],
        table=table,
        model_key="models/realesr-animevideov3-x2.onnx",
    )
    for name, value in res.to_env().items():
        monkeypatch.setenv(name, value)
    monkeypatch.setenv("VSR_MODEL_DIR", str(tmp_path / "models"))
    monkeypatch.setenv("VSR_TMP_DIR", str(tmp_path / "tmp"))
    return res
