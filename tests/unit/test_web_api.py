"""The upload API's pure logic (vsr.web.api) against an in-memory backend: validation, keys, ownership,
pagination, the status view and the Lambda event adapter. Nothing here talks to AWS."""

from __future__ import annotations

import base64
import itertools
import json
from dataclasses import replace
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest

from vsr.pipeline import jobs
from vsr.settings import get_settings
from vsr.web import api
from vsr.web.api import ApiConfig, ObjectHead, Request
from vsr.web.lambda_api import request_from_event, to_http

NOW = 1_800_000_000.0
MiB = 1024**2


class FakeBackend:
    """Records every write; objects and jobs are dictionaries."""

    def __init__(self) -> None:
        self.records: dict[tuple[str, str], dict[str, Any]] = {}
        self.objects: dict[tuple[str, str], ObjectHead] = {}
        self.jobs: dict[str, jobs.Job] = {}
        self.writes: list[tuple[str, ...]] = []
        self.multipart: dict[str, tuple[str, str, dict[str, Any]]] = {}
        self.presigned: list[tuple[str, dict[str, Any], int]] = []

    def presign(self, operation: str, params: dict[str, Any], expires_s: int) -> str:
        self.presigned.append((operation, params, expires_s))
        signed = ["host"]
        if "ServerSideEncryption" in params:
            signed.append("x-amz-server-side-encryption")
        if params.get("SSEKMSKeyId"):
            signed.append("x-amz-server-side-encryption-aws-kms-key-id")
        signed += [f"x-amz-meta-{name}" for name in sorted(params.get("Metadata", {}))]
        return f"https://s3.example/{params['Bucket']}/{params['Key']}?op={operation}&X-Amz-SignedHeaders={';'.join(signed)}"

    def create_multipart(self, bucket: str, key: str, extra: dict[str, Any]) -> str:
        self.writes.append(("create_multipart", bucket, key))
        multipart_id = f"mp-{len(self.multipart)}"
        self.multipart[multipart_id] = (bucket, key, extra)
        return multipart_id

    def complete_multipart(self, bucket: str, key: str, multipart_id: str, expected_parts: int) -> None:
        self.writes.append(("complete_multipart", bucket, key, multipart_id, str(expected_parts)))
        self.objects[(bucket, key)] = ObjectHead("v-mp", '"etag-mp"')

    def put_record(self, bucket: str, key: str, body: dict[str, Any]) -> None:
        self.writes.append(("put_record", bucket, key))
        self.records[(bucket, key)] = json.loads(json.dumps(body))

    def get_record(self, bucket: str, key: str) -> dict[str, Any] | None:
        return self.records.get((bucket, key))

    def list_records(self, bucket: str, prefix: str, start_after: str | None, limit: int) -> tuple[list[str], bool]:
        keys = sorted(k for b, k in self.records if b == bucket and k.startswith(prefix))
        if start_after:
            keys = [k for k in keys if k > start_after]
        return keys[:limit], len(keys) > limit

    def head(self, bucket: str, key: str) -> ObjectHead | None:
        return self.objects.get((bucket, key))

    def get_job(self, table: str, job_id: str) -> jobs.Job | None:
        return self.jobs.get(job_id)


def config(**changes: Any) -> ApiConfig:
    settings = get_settings()
    base = ApiConfig(
        input_bucket="in-bucket",
        records_bucket="work-bucket",
        table="jobs-table",
        kms_key_id="arn:aws:kms:us-east-1:123456789012:key/abc",
        max_input_bytes=settings.limits.max_input_bytes,
        enabled_tiers=("lambda",),
        api=settings.api,
    )
    return replace(base, **changes)


_tokens = (f"{n:012x}" for n in itertools.count(1))


def call(
    backend: FakeBackend,
    method: str,
    path: str,
    body: Any = None,
    user: str | None = "alice",
    query: dict[str, str] | None = None,
    cfg: ApiConfig | None = None,
    now: float = NOW,
) -> api.Response:
    raw = body if isinstance(body, bytes) or body is None else json.dumps(body).encode()
    request = Request(method, path, user, query or {}, raw)
    return api.handle(request, backend, cfg or config(), now=now, token=lambda: next(_tokens))


def create(backend: FakeBackend, name: str = "clip.mp4", size: int = 1000, **kw: Any) -> dict[str, Any]:
    response = call(backend, "POST", "/api/uploads", {"filename": name, "size": size, **kw})
    assert response.status == 201, response.body
    return response.body


# --- POST /api/uploads ------------------------------------------------------------------------------------------
def test_a_single_put_is_presigned_under_the_users_prefix_with_kms_and_metadata_headers() -> None:
    backend = FakeBackend()
    body = create(backend, "my clip (1) é.mp4", 1234, metadata={"VSR-Plan": "Cost"})
    assert body["method"] == "PUT" and "multipart" not in body
    assert body["key"] == f"users/alice/{body['upload_id']}/my clip (1) é.mp4"
    (operation, params, expires) = backend.presigned[-1]
    assert operation == "put_object" and expires == get_settings().api.upload_url_expiry_s
    assert params["Bucket"] == "in-bucket" and params["Key"] == body["key"]
    assert params["ServerSideEncryption"] == "aws:kms" and params["SSEKMSKeyId"].startswith("arn:aws:kms:")
    assert params["Metadata"] == {"vsr-plan": "cost"}
    assert body["headers"] == {
        "x-amz-server-side-encryption": "aws:kms",
        "x-amz-server-side-encryption-aws-kms-key-id": "arn:aws:kms:us-east-1:123456789012:key/abc",
        "x-amz-meta-vsr-plan": "cost",
    }
    record = backend.records[("work-bucket", f"uploads/alice/{body['upload_id']}.json")]
    assert record == {
        "upload_id": body["upload_id"],
        "filename": "my clip (1) é.mp4",
        "size": 1234,
        "metadata": {"vsr-plan": "cost"},
        "key": body["key"],
        "created_at": NOW,
    }


def test_without_a_configured_key_only_the_encryption_header_is_signed() -> None:
    backend = FakeBackend()
    response = call(backend, "POST", "/api/uploads", {"filename": "a.mov", "size": 10}, cfg=config(kms_key_id=""))
    assert response.body["headers"] == {"x-amz-server-side-encryption": "aws:kms"}


def test_a_presigned_url_signed_over_a_header_the_client_is_not_told_of_is_refused() -> None:
    class Extra(FakeBackend):
        def presign(self, operation: str, params: dict[str, Any], expires_s: int) -> str:
            return "https://s3.example/x?X-Amz-SignedHeaders=host;x-amz-acl"

    with pytest.raises(RuntimeError, match="x-amz-acl"):
        call(Extra(), "POST", "/api/uploads", {"filename": "a.mp4", "size": 10})


def test_above_the_part_size_a_multipart_plan_with_part_urls_and_a_complete_call() -> None:
    backend = FakeBackend()
    cfg = config(api=replace(get_settings().api, multipart_part_bytes=5 * MiB))
    size = 12 * MiB + 7
    response = call(backend, "POST", "/api/uploads", {"filename": "big.mkv", "size": size}, cfg=cfg)
    assert response.status == 201
    plan = response.body["multipart"]
    assert plan["part_bytes"] == 5 * MiB
    parts = plan["parts"]
    assert [p["part_number"] for p in parts] == [1, 2, 3]
    assert [p["length"] for p in parts] == [5 * MiB, 5 * MiB, 2 * MiB + 7]
    assert [p["offset"] for p in parts] == [0, 5 * MiB, 10 * MiB]
    assert sum(p["length"] for p in parts) == size
    assert plan["complete"] == {"method": "POST", "path": f"/api/uploads/{response.body['upload_id']}/complete"}
    ((bucket, key, extra),) = backend.multipart.values()
    assert (bucket, key) == ("in-bucket", response.body["key"])
    assert extra["ServerSideEncryption"] == "aws:kms" and extra["SSEKMSKeyId"]
    ops = [(op, p.get("PartNumber")) for op, p, _ in backend.presigned]
    assert ops == [("upload_part", 1), ("upload_part", 2), ("upload_part", 3)]


def test_part_plan_grows_parts_to_fit_s3s_ten_thousand() -> None:
    part, count = api.part_plan(4 * 1024**4, 5 * MiB)  # 4 TiB would need 838,861 parts of 5 MiB
    assert count <= api.S3_MAX_PARTS and part * count >= 4 * 1024**4
    assert api.part_plan(1, 1) == (api.S3_MIN_PART_BYTES, 1)


def test_at_most_the_part_size_is_one_put() -> None:
    backend = FakeBackend()
    cfg = config(api=replace(get_settings().api, multipart_part_bytes=5 * MiB))
    response = call(backend, "POST", "/api/uploads", {"filename": "a.mp4", "size": 5 * MiB}, cfg=cfg)
    assert "multipart" not in response.body and response.body["url"]


BAD_CREATES = [
    ({"filename": "../../etc/passwd.mp4", "size": 10}, 400, "bad_filename"),
    ({"filename": "a/b.mp4", "size": 10}, 400, "bad_filename"),
    ({"filename": "a\\b.mp4", "size": 10}, 400, "bad_filename"),
    ({"filename": "clip..mp4", "size": 10}, 400, "bad_filename"),
    ({"filename": ".hidden.mp4", "size": 10}, 400, "bad_filename"),
    ({"filename": " clip.mp4", "size": 10}, 400, "bad_filename"),
    ({"filename": "", "size": 10}, 400, "bad_filename"),
    ({"filename": "clip\x00.mp4", "size": 10}, 400, "bad_filename"),
    ({"filename": "clip\u202e4pm.exe", "size": 10}, 400, "bad_filename"),  # right-to-left override
    ({"filename": "notes.txt", "size": 10}, 400, "bad_filename"),
    ({"filename": "no extension", "size": 10}, 400, "bad_filename"),
    ({"filename": "é" * 128 + ".mp4", "size": 10}, 400, "bad_filename"),  # 260 bytes of UTF-8
    ({"filename": 42, "size": 10}, 400, "bad_filename"),
    ({"filename": "a.mp4", "size": 0}, 400, "bad_size"),
    ({"filename": "a.mp4", "size": -5}, 400, "bad_size"),
    ({"filename": "a.mp4", "size": "10"}, 400, "bad_size"),
    ({"filename": "a.mp4", "size": 1.5}, 400, "bad_size"),
    ({"filename": "a.mp4", "size": True}, 400, "bad_size"),
    ({"filename": "a.mp4"}, 400, "bad_size"),
    ({"filename": "a.mp4", "size": 10**13}, 413, "too_large"),
    ({"filename": "a.mp4", "size": 10, "metadata": {"x-owner": "bob"}}, 400, "bad_metadata"),
    ({"filename": "a.mp4", "size": 10, "metadata": {"vsr-plan": "fastest-please"}}, 400, "bad_metadata"),
    ({"filename": "a.mp4", "size": 10, "metadata": {"vsr-tier": "gpu"}}, 400, "bad_metadata"),  # no GPU fleet
    ({"filename": "a.mp4", "size": 10, "metadata": {"vsr-plan": 3}}, 400, "bad_metadata"),
    ({"filename": "a.mp4", "size": 10, "metadata": ["vsr-plan"]}, 400, "bad_metadata"),
    ({"filename": "a.mp4", "size": 10, "key": "users/bob/x.mp4"}, 400, "bad_request"),
    ({"filename": "a.mp4", "size": 10, "user": "bob"}, 400, "bad_request"),
]


@pytest.mark.parametrize(("body", "status", "code"), BAD_CREATES)
def test_every_bad_create_is_a_clear_4xx_and_writes_nothing(body: dict[str, Any], status: int, code: str) -> None:
    backend = FakeBackend()
    response = call(backend, "POST", "/api/uploads", body)
    assert (response.status, response.body["error"]["code"]) == (status, code), response.body
    assert len(response.body["error"]["message"]) > 10
    assert backend.writes == [] and backend.presigned == []


@pytest.mark.parametrize(
    ("raw", "status"),
    [
        (None, 400),
        (b"", 400),
        (b"not json", 400),
        (b"[1, 2]", 400),
        (b"\xff\xfe", 400),
        (b"{" + b" " * 70000 + b"}", 413),
    ],
)
def test_bodies_that_are_not_a_small_json_object_are_refused(raw: bytes | None, status: int) -> None:
    backend = FakeBackend()
    response = call(backend, "POST", "/api/uploads", raw)
    assert response.status == status and backend.writes == []


def test_unicode_names_are_normalised_and_spaces_inside_kept() -> None:
    backend = FakeBackend()
    body = create(backend, "Cafe\u0301 à la plage 🎬.MOV")  # decomposed é: NFC makes it one code point
    assert body["key"].endswith("/Café à la plage 🎬.MOV")


def test_the_gpu_tier_may_be_asked_for_where_the_fleet_exists() -> None:
    backend = FakeBackend()
    cfg = config(enabled_tiers=("lambda", "gpu"))
    response = call(
        backend, "POST", "/api/uploads", {"filename": "a.mp4", "size": 9, "metadata": {"vsr-tier": "GPU"}}, cfg=cfg
    )
    assert response.status == 201 and backend.presigned[-1][1]["Metadata"] == {"vsr-tier": "gpu"}


@pytest.mark.parametrize("user", [None, "", "../bob", "a/b", "x" * 129, "sp ace"])
def test_no_usable_user_is_401_and_nothing_is_written(user: str | None) -> None:
    backend = FakeBackend()
    for method, path in (("POST", "/api/uploads"), ("GET", "/api/uploads"), ("GET", "/api/uploads/x")):
        response = call(backend, method, path, {"filename": "a.mp4", "size": 10}, user=user)
        assert response.status == 401, (method, path, response.body)
    assert backend.writes == []


# --- ids, ownership, pagination ----------------------------------------------------------------------------------
def test_upload_ids_sort_newest_first_and_carry_their_time() -> None:
    older, newer = api.new_upload_id(NOW, "0" * 12), api.new_upload_id(NOW + 1, "f" * 12)
    assert newer < older and api.ID_PATTERN.fullmatch(newer)
    assert api.upload_created_at(older) == pytest.approx(NOW, abs=0.001)


def test_a_caller_sees_only_their_own_uploads() -> None:
    backend = FakeBackend()
    mine = create(backend)
    theirs = call(backend, "GET", f"/api/uploads/{mine['upload_id']}", user="bob")
    assert theirs.status == 404 and theirs.body["error"]["code"] == "not_found"
    assert call(backend, "GET", "/api/uploads", user="bob").body == {"uploads": [], "next_cursor": None}
    assert call(backend, "POST", f"/api/uploads/{mine['upload_id']}/complete", user="bob").status == 404


@pytest.mark.parametrize(
    ("path", "status"),
    [
        ("/api/uploads/8199999999999-000000000001", 404),  # well formed, never issued
        ("/api/uploads/not-an-id", 400),
        ("/api/uploads/..", 400),
        ("/api/uploads/a/b", 404),
        ("/api/elsewhere", 404),
    ],
)
def test_unknown_and_malformed_ids(path: str, status: int) -> None:
    response = call(FakeBackend(), "GET", path)
    assert response.status == status and response.body["error"]["message"]


def test_wrong_methods_are_405() -> None:
    backend = FakeBackend()
    assert call(backend, "DELETE", "/api/uploads").status == 405
    assert call(backend, "POST", "/api/uploads/8199999999999-000000000001").status == 405
    assert call(backend, "GET", "/api/uploads/8199999999999-000000000001/complete").status == 405


def test_listing_is_newest_first_and_paginated_with_a_cursor() -> None:
    backend = FakeBackend()
    ids = [
        call(backend, "POST", "/api/uploads", {"filename": f"c{i}.mp4", "size": 5}, now=NOW + i).body["upload_id"]
        for i in range(5)
    ]
    create_other = call(backend, "POST", "/api/uploads", {"filename": "b.mp4", "size": 5}, user="bob")
    assert create_other.status == 201
    first = call(backend, "GET", "/api/uploads", query={"limit": "2"}).body
    assert [u["upload_id"] for u in first["uploads"]] == [ids[4], ids[3]]
    assert [u["filename"] for u in first["uploads"]] == ["c4.mp4", "c3.mp4"]
    second = call(backend, "GET", "/api/uploads", query={"limit": "2", "cursor": first["next_cursor"]}).body
    third = call(backend, "GET", "/api/uploads", query={"limit": "2", "cursor": second["next_cursor"]}).body
    assert [u["upload_id"] for u in second["uploads"] + third["uploads"]] == [ids[2], ids[1], ids[0]]
    assert third["next_cursor"] is None
    default = call(backend, "GET", "/api/uploads").body
    assert len(default["uploads"]) == 5 and all(u["status"] == "WAITING" for u in default["uploads"])


@pytest.mark.parametrize(
    "query",
    [{"limit": "0"}, {"limit": "101"}, {"limit": "ten"}, {"limit": "-1"}, {"cursor": "../x"}, {"page": "2"}],
)
def test_bad_list_parameters_are_400(query: dict[str, str]) -> None:
    response = call(FakeBackend(), "GET", "/api/uploads", query=query)
    assert response.status == 400 and response.body["error"]["message"]


# --- the status view ---------------------------------------------------------------------------------------------
def _job(job_id: str, status: str, **fields: Any) -> jobs.Job:
    base: dict[str, Any] = {
        "job_id": job_id,
        "status": status,
        "input": {"bucket": "in-bucket", "key": "k"},
        "probe": {"frames": 100},
        "segment_count": 4,
        "created_at": NOW,
        "plan": {
            "strategy": "default",
            "tier": "lambda",
            "segments": 4,
            "predicted_wall_s": 100.0,
            "predicted_cost_usd": 0.02,
            "hidden": 1,
        },
        "model": {"scale": 2},
    }
    base.update(fields)
    return jobs.Job(**base)


def _arrived(backend: FakeBackend, body: dict[str, Any]) -> str:
    backend.objects[("in-bucket", body["key"])] = ObjectHead("v1", '"e1"')
    return jobs.job_id_for("in-bucket", body["key"], "v1", '"e1"')


def test_waiting_then_queued_then_processing_with_frames_eta_and_plan() -> None:
    backend = FakeBackend()
    body = create(backend)
    path = f"/api/uploads/{body['upload_id']}"
    assert call(backend, "GET", path).body["status"] == "WAITING"
    job_id = _arrived(backend, body)
    view = call(backend, "GET", path).body
    assert view["status"] == "QUEUED" and view["job_id"] == job_id  # uploaded; ingest has not made the job yet
    backend.jobs[job_id] = _job(job_id, "PROCESSING", done={0}, segment_totals={"frames": 25}, segment_progress={1: 5})
    view = call(backend, "GET", path, now=NOW + 40).body
    assert (view["status"], view["frames_done"], view["frames_total"]) == ("PROCESSING", 30, 100)
    assert view["segments"] == {"done": 1, "total": 4}
    assert view["plan"] == {
        "strategy": "default",
        "tier": "lambda",
        "segments": 4,
        "predicted_wall_s": 100.0,
        "predicted_cost_usd": 0.02,
    }
    assert view["eta_s"] is not None and 0 < view["eta_s"] < 100
    assert "output_url" not in view and view["error"] is None
    backend.jobs[job_id] = _job(job_id, "ASSEMBLING")
    assert call(backend, "GET", path).body["status"] == "PROCESSING"
    assert call(backend, "GET", path).body["stage"] == "ASSEMBLING"


def test_failed_carries_the_reason() -> None:
    backend = FakeBackend()
    body = create(backend)
    job_id = _arrived(backend, body)
    reason = "container format 'tty' is not accepted"
    backend.jobs[job_id] = _job(job_id, "FAILED", error={"code": "limit_exceeded", "reason": reason})
    view = call(backend, "GET", f"/api/uploads/{body['upload_id']}").body
    assert view["status"] == "FAILED" and view["error"] == {"code": "limit_exceeded", "reason": reason}
    assert view["eta_s"] is None and "output_url" not in view


def test_complete_has_short_lived_presigned_gets_and_the_key_figures() -> None:
    backend = FakeBackend()
    body = create(backend, "été clip.mp4")
    job_id = _arrived(backend, body)
    output = {
        "bucket": "out-bucket",
        "key": body["key"].replace(".mp4", ".upscaled-x2.mp4"),
        "report_key": body["key"].replace(".mp4", ".upscaled-x2.json"),
    }
    backend.jobs[job_id] = _job(job_id, "COMPLETE", output=output, completed_at=NOW + 12.345, done={0, 1, 2, 3})
    view = call(backend, "GET", f"/api/uploads/{body['upload_id']}").body
    assert view["status"] == "COMPLETE" and view["frames_done"] == view["frames_total"] == 100
    assert view["preview_url"] is None  # the quality check has not run yet
    assert view["figures"] == {
        "segments": 4,
        "frames": 100,
        "wall_s": 12.35,
        "predicted_cost_usd": 0.02,
        "flicker_ratio": None,
        "quality_measured": False,
        "scale": 2,
    }
    gets = {params["Key"]: (params, expires) for op, params, expires in backend.presigned if op == "get_object"}
    video_params, expires = gets[output["key"]]
    assert expires == get_settings().api.download_url_expiry_s <= 900
    assert video_params["Bucket"] == "out-bucket"
    assert video_params["ResponseContentDisposition"].startswith('attachment; filename="_t_ clip.upscaled-x2.mp4"')
    assert "filename*=UTF-8''%C3%A9t%C3%A9%20clip.upscaled-x2.mp4" in video_params["ResponseContentDisposition"]
    assert output["report_key"] in gets and view["output_name"] == "été clip.upscaled-x2.mp4"

    output.update({"preview_key": "p.png", "flicker_ratio": 0.97, "quality_measured": True})
    view = call(backend, "GET", f"/api/uploads/{body['upload_id']}").body
    assert view["preview_url"] and "p.png" in view["preview_url"]
    assert view["figures"]["flicker_ratio"] == 0.97 and view["figures"]["quality_measured"] is True


def test_completing_a_multipart_upload_and_the_refusals() -> None:
    backend = FakeBackend()
    cfg = config(api=replace(get_settings().api, multipart_part_bytes=5 * MiB))
    created = call(backend, "POST", "/api/uploads", {"filename": "big.mp4", "size": 11 * MiB}, cfg=cfg).body
    single = create(backend)
    path = created["multipart"]["complete"]["path"]
    response = call(backend, "POST", path, cfg=cfg)
    assert response.status == 200 and response.body["status"] == "QUEUED"
    assert backend.writes[-1][0] == "complete_multipart" and backend.writes[-1][-1] == "3"
    again = len(backend.writes)
    assert call(backend, "POST", path, cfg=cfg).status == 200 and len(backend.writes) == again  # already there
    refused = call(backend, "POST", f"/api/uploads/{single['upload_id']}/complete")
    assert refused.status == 409 and refused.body["error"]["code"] == "not_multipart"


# --- the Lambda adapter -----------------------------------------------------------------------------------------
def test_the_user_comes_from_the_authorizers_claims_never_from_the_request() -> None:
    event = {
        "version": "2.0",
        "routeKey": "POST /api/uploads",
        "rawPath": "/api/uploads",
        "headers": {"x-user": "mallory"},
        "queryStringParameters": {"limit": "3"},
        "requestContext": {
            "http": {"method": "POST", "path": "/api/uploads"},
            "authorizer": {"jwt": {"claims": {"sub": "0f9c-sub", "email": "a@example.com"}, "scopes": None}},
        },
        "body": base64.b64encode(b'{"filename": "a.mp4", "size": 3}').decode(),
        "isBase64Encoded": True,
    }
    request = request_from_event(event)
    assert (request.method, request.path, request.user) == ("POST", "/api/uploads", "0f9c-sub")
    assert request.query == {"limit": "3"} and json.loads(request.body or b"") == {"filename": "a.mp4", "size": 3}
    no_claims = request_from_event({**event, "requestContext": {"http": {"method": "GET"}}})
    assert no_claims.user is None


def test_http_responses_are_json_and_not_cached() -> None:
    http = to_http(api.Response(404, {"error": {"code": "not_found", "message": "no such upload"}}))
    assert http["statusCode"] == 404 and http["headers"]["cache-control"] == "no-store"
    assert json.loads(http["body"])["error"]["code"] == "not_found"


def test_signed_headers_reads_sigv4_urls() -> None:
    url = "https://b.s3.amazonaws.com/k?X-Amz-SignedHeaders=host%3Bx-amz-meta-vsr-plan%3Bx-amz-server-side-encryption"
    assert api.signed_headers(url) == {"x-amz-meta-vsr-plan", "x-amz-server-side-encryption"}
    assert parse_qs(urlsplit(url).query)["X-Amz-SignedHeaders"]


def test_aws_failures_are_503_when_transient_and_500_otherwise_with_nothing_leaked() -> None:
    from vsr.errors import TransientError
    from vsr.web.lambda_api import serve_request

    class Failing(FakeBackend):
        def __init__(self, error: Exception) -> None:
            super().__init__()
            self.error = error

        def get_record(self, bucket: str, key: str) -> dict[str, Any] | None:
            raise self.error

    request = Request("GET", "/api/uploads/8199999999999-000000000001", "alice")
    busy = serve_request(request, config(), Failing(TransientError("get s3://x: SlowDown")))
    assert busy.status == 503 and busy.body["error"]["code"] == "unavailable"
    broken = serve_request(request, config(), Failing(KeyError("secret-internal-detail")))
    assert broken.status == 500 and "secret-internal-detail" not in broken.json()
