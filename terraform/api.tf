# The upload API (vsr.web, services/api/handler.py), opt-in with api_enabled = true: an API Gateway HTTP API whose
# routes all need a Cognito user-pool JWT; a user pool (no self sign-up: an operator invites users) with one public
# app client (authorization code + PKCE); one Lambda with a least-privilege role that can presign only under its
# prefixes; CORS for the page's one origin; access logs and throttling on the stage. The numbers (URL lifetimes,
# part size, page sizes, throttling, the function's size) are settings.json's "api" section.
#
# The page itself is hosted by `vsr serve` only (docs/web.md); api_page_origin names where it is served from.

locals {
  api_enabled       = var.api_enabled
  api               = local.settings.api
  api_function_name = "${local.prefix}-api"
  api_zip           = "${local.package_dir}/api.zip"
  api_auth_domain   = coalesce(var.api_auth_domain_prefix, "${local.prefix}-${local.account_id}")
  # method + path: vsr.web.api's routes
  api_routes = toset([
    "POST /api/uploads",
    "GET /api/uploads",
    "GET /api/uploads/{upload_id}",
    "POST /api/uploads/{upload_id}/complete",
  ])
  # vsr.web.api: uploads under users/<sub>/ in the input bucket, records under uploads/<sub>/ in the work bucket;
  # outputs keep the input key's prefix (vsr.pipeline.artifacts.output_keys), so users/<sub>/ in the output bucket
  api_user_prefix   = "users/"
  api_record_prefix = "uploads/"
}

# --- sign-in ----------------------------------------------------------------------------------------------------
resource "aws_cognito_user_pool" "api" {
  count                    = local.api_enabled ? 1 : 0
  name                     = "${local.prefix}-users"
  username_attributes      = ["email"]
  auto_verified_attributes = ["email"]
  mfa_configuration        = "OPTIONAL"

  admin_create_user_config {
    allow_admin_create_user_only = true
  }

  software_token_mfa_configuration {
    enabled = true
  }

  password_policy {
    minimum_length                   = 12
    require_lowercase                = true
    require_uppercase                = true
    require_numbers                  = true
    require_symbols                  = false
    temporary_password_validity_days = 3
  }

  account_recovery_setting {
    recovery_mechanism {
      name     = "verified_email"
      priority = 1
    }
  }
}

resource "aws_cognito_user_pool_domain" "api" {
  count        = local.api_enabled ? 1 : 0
  domain       = local.api_auth_domain
  user_pool_id = aws_cognito_user_pool.api[0].id
}

# A public client (a browser page or an app cannot keep a secret): the authorization code flow with PKCE.
resource "aws_cognito_user_pool_client" "api" {
  count                                = local.api_enabled ? 1 : 0
  name                                 = "${local.prefix}-page"
  user_pool_id                         = aws_cognito_user_pool.api[0].id
  generate_secret                      = false
  allowed_oauth_flows_user_pool_client = true
  allowed_oauth_flows                  = ["code"]
  allowed_oauth_scopes                 = ["openid", "email"]
  supported_identity_providers         = ["COGNITO"]
  callback_urls                        = ["${var.api_page_origin}/"]
  logout_urls                          = ["${var.api_page_origin}/"]
  explicit_auth_flows                  = ["ALLOW_USER_SRP_AUTH", "ALLOW_REFRESH_TOKEN_AUTH"]
  prevent_user_existence_errors        = "ENABLED"
  enable_token_revocation              = true
  access_token_validity                = 60
  id_token_validity                    = 60
  refresh_token_validity               = 12
  token_validity_units {
    access_token  = "minutes"
    id_token      = "minutes"
    refresh_token = "hours"
  }
}

# --- the function ---------------------------------------------------------------------------------------------------
resource "aws_cloudwatch_log_group" "api_function" {
  #checkov:skip=CKV_AWS_338:retention is settings.json observability.log_retention_days (cost control); raise it there or with var.log_retention_days
  count             = local.api_enabled ? 1 : 0
  name              = "/aws/lambda/${local.api_function_name}"
  retention_in_days = local.log_retention_days
  kms_key_id        = aws_kms_key.main.arn
}

resource "aws_iam_role" "api" {
  count              = local.api_enabled ? 1 : 0
  name               = "${local.api_function_name}-role"
  assume_role_policy = data.aws_iam_policy_document.assume_lambda.json
}

resource "aws_iam_role_policy" "api" {
  count  = local.api_enabled ? 1 : 0
  name   = "${local.api_function_name}-least-privilege"
  role   = aws_iam_role.api[0].id
  policy = data.aws_iam_policy_document.api[0].json
}

# Presign only, on its prefixes: a presigned URL acts with this role's rights, so these grants are exactly what
# a signed-in user can do with the URLs (PUT under users/, GET of results under users/) plus the API's own reads.
# Objects of other users share the prefix; the sub in every key comes from the verified token (vsr.web.api).
data "aws_iam_policy_document" "api" {
  count = local.api_enabled ? 1 : 0
  statement {
    sid       = "LogsOwnGroup"
    actions   = ["logs:CreateLogStream", "logs:PutLogEvents"]
    resources = ["${aws_cloudwatch_log_group.api_function[0].arn}:*"]
  }
  statement {
    # presigned PUTs and multipart parts; CreateMultipartUpload and CompleteMultipartUpload are s3:PutObject too
    sid       = "PresignUploadsUnderUsers"
    actions   = ["s3:PutObject"]
    resources = ["${local.bucket_arns.input}/${local.api_user_prefix}*"]
  }
  statement {
    # HeadObject: has the upload arrived, and its version (the job id); ListParts: completing a multipart upload
    sid       = "FindArrivedUploads"
    actions   = ["s3:GetObject", "s3:ListMultipartUploadParts"]
    resources = ["${local.bucket_arns.input}/${local.api_user_prefix}*"]
  }
  statement {
    sid       = "MissingUploadIs404"
    actions   = ["s3:ListBucket"]
    resources = [local.bucket_arns.input]
  }
  statement {
    sid       = "UploadRecords"
    actions   = ["s3:PutObject", "s3:GetObject"]
    resources = ["${local.bucket_arns.work}/${local.api_record_prefix}*"]
  }
  statement {
    sid       = "ListOwnUploadRecords"
    actions   = ["s3:ListBucket"]
    resources = [local.bucket_arns.work]
    condition {
      test     = "StringLike"
      variable = "s3:prefix"
      values   = ["${local.api_record_prefix}*"]
    }
  }
  statement {
    # presigned GETs of the output, report and preview (short-lived, settings api.download_url_expiry_s)
    sid       = "PresignResultsUnderUsers"
    actions   = ["s3:GetObject"]
    resources = ["${local.bucket_arns.output}/${local.api_user_prefix}*"]
  }
  statement {
    sid       = "ReadJobs"
    actions   = ["dynamodb:GetItem"]
    resources = [aws_dynamodb_table.jobs.arn]
  }
  statement {
    sid       = "UseProjectKey"
    actions   = ["kms:Decrypt", "kms:GenerateDataKey"]
    resources = [aws_kms_key.main.arn]
  }
}

resource "aws_lambda_function" "api" {
  #checkov:skip=CKV_AWS_117:no VPC resources are used; a VPC would need NAT or S3/DynamoDB/KMS/Logs endpoints for nothing
  #checkov:skip=CKV_AWS_116:invoked synchronously by API Gateway only; the caller gets the error, there is nothing to dead-letter
  #checkov:skip=CKV_AWS_272:code signing needs an AWS Signer profile outside this stack; the zips are built reproducibly by tools/package.py
  #checkov:skip=CKV_AWS_115:the stage's throttling (settings api.throttle_*) bounds the load
  count         = local.api_enabled ? 1 : 0
  function_name = local.api_function_name
  description   = "${local.prefix}: upload API (presigned S3 URLs under the caller's prefix, job status)"
  role          = aws_iam_role.api[0].arn
  runtime       = local.runtime
  architectures = [var.architecture]
  handler       = "handler.handler"
  layers        = [aws_lambda_layer_version.vsr.arn]

  filename         = local.api_zip
  source_code_hash = filebase64sha256(local.api_zip)

  timeout     = local.api.function.timeout_s
  memory_size = local.api.function.memory_mb

  kms_key_arn = aws_kms_key.main.arn
  environment {
    # the pipeline's contract (the buckets and the table) plus the key a presigned PUT names
    variables = merge(local.function_env, { VSR_KMS_KEY_ARN = aws_kms_key.main.arn })
  }

  logging_config {
    log_format            = "JSON"
    log_group             = aws_cloudwatch_log_group.api_function[0].name
    application_log_level = var.log_level
    system_log_level      = "INFO"
  }

  tracing_config {
    mode = "PassThrough"
  }

  depends_on = [aws_iam_role_policy.api, aws_cloudwatch_log_group.api_function]
}

# --- the HTTP API -----------------------------------------------------------------------------------------------------
resource "aws_apigatewayv2_api" "api" {
  count         = local.api_enabled ? 1 : 0
  name          = "${local.prefix}-api"
  description   = "${local.prefix}: upload videos and follow their jobs (Cognito sign-in)"
  protocol_type = "HTTP"

  cors_configuration {
    allow_origins = [var.api_page_origin]
    allow_methods = ["GET", "POST"]
    allow_headers = ["authorization", "content-type"]
    max_age       = 3600
  }
}

resource "aws_apigatewayv2_authorizer" "cognito" {
  count            = local.api_enabled ? 1 : 0
  api_id           = aws_apigatewayv2_api.api[0].id
  name             = "${local.prefix}-cognito"
  authorizer_type  = "JWT"
  identity_sources = ["$request.header.Authorization"]

  jwt_configuration {
    audience = [aws_cognito_user_pool_client.api[0].id]
    issuer   = "https://${aws_cognito_user_pool.api[0].endpoint}"
  }
}

resource "aws_apigatewayv2_integration" "api" {
  count                  = local.api_enabled ? 1 : 0
  api_id                 = aws_apigatewayv2_api.api[0].id
  integration_type       = "AWS_PROXY"
  integration_uri        = aws_lambda_function.api[0].invoke_arn
  payload_format_version = "2.0"
  timeout_milliseconds   = local.api.function.timeout_s * 1000
}

resource "aws_apigatewayv2_route" "api" {
  for_each           = local.api_enabled ? local.api_routes : toset([])
  api_id             = aws_apigatewayv2_api.api[0].id
  route_key          = each.key
  authorization_type = "JWT"
  authorizer_id      = aws_apigatewayv2_authorizer.cognito[0].id
  target             = "integrations/${aws_apigatewayv2_integration.api[0].id}"
}

resource "aws_cloudwatch_log_group" "api_access" {
  #checkov:skip=CKV_AWS_338:retention is settings.json observability.log_retention_days (cost control); raise it there or with var.log_retention_days
  count             = local.api_enabled ? 1 : 0
  name              = "/aws/apigateway/${local.prefix}-api-access"
  retention_in_days = local.log_retention_days
  kms_key_id        = aws_kms_key.main.arn
}

resource "aws_apigatewayv2_stage" "api" {
  count       = local.api_enabled ? 1 : 0
  api_id      = aws_apigatewayv2_api.api[0].id
  name        = "$default"
  auto_deploy = true

  access_log_settings {
    destination_arn = aws_cloudwatch_log_group.api_access[0].arn
    format = jsonencode({
      requestId = "$context.requestId"
      time      = "$context.requestTime"
      ip        = "$context.identity.sourceIp"
      sub       = "$context.authorizer.claims.sub"
      route     = "$context.routeKey"
      status    = "$context.status"
      latencyMs = "$context.responseLatency"
      error     = "$context.error.message"
      authError = "$context.authorizer.error"
    })
  }

  default_route_settings {
    throttling_rate_limit  = local.api.throttle_rate_per_s
    throttling_burst_limit = local.api.throttle_burst
  }
}

resource "aws_lambda_permission" "api" {
  count         = local.api_enabled ? 1 : 0
  statement_id  = "AllowUploadApi"
  action        = "lambda:InvokeFunction"
  function_name = aws_lambda_function.api[0].function_name
  principal     = "apigateway.amazonaws.com"
  source_arn    = "${aws_apigatewayv2_api.api[0].execution_arn}/*/*"
}
