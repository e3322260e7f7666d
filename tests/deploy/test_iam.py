"""Least privilege: every action a function's role holds is one its code (or its event source) performs.

The code side is found statically (tests/deploy/codescan.py): boto3 operations reachable from each
services/<function>/handler.py through `vsr` imports.
"""

from __future__ import annotations

import re

import pytest

from tests.deploy import codescan, tfconfig
from tests.deploy.tfconfig import expression

FUNCTIONS = codescan.FUNCTIONS


def role_statements(tf: tfconfig.TerraformConfig, function: str) -> list[dict]:
    return tfconfig.all_statements(tf.data("aws_iam_policy_document")[function])


def test_one_role_and_one_policy_per_function(tf: tfconfig.TerraformConfig) -> None:
    role = tf.resource("aws_iam_role", "function")
    policy = tf.resource("aws_iam_role_policy", "function")
    function = tf.resource("aws_lambda_function", "this")
    assert expression(role["for_each"]) == expression(function["for_each"]) == "local.function_names_set"
    assert expression(policy["role"]) == "aws_iam_role.function[each.key].id"
    assert expression(function["role"]) == "aws_iam_role.function[each.key].arn"
    policies = tf.locals["function_policies"]
    for name in FUNCTIONS:
        assert policies[name] == f"${{data.aws_iam_policy_document.{name}.json}}"
    assume = tfconfig.statements(tf.data("aws_iam_policy_document")["assume_lambda"])
    assert [s["actions"] for s in assume] == [["sts:AssumeRole"]]


@pytest.mark.parametrize("function", FUNCTIONS)
def test_no_wildcards(tf: tfconfig.TerraformConfig, function: str) -> None:
    for statement in role_statements(tf, function):
        assert statement["effect"] == "Allow"
        for action in statement["actions"]:
            assert "*" not in action and re.fullmatch(r"[a-z0-9]+:[A-Za-z]+", action), action
        assert statement["resources"], statement["sid"]
        for resource in statement["resources"]:
            # "arn/*" (objects of one bucket, streams of one table, streams of one log group) is scoping; a bare
            # "*" or an ARN pattern without a Terraform reference is not
            assert resource != "*" and "${" in resource, (statement["sid"], resource)


@pytest.mark.parametrize("function", FUNCTIONS)
def test_every_action_is_one_the_function_performs(tf: tfconfig.TerraformConfig, function: str) -> None:
    allowed = codescan.justified_actions(function)
    granted = {action for statement in role_statements(tf, function) for action in statement["actions"]}
    unjustified = sorted(granted - set(allowed))
    assert not unjustified, f"{function} role grants actions its code never performs: {unjustified}"


def test_the_scan_finds_the_calls_each_stage_makes() -> None:
    """Guards the scanner itself: calls we know each stage makes must be found."""
    assert {"s3:GetObject", "dynamodb:PutItem", "sqs:SendMessage"} <= codescan.code_actions("ingest")
    assert {"sqs:ChangeMessageVisibility", "s3:PutObject", "dynamodb:UpdateItem"} <= codescan.code_actions("worker")
    assert {"s3:DeleteObject", "s3:PutObject", "dynamodb:UpdateItem"} <= codescan.code_actions("assemble")
    assert "sqs:StartMessageMoveTask" not in codescan.code_actions("worker")  # operator-only (vsr redrive)


def _grants(tf: tfconfig.TerraformConfig, function: str) -> dict[str, set[str]]:
    """action -> resource expressions it is granted on."""
    grants: dict[str, set[str]] = {}
    for statement in role_statements(tf, function):
        for action in statement["actions"]:
            grants.setdefault(action, set()).update(statement["resources"])
    return grants


def test_resources_are_the_exact_ones_each_function_touches(tf: tfconfig.TerraformConfig) -> None:
    input_objects = "${local.bucket_arns.input}/*"
    work = "${local.work_objects}"
    assert tf.locals["work_objects"] == "${local.bucket_arns.work}/${local.work_prefix}*"

    ingest = _grants(tf, "ingest")
    assert ingest["s3:GetObject"] == {input_objects, work}
    assert ingest["s3:PutObject"] == {work}
    # the segment queue, and the GPU queue where the fleet exists (a dynamic statement over its 0 or 1 queues)
    assert ingest["sqs:SendMessage"] == {"${aws_sqs_queue.segments.arn}", "${statement.value.arn}"}
    assert ingest["sqs:ReceiveMessage"] == {"${aws_sqs_queue.ingest.arn}"}
    assert ingest["dynamodb:PutItem"] == {"${aws_dynamodb_table.jobs.arn}"}

    worker = _grants(tf, "worker")
    assert worker["s3:GetObject"] == {input_objects, work, "${local.bucket_arns.models}/models/*"}
    assert worker["s3:PutObject"] == {work}
    assert worker["sqs:ChangeMessageVisibility"] == {"${aws_sqs_queue.segments.arn}"}
    assert worker["sqs:ReceiveMessage"] == {"${aws_sqs_queue.segments.arn}"}
    # the worker sends only its job's next segment (vsr.pipeline.window), to the segment queue alone
    assert worker["sqs:SendMessage"] == {"${aws_sqs_queue.segments.arn}"}
    assert "dynamodb:PutItem" not in worker

    assemble = _grants(tf, "assemble")
    assert assemble["s3:PutObject"] == {"${local.bucket_arns.output}/*"}
    assert assemble["s3:DeleteObject"] == {work}
    assert assemble["dynamodb:GetRecords"] == {"${aws_dynamodb_table.jobs.stream_arn}"}
    assert assemble["sqs:SendMessage"] == {"${aws_sqs_queue.assembly_failures.arn}"}
    assert not any(action.startswith("sqs:Receive") for action in assemble)

    for function in FUNCTIONS:
        grants = _grants(tf, function)
        assert grants["events:PutEvents"] == {"${local.event_bus_arn}"}  # job events, to the one bus
        assert grants["logs:PutLogEvents"] == {f'${{aws_cloudwatch_log_group.function["{function}"].arn}}:*'}
        assert grants["kms:Decrypt"] == {"${aws_kms_key.main.arn}"}
        assert not any(r.endswith("/*") and "output" in r for r in grants.get("s3:GetObject", ()))


# Calls reachable from a handler's imports that the function never makes (module-level reachability
# over-approximates): each with the reason. Anything else the code can call must be granted.
NOT_ON_THE_PATH: dict[str, dict[str, str]] = {
    "ingest": {
        "dynamodb:Scan": "vsr.pipeline.jobs.list_jobs: `vsr status` only",
        "s3:DeleteObject": "vsr.pipeline.artifacts.delete_keys: assembly only",
        "s3:AbortMultipartUpload": "vsr.pipeline.artifacts.upload_file (multipart): workers and assembly; ingest writes small JSON with PutObject",
    },
    "worker": {
        "dynamodb:Scan": "vsr.pipeline.jobs.list_jobs: `vsr status` only",
        "dynamodb:PutItem": "vsr.pipeline.jobs.create_job: ingest only",
        "s3:DeleteObject": "vsr.pipeline.artifacts.delete_keys: assembly only",
        "sqs:SendMessage": "vsr.pipeline.messages (segment messages): ingest only",
    },
    "assemble": {
        "dynamodb:Scan": "vsr.pipeline.jobs.list_jobs: `vsr status` only",
        "dynamodb:PutItem": "vsr.pipeline.jobs.create_job: ingest only",
    },
}


@pytest.mark.parametrize("function", FUNCTIONS)
def test_every_call_the_function_can_make_is_granted(tf: tfconfig.TerraformConfig, function: str) -> None:
    """The other direction: a new AWS call in code a handler reaches fails here until it is granted (or shown
    to be off this function's path), instead of failing with AccessDenied in AWS."""
    granted = {action for statement in role_statements(tf, function) for action in statement["actions"]}
    reachable = codescan.code_actions(function)
    excluded = NOT_ON_THE_PATH[function]
    missing = sorted(reachable - granted - set(excluded))
    assert not missing, f"{function} code can call {missing} but its role does not grant them"
    stale = sorted(set(excluded) - reachable)
    assert not stale, f"{function}: {stale} no longer reachable; drop them from NOT_ON_THE_PATH"
