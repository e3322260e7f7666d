"""The upload API as pure functions: a `Request` in, a `Response` out; every AWS call goes through `Backend`.

Routes (the caller is the token's `sub`, never anything in the request):

    POST /api/uploads                       {"filename", "size", "metadata"?} -> a presigned PUT (or a multipart plan)
    GET  /api/uploads?limit=&cursor=        the caller's uploads, newest first, a page at a time
    GET  /api/uploads/{upload_id}           WAITING, or the job's status, progress, ETA, plan, error and results
    POST /api/uploads/{upload_id}/complete  finish a multipart upload (the parts' ETags are read from S3)

Where things live:

    input bucket  users/<sub>/<upload_id>/<filename>   the upload itself (S3 notifies ingest, as for any upload)
    work bucket   uploads/<sub>/<upload_id>.json       the upload's record: what was asked for, and when

An upload id is `<13 digits>-<12 hex>`: the digits are 10**13 - 1 minus the creation time in milliseconds, so
S3's ascending key order is newest first and a page is one ListObjectsV2 call from a cursor (the last id seen).

Every input is checked before anything is written; a bad one is a 4xx with a code and a sentence that says what
to change. Anything else is a 500 whose details go to the log, not to the caller.
"""

from __future__ import annotations

import json
import math
import re
import unicodedata
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol
from urllib.parse import parse_qs, quote, urlsplit

from vsr.admission import PLAN_METADATA_KEY, TIER_METADATA_KEY, requested_strategy, requested_tier
from vsr.errors import BadRequestError
from vsr.pipeline.jobs.eta import job_eta
from vsr.pipeline.jobs.record import ASSEMBLING, COMPLETE, FAILED, Job, job_id_for
from vsr.settings import ApiSettings

USER_PREFIX = "users/"  # input bucket
RECORD_PREFIX = "uploads/"  # work bucket
ID_DIGITS = 13
ID_PATTERN = re.compile(r"^[0-9]{13}-[0-9a-f]{12}$")
# Cognito subs are UUIDs; the local user is "local". Anything else in a token is refused, not used in a key.
SUB_PATTERN = re.compile(r"^[A-Za-z0-9_-]{1,128}$")
MAX_NAME_BYTES = 255  # a file name on every common filesystem
# What a browser may offer as a video; ingest still probes the content and accepts only its allowed demuxers
# (vsr.media.safety.ALLOWED_FORMATS), so this list only turns an obvious mistake into an early, clear 400.
UPLOAD_EXTENSIONS = (
    "mp4",
    "m4v",
    "mov",
    "mkv",
    "webm",
    "avi",
    "ts",
    "mts",
    "m2ts",
    "flv",
    "mpg",
    "mpeg",
    "ogv",
    "ogg",
    "wmv",
    "asf",
    "3gp",
    "3g2",
)
METADATA_KEYS = (PLAN_METADATA_KEY, TIER_METADATA_KEY)
CREATE_FIELDS = frozenset({"filename", "size", "metadata"})
LIST_PARAMS = frozenset({"limit", "cursor"})
# S3's multipart rules
S3_MAX_PARTS = 10_000
S3_MIN_PART_BYTES = 5 * 1024**2
S3_MAX_PART_BYTES = 5 * 1024**3
S3_MAX_SINGLE_PUT_BYTES = 5 * 1024**3
# Names and characters a file name may not hold: separators, and invisible or unassigned code points.
_ALLOWED_FORMAT_CHARS = {"\u200c", "\u200d"}  # joiners inside emoji and some scripts
_REFUSED_CATEGORIES = {"Cc", "Cf", "Cs", "Co", "Cn"}
SSE_HEADER = "x-amz-server-side-encryption"
SSE_KEY_HEADER = "x-amz-server-side-encryption-aws-kms-key-id"
META_HEADER_PREFIX = "x-amz-meta-"


class ApiError(Exception):
    """A request this API refuses: HTTP status, a short code and a sentence for the caller."""

    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message


def bad_request(message: str, code: str = "bad_request") -> ApiError:
    return ApiError(400, code, message)


def not_found(message: str = "no such upload") -> ApiError:
    return ApiError(404, "not_found", message)


@dataclass(frozen=True)
class Request:
    method: str
    path: str
    user: str | None  # the token's sub (the local user for `vsr serve`); None: not signed in
    query: Mapping[str, str] = field(default_factory=dict)
    body: bytes | None = None


@dataclass(frozen=True)
class Response:
    status: int
    body: dict[str, Any]

    def json(self) -> str:
        return json.dumps(self.body, separators=(",", ":"), ensure_ascii=False)


@dataclass(frozen=True)
class ApiConfig:
    """Resolved at the edge (Lambda environment or `vsr serve`): where things are and the API's numbers."""

    input_bucket: str
    records_bucket: str
    table: str
    kms_key_id: str  # "" where the bucket's default key applies and no key id is sent (locally)
    max_input_bytes: int
    enabled_tiers: tuple[str, ...]
    api: ApiSettings
    complete_path: str = "/api/uploads/{upload_id}/complete"


@dataclass(frozen=True)
class ObjectHead:
    version_id: str | None
    etag: str | None


class Backend(Protocol):
    """The AWS side (vsr.web.backend on S3 and DynamoDB; a dictionary in the unit tests)."""

    def presign(self, operation: str, params: dict[str, Any], expires_s: int) -> str: ...

    def create_multipart(self, bucket: str, key: str, extra: dict[str, Any]) -> str: ...

    def complete_multipart(self, bucket: str, key: str, multipart_id: str, expected_parts: int) -> None: ...

    def put_record(self, bucket: str, key: str, body: dict[str, Any]) -> None: ...

    def get_record(self, bucket: str, key: str) -> dict[str, Any] | None: ...

    def list_records(self, bucket: str, prefix: str, start_after: str | None, limit: int) -> tuple[list[str], bool]: ...

    def head(self, bucket: str, key: str) -> ObjectHead | None: ...

    def get_job(self, table: str, job_id: str) -> Job | None: ...


# --- ids and keys ------------------------------------------------------------------------------------------
def new_upload_id(now: float, token: str) -> str:
    """Newest first in S3's key order: the digits count down as time goes on."""
    if not re.fullmatch(r"[0-9a-f]{12}", token):
        raise ValueError("token must be 12 lowercase hex digits")
    return f"{10**ID_DIGITS - 1 - int(now * 1000):0{ID_DIGITS}d}-{token}"


def upload_created_at(upload_id: str) -> float:
    return (10**ID_DIGITS - 1 - int(upload_id[:ID_DIGITS])) / 1000


def input_key(user: str, upload_id: str, filename: str) -> str:
    return f"{USER_PREFIX}{user}/{upload_id}/{filename}"


def records_prefix(user: str) -> str:
    return f"{RECORD_PREFIX}{user}/"


def record_key(user: str, upload_id: str) -> str:
    return f"{records_prefix(user)}{upload_id}.json"


# --- validation (pure; nothing is written before all of it passes) -----------------------------------------
def check_user(user: str | None) -> str:
    if not user:
        raise ApiError(401, "unauthorized", "sign in first: the request carries no user")
    if not SUB_PATTERN.fullmatch(user):
        raise ApiError(401, "unauthorized", "the token's subject is not one this service can use")
    return user


def parse_body(body: bytes | None, max_bytes: int) -> dict[str, Any]:
    if body is None or not body.strip():
        raise bad_request("the request needs a JSON object body")
    if len(body) > max_bytes:
        raise ApiError(413, "body_too_large", f"the request body is {len(body)} bytes; the limit is {max_bytes}")
    try:
        data = json.loads(body)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise bad_request(f"the body is not valid JSON: {exc}") from exc
    if not isinstance(data, dict):
        raise bad_request("the body must be a JSON object")
    return data


def check_filename(value: Any) -> str:
    """A plain file name: any script, spaces inside, no path, nothing invisible, a video extension."""
    if not isinstance(value, str):
        raise bad_request("filename must be a string", "bad_filename")
    name = unicodedata.normalize("NFC", value)
    if not name.strip():
        raise bad_request("filename is empty", "bad_filename")
    if name != name.strip():
        raise bad_request("filename must not start or end with spaces", "bad_filename")
    if "/" in name or "\\" in name:
        raise bad_request("filename must be a plain file name, without / or \\", "bad_filename")
    if ".." in name:
        raise bad_request("filename must not contain '..'", "bad_filename")
    if name.startswith("."):
        raise bad_request("filename must not start with '.'", "bad_filename")
    for char in name:
        if char not in _ALLOWED_FORMAT_CHARS and unicodedata.category(char) in _REFUSED_CATEGORIES:
            raise bad_request(f"filename holds an invisible or control character (U+{ord(char):04X})", "bad_filename")
    size = len(name.encode("utf-8"))
    if size > MAX_NAME_BYTES:
        raise bad_request(f"filename is {size} bytes of UTF-8; the limit is {MAX_NAME_BYTES}", "bad_filename")
    extension = name.rsplit(".", 1)[-1].lower() if "." in name else ""
    if extension not in UPLOAD_EXTENSIONS:
        raise bad_request(
            f"{name!r} does not look like a video file; use one of .{', .'.join(UPLOAD_EXTENSIONS)}",
            "bad_filename",
        )
    return name


def check_size(value: Any, max_bytes: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise bad_request("size must be a whole number of bytes", "bad_size")
    if value <= 0:
        raise bad_request("size must be at least 1 byte", "bad_size")
    if value > max_bytes:
        raise ApiError(413, "too_large", f"the file is {value / 1e9:.2f} GB; the limit is {max_bytes / 1e9:.2f} GB")
    return value


def check_metadata(value: Any, enabled_tiers: tuple[str, ...]) -> dict[str, str]:
    """The allowed S3 user metadata (`vsr-plan`, `vsr-tier`), checked as ingest will check it."""
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise bad_request("metadata must be a JSON object of strings", "bad_metadata")
    metadata: dict[str, str] = {}
    for name, text in value.items():
        key = str(name).strip().lower()
        if key not in METADATA_KEYS:
            raise bad_request(
                f"metadata {name!r} is not one this service reads; use {' or '.join(METADATA_KEYS)}", "bad_metadata"
            )
        if not isinstance(text, str):
            raise bad_request(f"metadata {key} must be a string", "bad_metadata")
        if text.strip():
            metadata[key] = text.strip().lower()
    try:
        requested_strategy(metadata)
        requested_tier(metadata, enabled_tiers)
    except BadRequestError as exc:
        raise bad_request(exc.reason, "bad_metadata") from exc
    return metadata


def check_upload_id(value: str) -> str:
    if not ID_PATTERN.fullmatch(value):
        raise bad_request(f"{value[:80]!r} is not an upload id", "bad_upload_id")
    return value


def check_page(query: Mapping[str, str], settings: ApiSettings) -> tuple[int, str | None]:
    unknown = sorted(set(query) - LIST_PARAMS)
    if unknown:
        raise bad_request(f"unknown query parameter(s) {', '.join(unknown)}; use limit and cursor")
    limit = settings.page_size
    if "limit" in query:
        text = query["limit"]
        if not text.isdigit() or not 1 <= int(text) <= settings.max_page_size:
            raise bad_request(f"limit must be a whole number from 1 to {settings.max_page_size}", "bad_limit")
        limit = int(text)
    cursor = query.get("cursor") or None
    if cursor is not None and not ID_PATTERN.fullmatch(cursor):
        raise bad_request("cursor must be the next_cursor of a previous page", "bad_cursor")
    return limit, cursor


# --- uploads ---------------------------------------------------------------------------------------------------
def part_plan(size: int, part_bytes: int) -> tuple[int, int]:
    """(part size, part count) for a multipart upload: the configured size, raised if S3's 10,000 parts would
    not hold the file."""
    part = max(part_bytes, S3_MIN_PART_BYTES, math.ceil(size / S3_MAX_PARTS))
    part = min(part, S3_MAX_PART_BYTES)
    return part, math.ceil(size / part)


def sse_params(kms_key_id: str) -> dict[str, str]:
    """SSE-KMS with the project key, as the bucket's encryption wants it (no key id where none is configured)."""
    return {"ServerSideEncryption": "aws:kms", **({"SSEKMSKeyId": kms_key_id} if kms_key_id else {})}


def put_headers(kms_key_id: str, metadata: Mapping[str, str]) -> dict[str, str]:
    """The headers a presigned PUT was signed with: the client must send exactly these."""
    headers = {SSE_HEADER: "aws:kms"}
    if kms_key_id:
        headers[SSE_KEY_HEADER] = kms_key_id
    headers.update({f"{META_HEADER_PREFIX}{name}": value for name, value in sorted(metadata.items())})
    return headers


def signed_headers(url: str) -> set[str]:
    """The header names a SigV4 presigned URL was signed over (besides host)."""
    query = parse_qs(urlsplit(url).query)
    names = query.get("X-Amz-SignedHeaders", [""])[0]
    return {name for name in names.split(";") if name and name != "host"}


def create_upload(
    request: Request, backend: Backend, config: ApiConfig, *, now: float, token: Callable[[], str]
) -> Response:
    user = check_user(request.user)
    data = parse_body(request.body, config.api.max_body_bytes)
    unknown = sorted(set(data) - CREATE_FIELDS)
    if unknown:
        raise bad_request(f"unknown field(s) {', '.join(unknown)}; use filename, size and metadata")
    filename = check_filename(data.get("filename"))
    size = check_size(data.get("size"), config.max_input_bytes)
    metadata = check_metadata(data.get("metadata"), config.enabled_tiers)

    upload_id = new_upload_id(now, token())
    key = input_key(user, upload_id, filename)
    expires = config.api.upload_url_expiry_s
    headers = put_headers(config.kms_key_id, metadata)
    record: dict[str, Any] = {
        "upload_id": upload_id,
        "filename": filename,
        "size": size,
        "metadata": metadata,
        "key": key,
        "created_at": now,
    }
    body: dict[str, Any] = {"upload_id": upload_id, "key": key, "expires_in_s": expires}
    if size > min(config.api.multipart_part_bytes, S3_MAX_SINGLE_PUT_BYTES):
        part_bytes, parts = part_plan(size, config.api.multipart_part_bytes)
        extra = {**sse_params(config.kms_key_id), "Metadata": metadata}
        multipart_id = backend.create_multipart(config.input_bucket, key, extra)
        urls = [
            backend.presign(
                "upload_part",
                {"Bucket": config.input_bucket, "Key": key, "UploadId": multipart_id, "PartNumber": number},
                expires,
            )
            for number in range(1, parts + 1)
        ]
        record["multipart"] = {"id": multipart_id, "part_bytes": part_bytes, "parts": parts}
        body["method"] = "PUT"
        body["multipart"] = {
            "part_bytes": part_bytes,
            "parts": [
                {
                    "part_number": number,
                    "url": url,
                    "offset": (number - 1) * part_bytes,
                    "length": min(part_bytes, size - (number - 1) * part_bytes),
                }
                for number, url in enumerate(urls, start=1)
            ],
            "complete": {"method": "POST", "path": config.complete_path.format(upload_id=upload_id)},
        }
        body["headers"] = {}
    else:
        params = {"Bucket": config.input_bucket, "Key": key, **sse_params(config.kms_key_id), "Metadata": metadata}
        url = backend.presign("put_object", params, expires)
        unexpected = signed_headers(url) - set(headers)
        if unexpected:  # a client could not send what it does not know of: the URL would never verify
            raise RuntimeError(f"the presigned PUT is signed over headers the API does not return: {unexpected}")
        body.update({"url": url, "method": "PUT", "headers": headers})
    backend.put_record(config.records_bucket, record_key(user, upload_id), record)
    return Response(201, body)


def complete_upload(request: Request, upload_id: str, backend: Backend, config: ApiConfig, *, now: float) -> Response:
    user = check_user(request.user)
    check_upload_id(upload_id)
    record = backend.get_record(config.records_bucket, record_key(user, upload_id))
    if record is None:
        raise not_found()
    multipart = record.get("multipart")
    if not multipart:
        raise ApiError(409, "not_multipart", "this upload is a single PUT; there is nothing to complete")
    if backend.head(config.input_bucket, record["key"]) is None:
        backend.complete_multipart(config.input_bucket, record["key"], multipart["id"], int(multipart["parts"]))
    return Response(200, upload_view(record, backend, config, now=now))


def get_upload(request: Request, upload_id: str, backend: Backend, config: ApiConfig, *, now: float) -> Response:
    user = check_user(request.user)
    check_upload_id(upload_id)
    record = backend.get_record(config.records_bucket, record_key(user, upload_id))
    if record is None:  # another user's id is just as unknown here: its existence is not revealed
        raise not_found()
    return Response(200, upload_view(record, backend, config, now=now))


def list_uploads(request: Request, backend: Backend, config: ApiConfig, *, now: float) -> Response:
    user = check_user(request.user)
    limit, cursor = check_page(request.query, config.api)
    prefix = records_prefix(user)
    start_after = record_key(user, cursor) if cursor else None
    keys, more = backend.list_records(config.records_bucket, prefix, start_after, limit)
    uploads = []
    for key in keys:
        record = backend.get_record(config.records_bucket, key)
        if record is not None:
            uploads.append(upload_view(record, backend, config, now=now))
    next_cursor = keys[-1][len(prefix) : -len(".json")] if more and keys else None
    return Response(200, {"uploads": uploads, "next_cursor": next_cursor})


# --- the view of one upload --------------------------------------------------------------------------------------
PLAN_FIELDS = ("strategy", "tier", "segments", "predicted_wall_s", "predicted_cost_usd", "instance_type", "arch")


def plan_summary(plan: Mapping[str, Any]) -> dict[str, Any]:
    return {name: plan[name] for name in PLAN_FIELDS if name in plan}


def download_name(key: str) -> str:
    return key.rsplit("/", 1)[-1]


def content_disposition(name: str) -> str:
    """An attachment header any browser reads, for any file name (RFC 6266 / 5987)."""
    ascii_name = name.encode("ascii", "replace").decode().replace('"', "'").replace("?", "_")
    return f"attachment; filename=\"{ascii_name}\"; filename*=UTF-8''{quote(name, safe='')}"


def figures(job: Job) -> dict[str, Any]:
    """The report's key figures, from the job record (the report holds the same numbers and more)."""
    output = job.output or {}
    wall = (job.completed_at - job.created_at) if job.completed_at else None
    return {
        "segments": job.segment_count,
        "frames": job.frames_total,
        "wall_s": round(wall, 2) if wall is not None else None,
        "predicted_cost_usd": job.plan.get("predicted_cost_usd"),
        "flicker_ratio": output.get("flicker_ratio"),
        "quality_measured": bool(output.get("quality_measured")),
        "scale": (job.model or {}).get("scale"),
    }


def upload_view(record: Mapping[str, Any], backend: Backend, config: ApiConfig, *, now: float) -> dict[str, Any]:
    """WAITING until the object is there; QUEUED until ingest made its job; then the job's own state."""
    view: dict[str, Any] = {
        "upload_id": record["upload_id"],
        "filename": record["filename"],
        "size": record["size"],
        "metadata": record.get("metadata", {}),
        "created_at": record["created_at"],
        "status": "WAITING",
        "frames_done": 0,
        "frames_total": 0,
        "eta_s": None,
        "plan": None,
        "error": None,
    }
    head = backend.head(config.input_bucket, record["key"])
    if head is None:
        return view
    job_id = job_id_for(config.input_bucket, record["key"], head.version_id, head.etag)
    view["job_id"] = job_id
    view["status"] = "QUEUED"
    job = backend.get_job(config.table, job_id)
    if job is None:
        return view
    # ASSEMBLING is work in progress to a user; `stage` keeps the pipeline's own word
    view["status"] = "PROCESSING" if job.status == ASSEMBLING else str(job.status)
    view["stage"] = str(job.status)
    view["frames_total"] = job.frames_total
    view["frames_done"] = min(job.frames_done, job.frames_total) if job.frames_total else job.frames_done
    view["segments"] = {"done": len(job.done), "total": job.segment_count}
    view["plan"] = plan_summary(job.plan) or None
    if job.status not in (COMPLETE, FAILED):
        eta = job_eta(job, now - job.created_at)
        view["eta_s"] = round(eta, 1) if eta is not None else None
    if job.status == FAILED:
        error = job.error or {}
        view["error"] = {"code": error.get("code", "failed"), "reason": error.get("reason", "no reason recorded")}
    if job.status == COMPLETE and job.output:
        view["frames_done"] = job.frames_total
        view.update(results(job, backend, config))
        view["figures"] = figures(job)
    return view


def results(job: Job, backend: Backend, config: ApiConfig) -> dict[str, Any]:
    """Presigned GETs (short-lived) for the output, the report and, once the quality check made it, the preview."""
    assert job.output is not None
    bucket = job.output["bucket"]
    expires = config.api.download_url_expiry_s

    def url(key: str, disposition: str | None = None) -> str:
        params: dict[str, Any] = {"Bucket": bucket, "Key": key}
        if disposition:
            params["ResponseContentDisposition"] = disposition
        return backend.presign("get_object", params, expires)

    video = job.output["key"]
    found: dict[str, Any] = {
        "output_url": url(video, content_disposition(download_name(video))),
        "output_name": download_name(video),
        "report_url": url(job.output["report_key"]) if job.output.get("report_key") else None,
        "preview_url": url(job.output["preview_key"]) if job.output.get("preview_key") else None,
        "urls_expire_in_s": expires,
    }
    return found


# --- routing -------------------------------------------------------------------------------------------------------
_UPLOAD_PATH = re.compile(r"^/api/uploads/([^/]+)$")
_COMPLETE_PATH = re.compile(r"^/api/uploads/([^/]+)/complete$")


def handle(request: Request, backend: Backend, config: ApiConfig, *, now: float, token: Callable[[], str]) -> Response:
    """Route one request; ApiError becomes its 4xx. Other exceptions are the caller's to log and turn into a 500."""
    try:
        return _route(request, backend, config, now=now, token=token)
    except ApiError as exc:
        return Response(exc.status, {"error": {"code": exc.code, "message": exc.message}})


def _route(request: Request, backend: Backend, config: ApiConfig, *, now: float, token: Callable[[], str]) -> Response:
    method, path = request.method.upper(), request.path.rstrip("/") or "/"
    if path == "/api/uploads":
        if method == "POST":
            return create_upload(request, backend, config, now=now, token=token)
        if method == "GET":
            return list_uploads(request, backend, config, now=now)
        raise ApiError(405, "method_not_allowed", f"{method} {path}: use GET or POST")
    if match := _COMPLETE_PATH.fullmatch(path):
        if method != "POST":
            raise ApiError(405, "method_not_allowed", f"{method} {path}: use POST")
        return complete_upload(request, match.group(1), backend, config, now=now)
    if match := _UPLOAD_PATH.fullmatch(path):
        if method != "GET":
            raise ApiError(405, "method_not_allowed", f"{method} {path}: use GET")
        return get_upload(request, match.group(1), backend, config, now=now)
    raise ApiError(404, "no_route", f"no such API path: {path[:200]}")
