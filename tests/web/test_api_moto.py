"""The upload API against a moto server (its own process): real presigned URLs that really upload, multipart
uploads completed from the parts S3 holds, job status with presigned GETs that really download, ownership,
pagination over real S3 listings, and every bad input refused with nothing written anywhere. Then the same API
over HTTP as `vsr serve --web-port` serves it (vsr.web.local), with the page and its headers."""

from __future__ import annotations

import json
import os
import secrets
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterator
from dataclasses import replace
from typing import Any

import pytest

from tests.support.moto_server import fake_credentials, moto_server, reset
from vsr.aws import clients
from vsr.local.provision import local_names
from vsr.pipeline import jobs
from vsr.settings import get_settings
from vsr.web import api
from vsr.web.api import ApiConfig, Request
from vsr.web.backend import AwsBackend
from vsr.web.local import LocalWeb, local_config

MiB = 1024**2
NAMES = local_names()


@pytest.fixture(scope="module")
def moto() -> Iterator[str]:
    with moto_server() as url:
        yield url


@pytest.fixture
def aws(moto: str, monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    reset(moto)
    for name, value in fake_credentials().items():
        monkeypatch.setenv(name, value)
    monkeypatch.setenv("VSR_ENDPOINT_URL", moto)
    clients.reset_clients()
    s3 = clients.s3()
    for bucket in (NAMES.input_bucket, NAMES.output_bucket, NAMES.work_bucket):
        s3.create_bucket(Bucket=bucket)
        s3.put_bucket_versioning(Bucket=bucket, VersioningConfiguration={"Status": "Enabled"})
    clients.dynamodb().create_table(TableName=NAMES.table, **jobs.table_spec())
    yield moto
    clients.reset_clients()


def config(**api_changes: Any) -> ApiConfig:
    settings = get_settings()
    cfg = local_config(settings, NAMES.input_bucket, NAMES.work_bucket, NAMES.table)
    return replace(cfg, api=replace(settings.api, **api_changes)) if api_changes else cfg


def call(
    method: str,
    path: str,
    body: Any = None,
    user: str = "alice",
    cfg: ApiConfig | None = None,
    now: float | None = None,
    **query: str,
) -> api.Response:
    raw = None if body is None else (body if isinstance(body, bytes) else json.dumps(body).encode())
    request = Request(method, path, user, query, raw)
    return api.handle(
        request, AwsBackend(), cfg or config(), now=now or time.time(), token=lambda: secrets.token_hex(6)
    )


def put(url: str, data: bytes, headers: dict[str, str]) -> int:
    request = urllib.request.Request(url, data=data, method="PUT", headers={**headers, "Content-Type": "video/mp4"})
    with urllib.request.urlopen(request, timeout=30) as response:
        return int(response.status)


def everything_stored() -> dict[str, list[str]]:
    """Every object and every multipart upload in progress, per bucket: what "nothing written" means."""
    s3 = clients.s3()
    found: dict[str, list[str]] = {}
    for bucket in (NAMES.input_bucket, NAMES.output_bucket, NAMES.work_bucket):
        keys = [v["Key"] for v in s3.list_object_versions(Bucket=bucket).get("Versions", [])]
        uploads = [u["Key"] for u in s3.list_multipart_uploads(Bucket=bucket).get("Uploads", [])]
        found[bucket] = sorted(keys) + [f"multipart:{k}" for k in sorted(uploads)]
    return found


def test_a_presigned_put_really_uploads_with_the_signed_metadata_and_encryption(aws: str) -> None:
    data = os.urandom(4096)
    created = call(
        "POST", "/api/uploads", {"filename": "my clip é.mp4", "size": len(data), "metadata": {"vsr-plan": "cost"}}
    )
    assert created.status == 201, created.body
    body = created.body
    assert body["url"].startswith(f"{aws}/{NAMES.input_bucket}/users/alice/")  # the local S3 endpoint
    assert "X-Amz-Signature=" in body["url"] and "X-Amz-Expires=3600" in body["url"]
    path = f"/api/uploads/{body['upload_id']}"
    assert call("GET", path).body["status"] == "WAITING"

    assert put(body["url"], data, body["headers"]) == 200
    head = clients.s3().head_object(Bucket=NAMES.input_bucket, Key=body["key"])
    assert head["ContentLength"] == len(data) and head["ServerSideEncryption"] == "aws:kms"
    assert head["Metadata"] == {"vsr-plan": "cost"}
    view = call("GET", path).body
    assert view["status"] == "QUEUED"
    assert view["job_id"] == jobs.job_id_for(NAMES.input_bucket, body["key"], head["VersionId"], head["ETag"])


def test_multipart_parts_then_complete_from_what_s3_holds(aws: str) -> None:
    cfg = config(multipart_part_bytes=5 * MiB)
    data = os.urandom(11 * MiB + 123)
    created = call("POST", "/api/uploads", {"filename": "long take.mkv", "size": len(data)}, cfg=cfg)
    assert created.status == 201, created.body
    plan = created.body["multipart"]
    assert [p["length"] for p in plan["parts"]] == [5 * MiB, 5 * MiB, MiB + 123]
    early = call(plan["complete"]["method"], plan["complete"]["path"], cfg=cfg)
    assert early.status == 409 and early.body["error"]["code"] == "parts_missing"
    for part in plan["parts"]:
        chunk = data[part["offset"] : part["offset"] + part["length"]]
        assert put(part["url"], chunk, created.body["headers"]) == 200
    done = call(plan["complete"]["method"], plan["complete"]["path"], cfg=cfg)
    assert done.status == 200 and done.body["status"] == "QUEUED", done.body
    stored = clients.s3().get_object(Bucket=NAMES.input_bucket, Key=created.body["key"])
    assert stored["Body"].read() == data and stored["ServerSideEncryption"] == "aws:kms"
    assert clients.s3().list_multipart_uploads(Bucket=NAMES.input_bucket).get("Uploads", []) == []


BAD = [
    ({"filename": "../../x.mp4", "size": 10}, 400),
    ({"filename": "a/b.mp4", "size": 10}, 400),
    ({"filename": "ok.mp4", "size": 0}, 400),
    ({"filename": "ok.mp4", "size": 10**13}, 413),
    ({"filename": "ok.mp4", "size": 10, "metadata": {"x-amz-acl": "public-read"}}, 400),
    ({"filename": "ok.mp4", "size": 10, "metadata": {"vsr-tier": "gpu"}}, 400),
    ({"filename": "notes.pdf", "size": 10}, 400),
    ({"filename": "ok.mp4", "size": 10, "owner": "bob"}, 400),
    (b"{not json", 400),
]


def test_every_bad_input_is_a_4xx_and_nothing_is_written(aws: str) -> None:
    before = everything_stored()
    for body, status in BAD:
        response = call("POST", "/api/uploads", body)
        assert response.status == status, (body, response.body)
        assert response.body["error"]["message"]
    for path, status in (("/api/uploads/not-an-id", 400), ("/api/uploads/8199999999999-000000000001", 404)):
        assert call("GET", path).status == status
    assert call("GET", "/api/uploads", limit="1000").status == 400
    assert call("POST", "/api/uploads/8199999999999-000000000001/complete").status == 404
    assert everything_stored() == before == {NAMES.input_bucket: [], NAMES.output_bucket: [], NAMES.work_bucket: []}


def test_only_the_owner_sees_an_upload_and_lists_page_newest_first(aws: str) -> None:
    ids = []
    for index in range(5):
        created = call("POST", "/api/uploads", {"filename": f"c{index}.mp4", "size": 10}, now=1.8e9 + index)
        ids.append(created.body["upload_id"])
    assert call("GET", f"/api/uploads/{ids[0]}", user="bob").status == 404
    assert call("GET", "/api/uploads", user="bob").body == {"uploads": [], "next_cursor": None}
    seen: list[str] = []
    cursor = None
    while True:
        page = call("GET", "/api/uploads", **({"limit": "2"} | ({"cursor": cursor} if cursor else {}))).body
        seen += [u["upload_id"] for u in page["uploads"]]
        cursor = page["next_cursor"]
        if cursor is None:
            break
    assert seen == list(reversed(ids))


def test_complete_job_gives_presigned_gets_that_download(aws: str) -> None:
    data = os.urandom(1000)
    created = call("POST", "/api/uploads", {"filename": "été.mp4", "size": len(data)}).body
    put(created["url"], data, created["headers"])
    head = clients.s3().head_object(Bucket=NAMES.input_bucket, Key=created["key"])
    job_id = jobs.job_id_for(NAMES.input_bucket, created["key"], head["VersionId"], head["ETag"])
    video, report = (
        created["key"].replace(".mp4", ".upscaled-x2.mp4"),
        created["key"].replace(".mp4", ".upscaled-x2.json"),
    )
    preview = created["key"].replace(".mp4", ".upscaled-x2.preview.png")
    s3 = clients.s3()
    for key, body in ((video, b"video bytes"), (report, b'{"report": 1}'), (preview, b"png bytes")):
        s3.put_object(Bucket=NAMES.output_bucket, Key=key, Body=body)
    now = time.time()
    item = jobs.new_job_item(
        job_id=job_id,
        status=jobs.QUEUED,
        input_ref={"bucket": NAMES.input_bucket, "key": created["key"]},
        now=now - 30,
        ttl_s=3600,
        probe={"frames": 24},
        segment_count=2,
        plan={"strategy": "default", "tier": "lambda", "predicted_cost_usd": 0.01, "predicted_wall_s": 20.0},
        model={"scale": 2},
    )
    item.update(
        status=jobs.COMPLETE,
        remaining=0,
        completed_at=now,
        output={
            "bucket": NAMES.output_bucket,
            "key": video,
            "report_key": report,
            "preview_key": preview,
            "flicker_ratio": 0.98,
            "quality_measured": True,
        },
    )
    clients.dynamodb().put_item(TableName=NAMES.table, Item=jobs.serialize(item))
    view = call("GET", f"/api/uploads/{created['upload_id']}").body
    assert view["status"] == "COMPLETE" and view["figures"]["flicker_ratio"] == 0.98
    assert view["figures"]["wall_s"] == pytest.approx(30, abs=0.5) and view["figures"]["segments"] == 2
    with urllib.request.urlopen(view["output_url"], timeout=30) as response:
        assert response.read() == b"video bytes"
        assert "été.upscaled-x2.mp4" in urllib.parse.unquote(response.headers["Content-Disposition"])
    for url, expected in ((view["report_url"], b'{"report": 1}'), (view["preview_url"], b"png bytes")):
        with urllib.request.urlopen(url, timeout=30) as response:
            assert response.read() == expected
    assert "X-Amz-Expires=300" in view["output_url"]


# --- over HTTP, as vsr serve --web-port serves it ---------------------------------------------------------------
@pytest.fixture
def web(aws: str) -> Iterator[LocalWeb]:
    server = LocalWeb(config(), aws, port=0).start()
    try:
        yield server
    finally:
        server.stop()


def _http(method: str, url: str, body: bytes | None = None) -> tuple[int, dict[str, str], bytes]:
    request = urllib.request.Request(url, data=body, method=method, headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            return response.status, dict(response.headers), response.read()
    except urllib.error.HTTPError as error:
        return error.code, dict(error.headers), error.read()


def test_the_local_server_serves_the_page_the_config_and_the_api(web: LocalWeb, aws: str) -> None:
    assert web.url.startswith("http://127.0.0.1:")
    status, headers, page = _http("GET", web.url)
    assert status == 200 and b'<input id="file" type="file"' in page
    assert headers["Content-Type"].startswith("text/html")
    assert f"connect-src 'self' {aws}" in headers["Content-Security-Policy"]
    assert headers["X-Content-Type-Options"] == "nosniff"
    for asset in ("app.js", "style.css"):
        assert _http("GET", web.url + asset)[0] == 200
    status, _, config_body = _http("GET", web.url + "config.json")
    assert json.loads(config_body) == {"api_base": "", "auth": None, "user": "local", "s3_endpoint": aws}
    status, _, created = _http("POST", web.url + "api/uploads", json.dumps({"filename": "a b.mp4", "size": 5}).encode())
    assert status == 201 and json.loads(created)["key"].startswith("users/local/")
    status, _, listed = _http("GET", web.url + "api/uploads?limit=5")
    assert status == 200 and [u["filename"] for u in json.loads(listed)["uploads"]] == ["a b.mp4"]
    assert _http("GET", web.url + "api/uploads?limit=0")[0] == 400
    assert _http("GET", web.url + "nope")[0] == 404
    assert _http("GET", web.url + "../../etc/passwd")[0] == 404
    status, _, too_big = _http("POST", web.url + "api/uploads", b"{" + b" " * 70_000 + b"}")
    assert status == 413 and json.loads(too_big)["error"]["code"] == "body_too_large"
