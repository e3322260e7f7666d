"""Which AWS API operations each Lambda's code can perform, found statically in shared/vsr.

Starting from services/<function>/handler.py, follow `vsr` imports (the modules the handler can reach) and
collect every boto3 client operation called in them: attribute calls whose name is an operation of a
service the code uses (botocore's own service models give the names), `get_paginator("op")`, and the
s3transfer helpers. Reachability over-approximates (a module's every function counts), which is the safe
direction for "every granted action is one the code performs".
"""

from __future__ import annotations

import ast
from collections.abc import Iterable
from functools import cache
from pathlib import Path

import botocore.session
from botocore import xform_name

ROOT = Path(__file__).resolve().parents[2]
PACKAGE = ROOT / "shared" / "vsr"
SERVICES_DIR = ROOT / "services"
FUNCTIONS = ("ingest", "worker", "assemble")

# botocore service name -> IAM action prefix
SERVICES = {"s3": "s3", "sqs": "sqs", "dynamodb": "dynamodb", "dynamodbstreams": "dynamodb", "events": "events"}

# s3transfer helpers on the S3 client -> the API operations they issue.
TRANSFER_OPERATIONS = {
    "upload_file": (
        "PutObject",
        "CreateMultipartUpload",
        "UploadPart",
        "CompleteMultipartUpload",
        "AbortMultipartUpload",
    ),
    "upload_fileobj": (
        "PutObject",
        "CreateMultipartUpload",
        "UploadPart",
        "CompleteMultipartUpload",
        "AbortMultipartUpload",
    ),
    "download_file": ("HeadObject", "GetObject"),
    "download_fileobj": ("HeadObject", "GetObject"),
}

# API operation -> the IAM action that authorises it, where the two are not spelled alike.
ACTION_FOR_OPERATION = {
    "s3:HeadObject": "s3:GetObject",
    "s3:ListObjectsV2": "s3:ListBucket",
    "s3:ListObjects": "s3:ListBucket",
    "s3:DeleteObjects": "s3:DeleteObject",
    "s3:CreateMultipartUpload": "s3:PutObject",
    "s3:UploadPart": "s3:PutObject",
    "s3:CompleteMultipartUpload": "s3:PutObject",
    "s3:UploadPartCopy": "s3:PutObject",  # and s3:GetObject on the source (the work bucket's segments)
    "s3:ListMultipartUploads": "s3:ListBucketMultipartUploads",
    "s3:ListParts": "s3:ListMultipartUploadParts",
    "sqs:SendMessageBatch": "sqs:SendMessage",
    "sqs:DeleteMessageBatch": "sqs:DeleteMessage",
    "sqs:ChangeMessageVisibilityBatch": "sqs:ChangeMessageVisibility",
    "dynamodb:BatchGetItem": "dynamodb:BatchGetItem",
}

# Actions a function needs that no line of its code performs, each with the reason.
INFRASTRUCTURE_ACTIONS: dict[str, dict[str, str]] = {
    "common": {
        "logs:CreateLogStream": "the Lambda runtime writes the function's logs to its log group",
        "logs:PutLogEvents": "the Lambda runtime writes the function's logs to its log group",
        "kms:Decrypt": "everything is encrypted with the project key (env vars, S3 objects, queue messages)",
        "kms:GenerateDataKey": "writing SSE-KMS S3 objects and sending to KMS-encrypted queues",
    },
    "sqs_consumer": {
        "sqs:ReceiveMessage": "the SQS event source mapping polls with the function's role",
        "sqs:DeleteMessage": "the SQS event source mapping deletes processed messages",
        "sqs:GetQueueAttributes": "the SQS event source mapping reads the queue's attributes",
    },
    "stream_consumer": {
        "dynamodb:DescribeStream": "the DynamoDB stream event source mapping",
        "dynamodb:GetRecords": "the DynamoDB stream event source mapping",
        "dynamodb:GetShardIterator": "the DynamoDB stream event source mapping",
        "dynamodb:ListStreams": "the DynamoDB stream event source mapping",
        "sqs:SendMessage": "the stream mapping's on-failure destination is an SQS queue",
    },
}
EVENT_SOURCE = {"ingest": "sqs_consumer", "worker": "sqs_consumer", "assemble": "stream_consumer"}

# Justified by an action the code performs: reading a versioned object pinned by VersionId, and s3:ListBucket so
# that S3 answers a missing key with 404 (classified as permanent by the code) rather than 403.
IMPLIED_BY = {
    "s3:GetObjectVersion": "s3:GetObject",
    "s3:ListBucket": "s3:GetObject",
}


@cache
def operation_index() -> dict[str, frozenset[str]]:
    """snake_case client method -> the `prefix:Operation` names it may be (one name can exist in several services)."""
    session = botocore.session.get_session()
    index: dict[str, set[str]] = {}
    for service, prefix in SERVICES.items():
        for operation in session.get_service_model(service).operation_names:
            index.setdefault(xform_name(operation), set()).add(f"{prefix}:{operation}")
    return {name: frozenset(ops) for name, ops in index.items()}


def module_path(name: str) -> Path | None:
    parts = name.split(".")
    if parts[0] != "vsr":
        return None
    base = PACKAGE.joinpath(*parts[1:])
    for candidate in (base.with_suffix(".py"), base / "__init__.py"):
        if candidate.is_file():
            return candidate
    return None


def _module_name(path: Path) -> str:
    relative = path.relative_to(PACKAGE.parent).with_suffix("")
    parts = list(relative.parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def imported_modules(path: Path) -> set[str]:
    """vsr modules imported anywhere in a file (top level or inside functions)."""
    tree = ast.parse(path.read_text(), filename=str(path))
    package = _module_name(path).rsplit(".", 1)[0] if path.is_relative_to(PACKAGE) else ""
    found: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join([*anchor, base] if base else anchor)
            found.add(base)
            found.update(f"{base}.{alias.name}" for alias in node.names)  # `from vsr.x import module`
    modules = set()
    for name in found:
        # importing vsr.a.b imports vsr and vsr.a too
        parts = name.split(".")
        for end in range(1, len(parts) + 1):
            if module_path(".".join(parts[:end])) is not None:
                modules.add(".".join(parts[:end]))
    return modules


def reachable_modules(entry: Path) -> set[str]:
    seen: set[str] = set()
    queue = list(imported_modules(entry))
    while queue:
        name = queue.pop()
        if name in seen:
            continue
        seen.add(name)
        path = module_path(name)
        if path is not None:
            queue.extend(imported_modules(path) - seen)
    return seen


def operations_in(path: Path) -> set[str]:
    """`prefix:Operation` names of boto3 calls in one file."""
    index = operation_index()
    tree = ast.parse(path.read_text(), filename=str(path))
    operations: set[str] = set()
    for node in ast.walk(tree):
        if not isinstance(node, ast.Call) or not isinstance(node.func, ast.Attribute):
            continue
        method = node.func.attr
        if method == "get_paginator" and node.args and isinstance(node.args[0], ast.Constant):
            operations.update(index.get(str(node.args[0].value), ()))
        elif method in TRANSFER_OPERATIONS:
            operations.update(f"s3:{op}" for op in TRANSFER_OPERATIONS[method])
        elif method in index:
            operations.update(index[method])
    return operations


def to_actions(operations: Iterable[str]) -> set[str]:
    return {ACTION_FOR_OPERATION.get(op, op) for op in operations}


def code_actions(function: str) -> set[str]:
    """IAM actions for the boto3 operations reachable from a function's handler."""
    entry = SERVICES_DIR / function / "handler.py"
    operations: set[str] = operations_in(entry)
    for name in reachable_modules(entry):
        path = module_path(name)
        if path is not None:
            operations |= operations_in(path)
    return to_actions(operations)


API_FUNCTION = "api"  # the upload API (terraform/api.tf): invoked by API Gateway, no event source mapping


def justified_actions_for_api() -> dict[str, str]:
    """Every action the upload API's role may hold -> why."""
    allowed = {action: "performed by the function's code" for action in code_actions(API_FUNCTION)}
    allowed.update(INFRASTRUCTURE_ACTIONS["common"])
    for action, base in IMPLIED_BY.items():
        if base in allowed:
            allowed.setdefault(action, f"implied by {base}")
    return allowed


def justified_actions(function: str) -> dict[str, str]:
    """Every action the function's role may hold -> why."""
    allowed = {action: "performed by the function's code" for action in code_actions(function)}
    allowed.update(INFRASTRUCTURE_ACTIONS["common"])
    allowed.update(INFRASTRUCTURE_ACTIONS[EVENT_SOURCE[function]])
    for action, base in IMPLIED_BY.items():
        if base in allowed:
            allowed.setdefault(action, f"implied by {base}")
    return allowed
