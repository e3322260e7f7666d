# One role per function, least privilege: every action is one the function's code (or its event source
# mapping) performs, on the exact bucket prefixes, queues, table and stream it touches.
# tests/deploy/test_iam.py checks each action against the boto3 calls in shared/vsr.

data "aws_iam_policy_document" "assume_lambda" {
  statement {
    effect  = "Allow"
    actions = ["sts:AssumeRole"]
    principals {
      type        = "Service"
      identifiers = ["lambda.amazonaws.com"]
    }
    condition {
      test     = "StringEquals"
      variable = "aws:SourceAccount"
      values   = [local.account_id]
    }
  }
}

resource "aws_iam_role" "function" {
  for_each           = local.function_names_set
  name               = "${local.function_full_names[each.key]}-role"
  assume_role_policy = data.aws_iam_policy_document.assume_lambda.json
}

resource "aws_iam_role_policy" "function" {
  for_each = local.function_names_set
  name     = "${local.function_full_names[each.key]}-least-privilege"
  role     = aws_iam_role.function[each.key].id
  policy   = local.function_policies[each.key]
}

locals {
  function_policies = {
    ingest   = data.aws_iam_policy_document.ingest.json
    worker   = data.aws_iam_policy_document.worker.json
    assemble = data.aws_iam_policy_document.assemble.json
  }
  bucket_arns  = { for key, bucket in aws_s3_bucket.this : key => bucket.arn }
  work_objects = "${local.bucket_arns.work}/${local.work_prefix}*"
}

# s3:ListBucket is granted on each bucket a function reads: without it S3 answers a missing key with 403
# AccessDenied instead of 404, and the code classifies 404 as a permanent "object missing" error (vsr.aws.s3io,
# vsr.pipeline.artifacts) where a 403 would be retried into the DLQ. No s3:prefix condition: a GetObject
# request carries no prefix, so a conditioned grant would not turn its 403 into a 404.

# --- ingest: ingest queue -> probe the upload in place -> probe/plan in the work bucket -> job -> messages ----
data "aws_iam_policy_document" "ingest" {
  statement {
    sid       = "LogsOwnGroup"
    actions   = ["logs:CreateLogStream", "logs:PutLogEvents"]
    resources = ["${aws_cloudwatch_log_group.function["ingest"].arn}:*"]
  }
  statement {
    sid       = "ConsumeIngestQueue"
    actions   = ["sqs:ReceiveMessage", "sqs:DeleteMessage", "sqs:GetQueueAttributes"]
    resources = [aws_sqs_queue.ingest.arn]
  }
  statement {
    sid       = "ProbeUploadsInPlace"
    actions   = ["s3:GetObject", "s3:GetObjectVersion"]
    resources = ["${local.bucket_arns.input}/*"]
  }
  statement {
    sid       = "MissingUploadIs404"
    actions   = ["s3:ListBucket"]
    resources = [local.bucket_arns.input]
  }
  statement {
    sid       = "WriteProbeAndPlan"
    actions   = ["s3:PutObject", "s3:GetObject"]
    resources = [local.work_objects]
  }
  statement {
    sid       = "MissingPlanIs404"
    actions   = ["s3:ListBucket"]
    resources = [local.bucket_arns.work]
  }
  statement {
    sid       = "WriteJobs"
    actions   = ["dynamodb:GetItem", "dynamodb:PutItem", "dynamodb:UpdateItem"]
    resources = [aws_dynamodb_table.jobs.arn]
  }
  statement {
    sid       = "EnqueueSegments"
    actions   = ["sqs:SendMessage"]
    resources = [aws_sqs_queue.segments.arn]
  }
  # a job the planner gives the GPU tier is enqueued on that tier's queue (only where the fleet exists)
  dynamic "statement" {
    for_each = aws_sqs_queue.segments_gpu
    content {
      sid       = "EnqueueGpuSegments"
      actions   = ["sqs:SendMessage"]
      resources = [statement.value.arn]
    }
  }
  statement {
    sid       = "PaceRetriesByBackoff"
    actions   = ["sqs:ChangeMessageVisibility"]
    resources = [aws_sqs_queue.ingest.arn]
  }
  statement {
    sid       = "UseProjectKey"
    actions   = ["kms:Decrypt", "kms:GenerateDataKey"]
    resources = [aws_kms_key.main.arn]
  }
  dynamic "statement" {
    for_each = local.events_enabled ? [1] : []
    content {
      sid       = "EmitJobEvents"
      actions   = ["events:PutEvents"]
      resources = [local.event_bus_arn]
    }
  }
}

# --- worker: segment queue -> ranged reads of the upload + probe + model -> segment in the work bucket -> count
data "aws_iam_policy_document" "worker" {
  statement {
    sid       = "LogsOwnGroup"
    actions   = ["logs:CreateLogStream", "logs:PutLogEvents"]
    resources = ["${aws_cloudwatch_log_group.function["worker"].arn}:*"]
  }
  statement {
    sid       = "ConsumeSegmentQueue"
    actions   = ["sqs:ReceiveMessage", "sqs:DeleteMessage", "sqs:GetQueueAttributes"]
    resources = [aws_sqs_queue.segments.arn]
  }
  statement {
    sid       = "ExtendVisibilityOfLongSegments"
    actions   = ["sqs:ChangeMessageVisibility"]
    resources = [aws_sqs_queue.segments.arn]
  }
  statement {
    sid       = "ReadUploadWindow"
    actions   = ["s3:GetObject", "s3:GetObjectVersion"]
    resources = ["${local.bucket_arns.input}/*"]
  }
  statement {
    sid       = "MissingUploadIs404"
    actions   = ["s3:ListBucket"]
    resources = [local.bucket_arns.input]
  }
  statement {
    sid       = "ReadModel"
    actions   = ["s3:GetObject"]
    resources = ["${local.bucket_arns.models}/models/*"]
  }
  statement {
    sid       = "ReadProbeWriteSegments"
    actions   = ["s3:GetObject", "s3:PutObject", "s3:AbortMultipartUpload"]
    resources = [local.work_objects]
  }
  statement {
    sid       = "MissingProbeIs404"
    actions   = ["s3:ListBucket"]
    resources = [local.bucket_arns.work]
  }
  statement {
    # vsr.pipeline.window: a finished segment sends its job's next one (the per-job segment window)
    sid       = "ReleaseNextSegment"
    actions   = ["sqs:SendMessage"]
    resources = [aws_sqs_queue.segments.arn]
  }
  statement {
    sid       = "CountSegments"
    actions   = ["dynamodb:GetItem", "dynamodb:UpdateItem"]
    resources = [aws_dynamodb_table.jobs.arn]
  }
  statement {
    sid       = "UseProjectKey"
    actions   = ["kms:Decrypt", "kms:GenerateDataKey"]
    resources = [aws_kms_key.main.arn]
  }
  dynamic "statement" {
    for_each = local.events_enabled ? [1] : []
    content {
      sid       = "EmitJobEvents"
      actions   = ["events:PutEvents"]
      resources = [local.event_bus_arn]
    }
  }
}

# --- assemble: table stream -> join segments + source audio (or copy fMP4 segments in S3) -> output bucket ---
data "aws_iam_policy_document" "assemble" {
  statement {
    sid       = "LogsOwnGroup"
    actions   = ["logs:CreateLogStream", "logs:PutLogEvents"]
    resources = ["${aws_cloudwatch_log_group.function["assemble"].arn}:*"]
  }
  statement {
    sid       = "ReadJobStream"
    actions   = ["dynamodb:DescribeStream", "dynamodb:GetRecords", "dynamodb:GetShardIterator"]
    resources = [aws_dynamodb_table.jobs.stream_arn]
  }
  statement {
    sid       = "ListJobStreams"
    actions   = ["dynamodb:ListStreams"]
    resources = ["${aws_dynamodb_table.jobs.arn}/stream/*"]
  }
  statement {
    sid       = "ReportFailedRecords"
    actions   = ["sqs:SendMessage"]
    resources = [aws_sqs_queue.assembly_failures.arn]
  }
  statement {
    sid       = "ReadUploadAudio"
    actions   = ["s3:GetObject", "s3:GetObjectVersion"]
    resources = ["${local.bucket_arns.input}/*"]
  }
  statement {
    sid       = "MissingUploadIs404"
    actions   = ["s3:ListBucket"]
    resources = [local.bucket_arns.input]
  }
  statement {
    sid       = "ReadAndDeleteSegments"
    actions   = ["s3:GetObject", "s3:DeleteObject"]
    resources = [local.work_objects]
  }
  statement {
    sid       = "MissingSegmentIs404"
    actions   = ["s3:ListBucket"]
    resources = [local.bucket_arns.work]
  }
  statement {
    sid       = "WriteOutputAndReport"
    actions   = ["s3:PutObject", "s3:AbortMultipartUpload"]
    resources = ["${local.bucket_arns.output}/*"]
  }
  statement {
    # the fragmented join (vsr.pipeline.multipart) aborts the open upload a crashed attempt left on its key
    sid       = "FindAbandonedOutputUploads"
    actions   = ["s3:ListBucketMultipartUploads"]
    resources = [local.bucket_arns.output]
  }
  statement {
    sid       = "FinishJobs"
    actions   = ["dynamodb:GetItem", "dynamodb:UpdateItem"]
    resources = [aws_dynamodb_table.jobs.arn]
  }
  statement {
    sid       = "UseProjectKey"
    actions   = ["kms:Decrypt", "kms:GenerateDataKey"]
    resources = [aws_kms_key.main.arn]
  }
  dynamic "statement" {
    for_each = local.events_enabled ? [1] : []
    content {
      sid       = "EmitJobEvents"
      actions   = ["events:PutEvents"]
      resources = [local.event_bus_arn]
    }
  }
}
