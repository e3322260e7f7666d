"""The upload API's AWS side: presigned URLs, the upload records in the work bucket, heads and job reads.

Presigned URLs are SigV4 (S3 refuses SigV2 for SSE-KMS) from a client of their own, so the pipeline's clients
keep their configuration; locally its endpoint is the moto server's, so the URLs point there and a browser
really PUTs to it. Each method is one AWS call (two for completing a multipart upload), retried by clients.call.
"""

from __future__ import annotations

import json
import threading
from typing import Any

import boto3
import botocore.exceptions
from botocore.config import Config

from vsr.aws import clients
from vsr.aws.clients import error_code
from vsr.pipeline.jobs.record import KEY, Job, serialize
from vsr.web.api import ApiError, ObjectHead

_MISSING = ("NoSuchKey", "404", "NotFound")
_PRESIGN_CONFIG = Config(signature_version="s3v4", s3={"addressing_style": "path"})


class AwsBackend:
    """`vsr.web.api.Backend` on S3 and DynamoDB (moto locally)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._presigner: Any = None

    def _signing_client(self) -> Any:
        with self._lock:
            if self._presigner is None:
                endpoint = clients.endpoint_url()
                region = clients._region(endpoint)
                self._presigner = boto3.session.Session().client(
                    "s3", endpoint_url=endpoint, region_name=region, config=_PRESIGN_CONFIG
                )
            return self._presigner

    def presign(self, operation: str, params: dict[str, Any], expires_s: int) -> str:
        # signing is local: no request is made (the role's credentials sign; IAM decides when the URL is used)
        return str(self._signing_client().generate_presigned_url(operation, Params=params, ExpiresIn=expires_s))

    def create_multipart(self, bucket: str, key: str, extra: dict[str, Any]) -> str:
        response = clients.call(
            f"create multipart upload s3://{bucket}/{key}",
            lambda: clients.s3().create_multipart_upload(Bucket=bucket, Key=key, **extra),
        )
        return str(response["UploadId"])

    def complete_multipart(self, bucket: str, key: str, multipart_id: str, expected_parts: int) -> None:
        """Complete from the parts S3 holds (a browser cannot always read a part's ETag across origins)."""

        def list_parts() -> list[dict[str, Any]]:
            try:
                response = clients.s3().list_parts(Bucket=bucket, Key=key, UploadId=multipart_id, MaxParts=10_000)
            except botocore.exceptions.ClientError as exc:
                if error_code(exc) == "NoSuchUpload":
                    raise ApiError(409, "upload_gone", "this multipart upload was completed or aborted") from exc
                raise
            return list(response.get("Parts", []))

        parts = clients.call(f"list parts s3://{bucket}/{key}", list_parts)
        numbers = sorted(int(part["PartNumber"]) for part in parts)
        if numbers != list(range(1, expected_parts + 1)):
            missing = sorted(set(range(1, expected_parts + 1)) - set(numbers))
            raise ApiError(
                409,
                "parts_missing",
                f"{len(missing)} of {expected_parts} parts have not arrived (first missing: {missing[:5]}); "
                "PUT them, then complete again",
            )
        listing = [{"PartNumber": int(p["PartNumber"]), "ETag": p["ETag"]} for p in parts]

        def complete() -> None:
            try:
                clients.s3().complete_multipart_upload(
                    Bucket=bucket,
                    Key=key,
                    UploadId=multipart_id,
                    MultipartUpload={"Parts": sorted(listing, key=lambda p: p["PartNumber"])},
                )
            except botocore.exceptions.ClientError as exc:
                if error_code(exc) in ("EntityTooSmall", "InvalidPart", "InvalidPartOrder"):
                    raise ApiError(400, "bad_parts", f"S3 refused the parts: {error_code(exc)}") from exc
                raise

        clients.call(f"complete multipart upload s3://{bucket}/{key}", complete)

    def put_record(self, bucket: str, key: str, body: dict[str, Any]) -> None:
        data = json.dumps(body, separators=(",", ":"), ensure_ascii=False).encode()
        clients.call(
            f"put s3://{bucket}/{key}",
            lambda: clients.s3().put_object(Bucket=bucket, Key=key, Body=data, ContentType="application/json"),
        )

    def get_record(self, bucket: str, key: str) -> dict[str, Any] | None:
        def get() -> dict[str, Any] | None:
            try:
                body = clients.s3().get_object(Bucket=bucket, Key=key)["Body"].read()
            except botocore.exceptions.ClientError as exc:
                if error_code(exc) in _MISSING:
                    return None
                raise
            return dict(json.loads(body))

        return clients.call(f"get s3://{bucket}/{key}", get)

    def list_records(self, bucket: str, prefix: str, start_after: str | None, limit: int) -> tuple[list[str], bool]:
        args: dict[str, Any] = {"Bucket": bucket, "Prefix": prefix, "MaxKeys": limit}
        if start_after:
            args["StartAfter"] = start_after
        response = clients.call(f"list s3://{bucket}/{prefix}", lambda: clients.s3().list_objects_v2(**args))
        keys = [item["Key"] for item in response.get("Contents", []) if item["Key"].endswith(".json")]
        return keys, bool(response.get("IsTruncated"))

    def head(self, bucket: str, key: str) -> ObjectHead | None:
        def head() -> ObjectHead | None:
            try:
                response = clients.s3().head_object(Bucket=bucket, Key=key)
            except botocore.exceptions.ClientError as exc:
                if error_code(exc) in _MISSING:
                    return None
                raise
            return ObjectHead(response.get("VersionId"), response.get("ETag"))

        return clients.call(f"head s3://{bucket}/{key}", head)

    def get_job(self, table: str, job_id: str) -> Job | None:
        response = clients.call(
            "get job",
            lambda: clients.dynamodb().get_item(TableName=table, Key=serialize({KEY: job_id}), ConsistentRead=True),
        )
        item = response.get("Item")
        return Job.from_item(item) if item else None
