"""terraform/api.tf, read statically: opt-in, every route behind the Cognito JWT authorizer, CORS for one origin,
access logs and throttling from settings, and a least-privilege role whose every action the API's code (found by
tests/deploy/codescan.py from services/api/handler.py) performs, on its prefixes only."""

from __future__ import annotations

import re

from tests.deploy import codescan, tfconfig
from tests.deploy.tfconfig import compact, expression, unwrap
from vsr.settings import get_settings
from vsr.web import api

API_RESOURCES = (
    ("aws_cognito_user_pool", "api"),
    ("aws_cognito_user_pool_domain", "api"),
    ("aws_cognito_user_pool_client", "api"),
    ("aws_cloudwatch_log_group", "api_function"),
    ("aws_cloudwatch_log_group", "api_access"),
    ("aws_iam_role", "api"),
    ("aws_iam_role_policy", "api"),
    ("aws_lambda_function", "api"),
    ("aws_apigatewayv2_api", "api"),
    ("aws_apigatewayv2_authorizer", "cognito"),
    ("aws_apigatewayv2_integration", "api"),
    ("aws_apigatewayv2_stage", "api"),
    ("aws_lambda_permission", "api"),
)

# Calls reachable from the API handler's imports (module-level reachability over-approximates) that the API never
# makes, each with the reason; anything else it can call must be granted.
NOT_ON_THE_API_PATH = {
    "dynamodb:PutItem": "vsr.pipeline.jobs.store.create_job: ingest only; the API reads jobs with GetItem",
    "dynamodb:UpdateItem": "vsr.pipeline.jobs.store transitions: the pipeline stages only",
    "dynamodb:Scan": "vsr.pipeline.jobs.list_jobs: `vsr status` only",
    "events:PutEvents": "vsr.pipeline.jobs.notify: emitted by the stages that move a job",
}


def _statements(tf: tfconfig.TerraformConfig) -> list[dict]:
    return tfconfig.statements(tf.data("aws_iam_policy_document")["api"])


def _grants(tf: tfconfig.TerraformConfig) -> dict[str, set[str]]:
    grants: dict[str, set[str]] = {}
    for statement in _statements(tf):
        for action in statement["actions"]:
            grants.setdefault(action, set()).update(statement["resources"])
    return grants


def test_the_api_is_opt_in_and_off_by_default(tf: tfconfig.TerraformConfig) -> None:
    variable = tf.variables["api_enabled"]
    assert unwrap(variable["default"]) is False
    assert expression(tf.locals["api_enabled"]) == "var.api_enabled"
    for rtype, name in API_RESOURCES:
        count = compact(expression(tf.resource(rtype, name)["count"]))
        assert count == "local.api_enabled?1:0", (rtype, name, count)
    routes = tf.resource("aws_apigatewayv2_route", "api")
    assert compact(expression(routes["for_each"])) == "local.api_enabled?local.api_routes:toset([])"
    assert compact(expression(tf.data("aws_iam_policy_document")["api"]["count"])) == "local.api_enabled?1:0"


def test_every_route_needs_a_cognito_jwt_and_the_routes_are_the_apis(tf: tfconfig.TerraformConfig) -> None:
    route = tf.resource("aws_apigatewayv2_route", "api")
    assert unwrap(route["authorization_type"]) == "JWT"
    assert expression(route["authorizer_id"]) == "aws_apigatewayv2_authorizer.cognito[0].id"
    routes = set(tf.locals["api_routes"]) if isinstance(tf.locals["api_routes"], list) else None
    text = str(tf.locals["api_routes"])
    for method, path in (
        ("POST", "/api/uploads"),
        ("GET", "/api/uploads"),
        ("GET", "/api/uploads/{upload_id}"),
        ("POST", "/api/uploads/{upload_id}/complete"),
    ):
        assert f"{method} {path}" in text, (method, path, routes)
    assert api.ID_PATTERN.fullmatch(api.new_upload_id(1.8e9, "0" * 12))
    authorizer = tf.resource("aws_apigatewayv2_authorizer", "cognito")
    assert unwrap(authorizer["authorizer_type"]) == "JWT"
    jwt = unwrap(authorizer["jwt_configuration"])
    jwt = jwt[0] if isinstance(jwt, list) else jwt
    assert "aws_cognito_user_pool_client.api[0].id" in str(jwt["audience"])
    assert "aws_cognito_user_pool.api[0].endpoint" in str(jwt["issuer"])
    client = tf.resource("aws_cognito_user_pool_client", "api")
    assert unwrap(client["generate_secret"]) is False  # a page or an app cannot keep a secret: PKCE instead
    assert "code" in str(client["allowed_oauth_flows"]) and "implicit" not in str(client["allowed_oauth_flows"])
    pool = tf.resource("aws_cognito_user_pool", "api")
    admin = unwrap(pool["admin_create_user_config"])
    admin = admin[0] if isinstance(admin, list) else admin
    assert unwrap(admin["allow_admin_create_user_only"]) is True  # no self sign-up


def test_cors_is_the_pages_one_origin(tf: tfconfig.TerraformConfig) -> None:
    cors = unwrap(tf.resource("aws_apigatewayv2_api", "api")["cors_configuration"])
    cors = cors[0] if isinstance(cors, list) else cors
    assert compact(cors["allow_origins"]).count("var.api_page_origin") == 1
    assert "*" not in str(cors["allow_origins"])
    assert set(tfconfig.as_list(cors["allow_methods"])) == {"GET", "POST"}
    validation = tf.variables["api_page_origin"]["validation"]
    pattern = re.search(r'regex\("(.+?)",\s*var', str(validation)).group(1)  # type: ignore[union-attr]
    while "\\\\" in pattern:  # HCL escaping, and the parser's
        pattern = pattern.replace("\\\\", "\\")
    for good in ("https://videos.example.com", "http://localhost:8080", "http://127.0.0.1:8080"):
        assert re.fullmatch(pattern, good), good
    for bad in ("*", "http://videos.example.com", "https://x.example.com/", "https://a.example.com/path"):
        assert not re.fullmatch(pattern, bad), bad


def test_the_stage_logs_every_request_and_throttles_from_settings(tf: tfconfig.TerraformConfig) -> None:
    stage = tf.resource("aws_apigatewayv2_stage", "api")
    logs = unwrap(stage["access_log_settings"])
    logs = logs[0] if isinstance(logs, list) else logs
    assert expression(logs["destination_arn"]) == "aws_cloudwatch_log_group.api_access[0].arn"
    for field in ("$context.requestId", "$context.status", "$context.routeKey", "$context.authorizer.claims.sub"):
        assert field in str(logs["format"]), field
    throttle = unwrap(stage["default_route_settings"])
    throttle = throttle[0] if isinstance(throttle, list) else throttle
    assert expression(throttle["throttling_rate_limit"]) == "local.api.throttle_rate_per_s"
    assert expression(throttle["throttling_burst_limit"]) == "local.api.throttle_burst"
    raw = get_settings().raw["api"]
    assert raw["throttle_rate_per_s"] > 0 and raw["throttle_burst"] >= raw["throttle_rate_per_s"]
    assert expression(tf.locals["api"]) == "local.settings.api"
    access = tf.resource("aws_cloudwatch_log_group", "api_access")
    assert expression(access["kms_key_id"]) == "aws_kms_key.main.arn"


def test_the_function_is_the_thin_handler_with_the_contracts_environment(tf: tfconfig.TerraformConfig) -> None:
    function = tf.resource("aws_lambda_function", "api")
    assert unwrap(function["handler"]) == "handler.handler"
    assert expression(function["filename"]) == "local.api_zip"
    assert "api.zip" in str(tf.locals["api_zip"])
    env = unwrap(function["environment"])
    env = env[0] if isinstance(env, list) else env
    assert compact(expression(env["variables"])) == "merge(local.function_env,{VSR_KMS_KEY_ARN=aws_kms_key.main.arn})"
    assert expression(function["timeout"]) == "local.api.function.timeout_s"
    assert expression(function["memory_size"]) == "local.api.function.memory_mb"
    from vsr.web.lambda_api import KMS_KEY_ENV

    assert KMS_KEY_ENV == "VSR_KMS_KEY_ARN"
    permission = tf.resource("aws_lambda_permission", "api")
    assert unwrap(permission["principal"]) == "apigateway.amazonaws.com"
    assert "aws_apigatewayv2_api.api[0].execution_arn" in str(permission["source_arn"])


def test_no_wildcards_and_every_granted_action_is_one_the_api_performs(tf: tfconfig.TerraformConfig) -> None:
    allowed = codescan.justified_actions_for_api()
    for statement in _statements(tf):
        assert statement["effect"] == "Allow"
        for action in statement["actions"]:
            assert "*" not in action and re.fullmatch(r"[a-z0-9]+:[A-Za-z]+", action), action
            assert action in allowed, f"the API role grants {action}, which its code never performs"
        for resource in statement["resources"]:
            assert resource != "*" and "${" in resource, (statement["sid"], resource)


def test_every_call_the_api_can_make_is_granted() -> None:
    tf = tfconfig.load()
    granted = set(_grants(tf))
    reachable = codescan.code_actions("api")
    missing = sorted(reachable - granted - set(NOT_ON_THE_API_PATH))
    assert not missing, f"the API's code can call {missing} but its role does not grant them"
    stale = sorted(set(NOT_ON_THE_API_PATH) - reachable)
    assert not stale, f"{stale} no longer reachable from the API; drop them from NOT_ON_THE_API_PATH"
    # the scan found what the API really does
    assert {
        "s3:PutObject",
        "s3:GetObject",
        "s3:ListBucket",
        "s3:ListMultipartUploadParts",
        "dynamodb:GetItem",
    } <= reachable


def test_presign_only_on_its_prefixes(tf: tfconfig.TerraformConfig) -> None:
    grants = _grants(tf)
    users_in = "${local.bucket_arns.input}/${local.api_user_prefix}*"
    records = "${local.bucket_arns.work}/${local.api_record_prefix}*"
    users_out = "${local.bucket_arns.output}/${local.api_user_prefix}*"
    assert grants["s3:PutObject"] == {users_in, records}
    assert grants["s3:GetObject"] == {users_in, records, users_out}
    assert grants["s3:ListMultipartUploadParts"] == {users_in}
    assert grants["s3:ListBucket"] == {"${local.bucket_arns.input}", "${local.bucket_arns.work}"}
    assert grants["dynamodb:GetItem"] == {"${aws_dynamodb_table.jobs.arn}"}
    assert not any(a.startswith(("sqs:", "s3:Delete", "dynamodb:Put", "dynamodb:Update")) for a in grants)
    assert tf.locals["api_user_prefix"] == api.USER_PREFIX and tf.locals["api_record_prefix"] == api.RECORD_PREFIX
    listing = next(s for s in _statements(tf) if s["sid"] == "ListOwnUploadRecords")
    assert "uploads/" in str(listing) or "api_record_prefix" in str(listing)
