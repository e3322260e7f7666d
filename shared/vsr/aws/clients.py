"""Cached boto3 clients and the retry policy for our own transient classification.

Two layers of retries: botocore's standard mode retries throttling and 5xx inside each call; `aws_retry`
(tenacity) retries whole operations on top of it, e.g. a ranged GET whose body stream broke mid-read, which
botocore cannot retry because the response had already started.

The endpoint comes from `VSR_ENDPOINT_URL` (a moto server locally, unset on AWS). Clients are thread-safe
once created; creation is not, hence the lock.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Callable
from typing import Any, TypeVar

import boto3
import botocore.exceptions
from botocore.config import Config
from tenacity import retry, retry_if_exception, stop_after_attempt, wait_random_exponential

from vsr.errors import TransientError

T = TypeVar("T")

SERVICES = ("s3", "sqs", "dynamodb", "dynamodbstreams", "events")
FALLBACK_REGION = "us-east-1"  # only used against a local endpoint where no region is configured

# botocore standard mode: exponential backoff on throttling, 5xx and connection errors inside one call.
_BOTO_CONFIG = Config(
    retries={"mode": "standard", "max_attempts": 5},
    connect_timeout=5,
    read_timeout=60,
    max_pool_connections=32,
)

# Error codes that mean "try again later" (AWS and moto spellings).
TRANSIENT_CODES = frozenset(
    {
        "Throttling",
        "ThrottlingException",
        "ThrottledException",
        "RequestThrottled",
        "RequestThrottledException",
        "TooManyRequestsException",
        "ProvisionedThroughputExceededException",
        "RequestLimitExceeded",
        "SlowDown",
        "InternalError",
        "InternalFailure",
        "ServiceUnavailable",
        "RequestTimeout",
        "RequestTimeoutException",
        "TransactionConflictException",
        "KMS.ThrottlingException",
    }
)
_TRANSIENT_BOTOCORE = (
    botocore.exceptions.EndpointConnectionError,
    botocore.exceptions.ConnectionClosedError,
    botocore.exceptions.ConnectTimeoutError,
    botocore.exceptions.ReadTimeoutError,
    botocore.exceptions.ResponseStreamingError,
    botocore.exceptions.IncompleteReadError,
)

# What a local endpoint gets when no credentials are configured (moto ignores them).
LOCAL_CREDENTIALS = {
    "AWS_ACCESS_KEY_ID": "testing",
    "AWS_SECRET_ACCESS_KEY": "testing",
    "AWS_SESSION_TOKEN": "testing",
    "AWS_DEFAULT_REGION": FALLBACK_REGION,
}

_lock = threading.Lock()
_clients: dict[tuple[str, str | None, str | None], Any] = {}


def endpoint_url() -> str | None:
    return os.environ.get("VSR_ENDPOINT_URL") or None


def _region(endpoint: str | None) -> str | None:
    region = os.environ.get("AWS_REGION") or os.environ.get("AWS_DEFAULT_REGION")
    return region or (FALLBACK_REGION if endpoint else None)


def client(service: str) -> Any:
    """One boto3 client per (service, endpoint, region) per process, reused across warm invocations."""
    if service not in SERVICES:
        raise ValueError(f"unsupported service {service!r}; expected one of {SERVICES}")
    endpoint = endpoint_url()
    region = _region(endpoint)
    key = (service, endpoint, region)
    with _lock:
        found = _clients.get(key)
        if found is None:
            session = boto3.session.Session()
            found = session.client(service, endpoint_url=endpoint, region_name=region, config=_BOTO_CONFIG)
            _clients[key] = found
        return found


def s3() -> Any:
    return client("s3")


def sqs() -> Any:
    return client("sqs")


def dynamodb() -> Any:
    return client("dynamodb")


def dynamodbstreams() -> Any:
    return client("dynamodbstreams")


def events() -> Any:
    return client("events")


def use_endpoint(endpoint: str) -> None:
    """Point this process's clients at a local endpoint (a moto server); moto accepts any credentials."""
    for name, value in LOCAL_CREDENTIALS.items():
        os.environ.setdefault(name, value)
    os.environ["VSR_ENDPOINT_URL"] = endpoint.rstrip("/")
    reset_clients()


def reset_clients() -> None:
    """Forget cached clients (tests that switch endpoints)."""
    with _lock:
        _clients.clear()


def error_code(exc: BaseException) -> str:
    if isinstance(exc, botocore.exceptions.ClientError):
        return str(exc.response.get("Error", {}).get("Code", ""))
    return ""


def http_status(exc: BaseException) -> int:
    if isinstance(exc, botocore.exceptions.ClientError):
        return int(exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode", 0) or 0)
    return 0


def is_transient(exc: BaseException) -> bool:
    """Throttling, 5xx, broken connections and our own TransientError are worth retrying."""
    if isinstance(exc, TransientError):
        return True
    if isinstance(exc, _TRANSIENT_BOTOCORE):
        return True
    if isinstance(exc, botocore.exceptions.ClientError):
        return error_code(exc) in TRANSIENT_CODES or http_status(exc) >= 500
    return isinstance(exc, ConnectionError | TimeoutError)


def is_conditional_check_failed(exc: BaseException) -> bool:
    return error_code(exc) == "ConditionalCheckFailedException"


def aws_retry(attempts: int = 4, max_wait_s: float = 5.0) -> Callable[[Callable[..., T]], Callable[..., T]]:
    """Retry a whole operation on transient errors (after botocore's own retries); re-raise the last error."""
    return retry(
        retry=retry_if_exception(is_transient),
        stop=stop_after_attempt(attempts),
        wait=wait_random_exponential(multiplier=0.2, max=max_wait_s),
        reraise=True,
    )


def as_transient(exc: BaseException, what: str) -> TransientError:
    """Wrap an AWS failure that outlived the retries so the stage reports it as retryable."""
    return TransientError(f"{what}: {type(exc).__name__}: {exc}")


def call(
    what: str,
    operation: Callable[[], T],
    *,
    on_error: Callable[[Exception], Exception | None] | None = None,
) -> T:
    """Run one AWS operation with `aws_retry`; what outlives the retries becomes one of our errors.

    `on_error` may map a failure to a specific error (a missing object, a configuration problem) or return None;
    otherwise a transient failure becomes a TransientError naming `what`, and anything else is re-raised as is.
    """
    try:
        return aws_retry()(operation)()
    except (botocore.exceptions.ClientError, botocore.exceptions.BotoCoreError) as exc:
        mapped = on_error(exc) if on_error else None
        if mapped is not None:
            raise mapped from exc
        if is_transient(exc):
            raise as_transient(exc, what) from exc
        raise
