"""The upload API's Lambda: API Gateway HTTP API events (payload 2.0) -> vsr.web.api.handle -> HTTP responses.

The user is the `sub` claim the Cognito JWT authorizer verified (`requestContext.authorizer.jwt.claims.sub`);
API Gateway refuses a request without a valid token before it gets here. CORS is the HTTP API's own
(terraform/api.tf), so responses carry no CORS headers of their own.
"""

from __future__ import annotations

import base64
import os
import secrets
import time
from collections.abc import Mapping
from functools import cache
from typing import Any

from vsr.aws.resources import Resources
from vsr.errors import TransientError
from vsr.logs import get_logger
from vsr.settings import get_settings
from vsr.web.api import ApiConfig, Request, Response, handle
from vsr.web.backend import AwsBackend

log = get_logger(__name__)

KMS_KEY_ENV = "VSR_KMS_KEY_ARN"  # the API function's own: the key presigned PUTs name (terraform/api.tf)
JSON_HEADERS = {"content-type": "application/json; charset=utf-8", "cache-control": "no-store"}


def config_from_env(environ: Mapping[str, str] | None = None) -> ApiConfig:
    env = os.environ if environ is None else environ
    resources = Resources.from_env(env).require("input_bucket", "work_bucket", "table")
    settings = get_settings()
    return ApiConfig(
        input_bucket=resources.input_bucket,
        records_bucket=resources.work_bucket,
        table=resources.table,
        kms_key_id=env.get(KMS_KEY_ENV, ""),
        max_input_bytes=settings.limits.max_input_bytes,
        enabled_tiers=settings.enabled_tiers(),
        api=settings.api,
    )


@cache
def _backend() -> AwsBackend:
    return AwsBackend()


def request_from_event(event: Mapping[str, Any]) -> Request:
    context = event.get("requestContext") or {}
    http = context.get("http") or {}
    claims = ((context.get("authorizer") or {}).get("jwt") or {}).get("claims") or {}
    body = event.get("body")
    raw: bytes | None = None
    if body is not None:
        raw = base64.b64decode(body) if event.get("isBase64Encoded") else str(body).encode("utf-8")
    return Request(
        method=str(http.get("method", "GET")),
        path=str(event.get("rawPath") or http.get("path") or "/"),
        user=claims.get("sub"),
        query=dict(event.get("queryStringParameters") or {}),
        body=raw,
    )


def to_http(response: Response) -> dict[str, Any]:
    return {"statusCode": response.status, "headers": dict(JSON_HEADERS), "body": response.json()}


def serve_request(request: Request, config: ApiConfig, backend: Any) -> Response:
    """One request, with a 500 (and a log line with the details) for anything that is not the caller's fault."""
    try:
        response = handle(request, backend, config, now=time.time(), token=lambda: secrets.token_hex(6))
    except TransientError as exc:  # AWS throttled or failed past the retries: the caller may simply try again
        log.warning("api.transient_error", method=request.method, path=request.path[:200], error=exc.reason)
        return Response(503, {"error": {"code": "unavailable", "message": "the service is busy; try again shortly"}})
    except Exception as exc:
        log.exception("api.internal_error", method=request.method, path=request.path[:200], error=str(exc))
        return Response(500, {"error": {"code": "internal", "message": "the service failed; try again later"}})
    level = log.info if response.status < 400 else log.warning
    level(
        "api.request",
        method=request.method,
        path=request.path[:200],
        status=response.status,
        code=(response.body.get("error") or {}).get("code"),
    )
    return response


def handle_event(event: dict[str, Any], context: Any) -> dict[str, Any]:
    return to_http(serve_request(request_from_event(event), config_from_env(), _backend()))
