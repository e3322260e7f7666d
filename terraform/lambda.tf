# The shared layer (vsr + its runtime dependencies, built by `make package`) and the three thin handlers.

# The layer zip is over Lambda's 50 MB direct-upload limit: it goes through the models bucket.
resource "aws_s3_object" "layer" {
  bucket      = aws_s3_bucket.this["models"].id
  key         = "lambda/layer-${var.architecture}.zip"
  source      = local.layer_zip
  source_hash = filemd5(local.layer_zip)
  kms_key_id  = aws_kms_key.main.arn

  depends_on = [aws_s3_bucket_server_side_encryption_configuration.this]
}

resource "aws_lambda_layer_version" "vsr" {
  layer_name               = "${local.prefix}-runtime-${var.architecture}"
  description              = "vsr package with PyAV, ONNX Runtime and NumPy for ${local.runtime} ${var.architecture}"
  s3_bucket                = aws_s3_object.layer.bucket
  s3_key                   = aws_s3_object.layer.key
  s3_object_version        = aws_s3_object.layer.version_id
  source_code_hash         = filebase64sha256(local.layer_zip)
  compatible_runtimes      = [local.runtime]
  compatible_architectures = [var.architecture]
}

resource "aws_lambda_function" "this" {
  #checkov:skip=CKV_AWS_117:no VPC resources are used; a VPC would need NAT or S3/SQS/DynamoDB/KMS/Logs endpoints for nothing
  #checkov:skip=CKV_AWS_116:invoked only by event source mappings, whose failures go to the queues' DLQs and the assembly failure queue, never asynchronously
  #checkov:skip=CKV_AWS_272:code signing needs an AWS Signer profile outside this stack; the zips are built reproducibly by tools/package.py
  #checkov:skip=CKV_AWS_115:concurrency is bounded per function where it matters: worker reserved concurrency (settings) and the SQS ScalingConfig
  for_each = local.function_names_set

  function_name = local.function_full_names[each.key]
  description   = local.function_descriptions[each.key]
  role          = aws_iam_role.function[each.key].arn
  runtime       = local.runtime
  architectures = [var.architecture]
  handler       = local.handler
  layers        = [aws_lambda_layer_version.vsr.arn]

  filename         = local.function_zips[each.key]
  source_code_hash = filebase64sha256(local.function_zips[each.key])

  timeout     = local.functions[each.key].timeout_s
  memory_size = local.functions[each.key].memory_mb
  ephemeral_storage {
    size = local.functions[each.key].ephemeral_storage_mb
  }
  # null (unreserved) except for the worker, whose fleet size bounds the load on the account.
  reserved_concurrent_executions = each.key == "worker" ? local.worker_reserved_concurrency : null

  kms_key_arn = aws_kms_key.main.arn
  environment {
    variables = local.function_env
  }

  logging_config {
    log_format            = "JSON"
    log_group             = aws_cloudwatch_log_group.function[each.key].name
    application_log_level = var.log_level
    system_log_level      = "INFO"
  }

  tracing_config {
    mode = "PassThrough"
  }

  depends_on = [
    aws_iam_role_policy.function,
    aws_cloudwatch_log_group.function,
  ]
}

# --- event source mappings --------------------------------------------------------------------------------

# Ingest: one S3 notification message per invocation; failures are reported per message.
resource "aws_lambda_event_source_mapping" "ingest" {
  event_source_arn        = aws_sqs_queue.ingest.arn
  function_name           = aws_lambda_function.this["ingest"].arn
  batch_size              = local.event_sources.ingest.batch_size
  function_response_types = ["ReportBatchItemFailures"]
}

# Worker: one segment per invocation; SQS never runs more pollers than the worker may run concurrently.
resource "aws_lambda_event_source_mapping" "worker" {
  event_source_arn        = aws_sqs_queue.segments.arn
  function_name           = aws_lambda_function.this["worker"].arn
  batch_size              = local.event_sources.worker.batch_size
  function_response_types = ["ReportBatchItemFailures"]

  scaling_config {
    maximum_concurrency = local.worker_max_concurrency
  }

  lifecycle {
    precondition {
      condition     = local.worker_max_concurrency <= local.worker_reserved_concurrency
      error_message = "The segment queue's maximum concurrency must not exceed the worker's reserved concurrency (throttled receives would count toward maxReceiveCount)."
    }
  }
}

# Assembly: the job table's stream, filtered (same file as the local runtime) to "remaining just reached 0".
resource "aws_lambda_event_source_mapping" "assemble" {
  event_source_arn               = aws_dynamodb_table.jobs.stream_arn
  function_name                  = aws_lambda_function.this["assemble"].arn
  starting_position              = "LATEST"
  batch_size                     = local.event_sources.assemble.batch_size
  bisect_batch_on_function_error = true
  maximum_retry_attempts         = local.assembly_max_retry_attempts
  function_response_types        = ["ReportBatchItemFailures"]

  filter_criteria {
    filter {
      pattern = local.assembly_filter_pattern
    }
  }

  destination_config {
    on_failure {
      destination_arn = aws_sqs_queue.assembly_failures.arn
    }
  }
}
