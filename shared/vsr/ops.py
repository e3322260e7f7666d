"""Operations commands: `vsr status` (jobs and per-segment state) and `vsr redrive` (dead letters back to work).

Where the resources are: the names the functions use come from the same VSR_* variables Terraform sets on
the Lambdas (`terraform output -json` lists them; export VSR_TABLE, VSR_INGEST_QUEUE_URL and
VSR_SEGMENT_QUEUE_URL). A variable that is not set falls back to the deterministic name from
`vsr.aws.deployment` (prefix from settings), which is what Terraform and the local runtime
create, so in the default deployment nothing needs exporting. Dead-letter queues are never configured
separately: they are read from each source queue's RedrivePolicy, so they cannot disagree with it.
`--endpoint URL` (or VSR_ENDPOINT_URL) points both commands at a local runtime's moto server.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import boto3
import botocore.exceptions
from botocore.config import Config

from vsr.aws import clients, deployment
from vsr.aws.resources import Resources
from vsr.guard import recomputed_fraction
from vsr.logs import get_logger
from vsr.pipeline import jobs
from vsr.pipeline import redrive as redrive_jobs
from vsr.pipeline.jobs import Job
from vsr.pipeline.retry import retrying_texts
from vsr.planning import eta_s
from vsr.settings import get_settings

log = get_logger(__name__)

QUEUES = ("ingest", "segments", "segments-gpu")  # segments-gpu: the GPU fleet's, where it is deployed
MOVE_TASK_DEADLINE_S = 300.0  # how long `vsr redrive` follows an AWS message move task before reporting
MOVE_TASK_POLL_S = 2.0
NOT_IMPLEMENTED_CODES = frozenset(
    {"InternalFailure", "InternalError", "InvalidAction", "UnknownOperation", "NotImplemented"}
)


# --- where things are -------------------------------------------------------------------------------------
def _connect(endpoint: str | None) -> None:
    if endpoint:
        clients.use_endpoint(endpoint)


def table_name() -> str:
    return Resources.from_env().table or deployment.table_name(get_settings().name_prefix)


def source_queue_url(queue: str) -> str:
    env = Resources.from_env()
    url = {
        "ingest": env.ingest_queue_url,
        "segments": env.segment_queue_url,
        "segments-gpu": env.gpu_segment_queue_url,
    }[queue]
    if url:
        return url
    name = deployment.queue_name(get_settings().name_prefix, queue)
    return str(clients.sqs().get_queue_url(QueueName=name)["QueueUrl"])


def queue_exists(queue: str) -> bool:
    """False for the GPU queue of a deployment without the fleet."""
    try:
        source_queue_url(queue)
    except botocore.exceptions.ClientError as exc:
        if "NonExistentQueue" in exc.response["Error"]["Code"] or "QueueDoesNotExist" in exc.response["Error"]["Code"]:
            return False
        raise
    return True


@dataclass(frozen=True)
class QueuePair:
    label: str
    source_url: str
    source_arn: str
    dlq_url: str
    dlq_arn: str


def queue_pair(queue: str) -> QueuePair:
    """The source queue and the DLQ its RedrivePolicy names."""
    sqs = clients.sqs()
    url = source_queue_url(queue)
    attrs = sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["QueueArn", "RedrivePolicy"])["Attributes"]
    if "RedrivePolicy" not in attrs:
        raise RuntimeError(f"queue {url} has no redrive policy (no dead-letter queue)")
    dlq_arn = json.loads(attrs["RedrivePolicy"])["deadLetterTargetArn"]
    _, _, _, _, account, dlq_name = dlq_arn.split(":", 5)
    dlq_url = sqs.get_queue_url(QueueName=dlq_name, QueueOwnerAWSAccountId=account)["QueueUrl"]
    return QueuePair(queue, url, attrs["QueueArn"], dlq_url, dlq_arn)


def queue_depth(url: str) -> int:
    attrs = clients.sqs().get_queue_attributes(
        QueueUrl=url, AttributeNames=["ApproximateNumberOfMessages", "ApproximateNumberOfMessagesNotVisible"]
    )["Attributes"]
    return int(attrs.get("ApproximateNumberOfMessages", 0)) + int(attrs.get("ApproximateNumberOfMessagesNotVisible", 0))


def peek_dead_letters(dlq_url: str) -> list[dict[str, Any]]:
    """Up to 10 dead-lettered segment messages as parsed bodies, left visible (visibility 0), like the console's
    "poll for messages"; used to tell which segments of a job are dead-lettered."""
    response = clients.sqs().receive_message(
        QueueUrl=dlq_url, MaxNumberOfMessages=10, VisibilityTimeout=0, WaitTimeSeconds=0, AttributeNames=["All"]
    )
    bodies = []
    for message in response.get("Messages", []):
        try:
            body = json.loads(message["Body"])
        except ValueError:
            continue
        if isinstance(body, dict):
            body["_receive_count"] = int(message.get("Attributes", {}).get("ApproximateReceiveCount", 0))
            bodies.append(body)
    return bodies


# --- status -----------------------------------------------------------------------------------------------
def segment_rows(job: Job, dead_lettered: set[int]) -> list[dict[str, Any]]:
    """Per-segment state: done, dead-lettered, failing (retrying), running (progress reported) or pending."""
    rows = []
    for index in range(job.segment_count):
        error = job.segment_errors.get(index, {})
        if index in job.done:
            state = "done"
        elif index in dead_lettered:
            state = "dead-lettered"
        elif error:
            state = "retrying"
        else:
            state = "pending"
        if state in ("pending", "retrying") and job.segment_progress.get(index):
            state = "running" if state == "pending" else state
        rows.append(
            {
                "index": index,
                "state": state,
                "frames_written": job.segment_progress.get(index, 0),
                "attempts": error.get("attempts", 0),
                "error": error.get("error"),
                "code": error.get("code"),
            }
        )
    return rows


def job_status(job_id: str) -> dict[str, Any] | None:
    job = jobs.get_job(job_id, table_name())
    if job is None:
        return None
    dead: set[int] = set()
    waits_for_redrive = job.status == jobs.FAILED and (job.error or {}).get("code") == jobs.DEAD_LETTERED
    if (not job.terminal or waits_for_redrive) and job.segment_count:
        try:
            for body in peek_dead_letters(queue_pair("segments").dlq_url):
                if body.get("job_id") == job_id and isinstance(body.get("segment"), dict):
                    dead.add(int(body["segment"]["index"]))
        except botocore.exceptions.ClientError as exc:  # no queue access: the record alone still answers
            log.warning("dead_letter_peek_failed", error=str(exc))
    data = job.to_dict()
    data["segments"] = segment_rows(job, dead)
    data["done_count"] = len(job.done)
    data["retrying"] = retrying_texts(job.segment_errors, job.done | dead, time.time()) if not job.terminal else []
    if job.status in (jobs.QUEUED, jobs.PROCESSING) and job.plan.get("predicted_wall_s"):
        data["eta_s"] = eta_s(
            predicted_wall_s=float(job.plan["predicted_wall_s"]),
            elapsed_s=time.time() - job.created_at,
            frames_done=job.frames_done,
            frames_total=job.frames_total,
        )
    return data


def _age(created_at: float) -> str:
    seconds = max(0, time.time() - float(created_at or 0))
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= size:
            return f"{seconds / size:.0f}{unit}"
    return f"{seconds:.0f}s"


def _print_job(data: dict[str, Any]) -> None:
    source = data["input"]
    print(f"job      {data['job_id']}")
    print(f"status   {data['status']}")
    print(f"input    s3://{source.get('bucket')}/{source.get('key')}")
    model = data.get("model") or {}
    if model:
        print(f"model    {model.get('name')} x{model.get('scale')} ({model.get('precision', 'fp32')})")
    recomputed = recomputed_fraction(data.get("segment_totals") or {})
    if recomputed is not None:
        print(f"guard    {recomputed:.2%} of input pixels recomputed in fp32 (int8 activations clipped there)")
    if data.get("probe"):
        p = data["probe"]
        print(f"probe    {json.dumps(p, default=str)}")
    print(f"segments {data['done_count']}/{data['segment_count']} done, remaining {data['remaining']}")
    if data.get("frames_total"):
        print(f"frames   {data['frames_done']}/{data['frames_total']} upscaled")
    if data.get("plan"):
        plan = data["plan"]
        print(
            f"plan     {plan.get('strategy')}: {plan.get('segments')} segments of <= {plan.get('frames_per_segment')} "
            f"frames, predicted {plan.get('predicted_wall_s', 0):.0f} s and ${plan.get('predicted_cost_usd', 0):.4f}"
        )
    for line in data.get("retrying", []):  # what the job waits for says more than "ETA unknown"
        print(f"retry    {line}")
    if "eta_s" in data and not (data["eta_s"] is None and data.get("retrying")):
        print(f"eta      {'unknown (behind plan)' if data['eta_s'] is None else format(data['eta_s'], '.0f') + ' s'}")
    if data.get("error"):
        print(f"error    {data['error'].get('reason')}")
    if data.get("output"):
        out = data["output"]
        print(f"output   s3://{out.get('bucket')}/{out.get('key')}")
        if out.get("flicker_ratio") is not None:
            print(f"flicker  {float(out['flicker_ratio']):.3f} (output / bicubic warping error; report: quality)")
        if out.get("preview_key"):
            print(f"preview  s3://{out.get('bucket')}/{out['preview_key']}")
    if data.get("timings"):
        print(f"timings  {json.dumps(data['timings'], default=str)}")
    if data["segments"]:
        print(f"{'seg':>5}  {'state':<14}{'frames':>7}{'attempts':>9}  last error")
        for row in data["segments"]:
            frames = row["frames_written"] or ""
            print(f"{row['index']:>5}  {row['state']:<14}{frames:>7}{row['attempts']:>9}  {row['error'] or ''}")


def _reachable(command: Any) -> Any:
    """Turn "no credentials" / "cannot connect" / "no such table" into one clear line instead of a traceback."""

    def run(args: argparse.Namespace) -> int:
        try:
            return int(command(args))
        except (botocore.exceptions.NoCredentialsError, botocore.exceptions.EndpointConnectionError) as exc:
            where = args.endpoint or clients.endpoint_url() or "AWS"
            print(f"vsr {args.command}: cannot reach {where}: {exc}", file=sys.stderr)
        except botocore.exceptions.ClientError as exc:
            code = exc.response.get("Error", {}).get("Code", "")
            if code not in (
                "ResourceNotFoundException",
                "AWS.SimpleQueueService.NonExistentQueue",
                "QueueDoesNotExist",
            ):
                raise
            print(
                f"vsr {args.command}: {exc.response['Error'].get('Message', code)}; set VSR_TABLE / VSR_*_QUEUE_URL "
                "(`terraform output env_exports`) or --endpoint of a running local runtime",
                file=sys.stderr,
            )
        return 2

    return run


@_reachable
def status_command(args: argparse.Namespace) -> int:
    """`vsr status [JOB] [--json]`: recent jobs, or one job with its segments and the user-facing error."""
    _connect(args.endpoint)
    if args.job_id:
        data = job_status(args.job_id)
        if data is None:
            print(f"vsr status: no job {args.job_id} in table {table_name()}", file=sys.stderr)
            return 1
        if args.json:
            print(json.dumps(data, default=str))
        else:
            _print_job(data)
        return 0
    listing = [
        {
            "job_id": job.job_id,
            "status": job.status,
            "input": f"s3://{job.input.get('bucket')}/{job.input.get('key')}",
            "done": len(job.done),
            "segments": job.segment_count,
            "age": _age(job.created_at),
            "created_at": job.created_at,
            "error": (job.error or {}).get("reason"),
        }
        for job in jobs.list_jobs(table_name(), limit=None)[:50]
    ]
    if args.json:
        print(json.dumps(listing, default=str))
        return 0
    if not listing:
        print(f"no jobs in table {table_name()}")
        return 0
    print(f"{'job':<34}{'status':<12}{'segments':>9}  {'age':>5}  input")
    for row in listing:
        line = f"{row['job_id']:<34}{row['status']:<12}{row['done']:>4}/{row['segments']:<4}  {row['age']:>5}  {row['input']}"
        if row["error"]:
            line += f"  ({row['error']})"
        print(line)
    return 0


# --- redrive ----------------------------------------------------------------------------------------------
def _no_retry_sqs() -> Any:
    """An SQS client that fails fast: moto answers StartMessageMoveTask with HTTP 500, which botocore retries."""
    endpoint = clients.endpoint_url()
    region = os.environ.get("AWS_REGION") or os.environ.get("AWS_DEFAULT_REGION") or clients.FALLBACK_REGION
    return boto3.session.Session().client(
        "sqs", endpoint_url=endpoint, region_name=region, config=Config(retries={"max_attempts": 1, "mode": "standard"})
    )


def _move_task_unavailable(exc: botocore.exceptions.ClientError) -> bool:
    status = int(exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode", 0) or 0)
    return status in (500, 501) or exc.response.get("Error", {}).get("Code") in NOT_IMPLEMENTED_CODES


def _attributes_for_send(attributes: dict[str, Any]) -> dict[str, Any]:
    keep = ("DataType", "StringValue", "BinaryValue")
    return {name: {k: v for k, v in attr.items() if k in keep} for name, attr in attributes.items()}


def move_messages(
    source_url: str, target_url: str, before_send: Callable[[list[str]], object] | None = None
) -> tuple[int, int]:
    """Receive/send/delete loop: bodies and message attributes preserved; a message leaves the source only
    after the target accepted it; `before_send(bodies)` runs before each batch goes back (reopening its jobs).
    Returns (moved, failed); failed ones stay in the source."""
    sqs = clients.sqs()
    moved = failed = 0
    while True:
        response = sqs.receive_message(
            QueueUrl=source_url, MaxNumberOfMessages=10, WaitTimeSeconds=1, MessageAttributeNames=["All"]
        )
        messages = response.get("Messages", [])
        if not messages:
            return moved, failed
        if before_send is not None:
            before_send([message["Body"] for message in messages])
        entries = []
        for i, message in enumerate(messages):
            entry: dict[str, Any] = {"Id": str(i), "MessageBody": message["Body"]}
            if message.get("MessageAttributes"):
                entry["MessageAttributes"] = _attributes_for_send(message["MessageAttributes"])
            entries.append(entry)
        result = sqs.send_message_batch(QueueUrl=target_url, Entries=entries)
        sent = {item["Id"] for item in result.get("Successful", [])}
        for item in result.get("Failed", []):
            log.warning("redrive_send_failed", id=item.get("Id"), code=item.get("Code"), message=item.get("Message"))
        failed += len(messages) - len(sent)
        if sent:
            sqs.delete_message_batch(
                QueueUrl=source_url,
                Entries=[
                    {"Id": str(i), "ReceiptHandle": m["ReceiptHandle"]}
                    for i, m in enumerate(messages)
                    if str(i) in sent
                ],
            )
            moved += len(sent)


def _follow_move_task(sqs: Any, dlq_arn: str, handle: str) -> int:
    deadline = time.monotonic() + MOVE_TASK_DEADLINE_S
    ticker = threading.Event()
    while time.monotonic() < deadline:
        for task in sqs.list_message_move_tasks(SourceArn=dlq_arn, MaxResults=10).get("Results", []):
            if task.get("TaskHandle") == handle and task.get("Status") in ("COMPLETED", "FAILED", "CANCELLED"):
                if task["Status"] != "COMPLETED":
                    raise RuntimeError(f"message move task {task['Status']}: {task.get('FailureReason')}")
                return int(task.get("ApproximateNumberOfMessagesMoved", 0))
        ticker.wait(MOVE_TASK_POLL_S)
    raise TimeoutError(f"message move task {handle} still running after {MOVE_TASK_DEADLINE_S:.0f} s")


def _reopener(queue: str, pair: QueuePair, reopened: list[str]) -> Callable[[list[str]], object] | None:
    """For the segment queue: reopen the FAILED jobs of dead-lettered segments before their messages go back
    (vsr.pipeline.redrive), noting their ids in `reopened`; ingest needs nothing, it starts a dead-lettered job
    over by itself."""
    if queue != "segments":
        return None
    table = table_name()
    return lambda bodies: reopened.extend(redrive_jobs.reopen_jobs(bodies, table, pair.source_url))


def _peek_all(dlq_url: str, hold_s: int = 60) -> list[dict[str, Any]]:
    """Every message of a DLQ, received (hidden `hold_s`) so each is seen once; `_release` shows them again."""
    sqs = clients.sqs()
    seen: dict[str, dict[str, Any]] = {}
    while True:
        messages = sqs.receive_message(
            QueueUrl=dlq_url, MaxNumberOfMessages=10, VisibilityTimeout=hold_s, WaitTimeSeconds=0
        ).get("Messages", [])
        fresh = [m for m in messages if m["MessageId"] not in seen]
        if not fresh:
            return list(seen.values())
        seen.update({m["MessageId"]: m for m in fresh})


def _release(dlq_url: str, messages: list[dict[str, Any]]) -> None:
    for message in messages:
        with contextlib.suppress(botocore.exceptions.ClientError):
            clients.sqs().change_message_visibility(
                QueueUrl=dlq_url, ReceiptHandle=message["ReceiptHandle"], VisibilityTimeout=0
            )


def redrive(queue: str) -> dict[str, Any]:
    """Return one queue's dead letters to it: StartMessageMoveTask where the API exists, else the loop. Jobs
    FAILED because of a dead letter go back to PROCESSING first (`_reopener`)."""
    pair = queue_pair(queue)
    waiting = queue_depth(pair.dlq_url)
    reopened: list[str] = []
    reopen = _reopener(queue, pair, reopened)
    fast = _no_retry_sqs()
    held: list[dict[str, Any]] = []
    if reopen is not None and waiting:  # the move task moves them unseen: reopen their jobs before it starts
        held = _peek_all(pair.dlq_url)
        reopen([m["Body"] for m in held])
    try:
        _release(pair.dlq_url, held)
        handle = fast.start_message_move_task(SourceArn=pair.dlq_arn)["TaskHandle"]
    except botocore.exceptions.ClientError as exc:
        if not _move_task_unavailable(exc):
            raise
        moved, failed = move_messages(pair.dlq_url, pair.source_url, reopen)
        return {
            "queue": queue,
            "method": "receive/send/delete",
            "moved": moved,
            "failed": failed,
            "dlq": pair.dlq_url,
            "reopened": reopened,
        }
    moved = _follow_move_task(fast, pair.dlq_arn, handle)
    return {
        "queue": queue,
        "method": "StartMessageMoveTask",
        "moved": moved,
        "failed": 0,
        "waiting": waiting,
        "dlq": pair.dlq_url,
        "reopened": reopened,
    }


@_reachable
def redrive_command(args: argparse.Namespace) -> int:
    """`vsr redrive [--queue ingest|segments|all]`: print how many messages went back to each source queue."""
    _connect(args.endpoint)
    selected = QUEUES if args.queue == "all" else (args.queue,)
    failed = 0
    for queue in selected:
        if queue == "segments-gpu" and not queue_exists(queue):
            print(f"{queue}: not deployed (no GPU fleet); nothing to redrive")
            continue
        result = redrive(queue)
        failed += result["failed"]
        line = f"{queue}: moved {result['moved']} message(s) back from the dead-letter queue ({result['method']})"
        if result["failed"]:
            line += f"; {result['failed']} could not be sent and stay in the dead-letter queue"
        if result["reopened"]:
            line += f"; job(s) back to PROCESSING: {', '.join(result['reopened'])}"
        print(line)
    return 1 if failed else 0
