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
  bucket_arns = { for key, bucket in aws_s3_bucket.this : key => bucket.arn }
}

# --- ingest: ingest queue -> probe the upload in place -> job item -> segment messages ----------------------
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
    sid       = "WriteJobs"
    actions   = ["dynamodb:GetItem", "dynamodb:PutItem", "dynamodb:UpdateItem"]
    resources = [aws_dynamodb_table.jobs.arn]
  }
  statement {
    sid       = "EnqueueSegments"
    actions   = ["sqs:SendMessage"]
    resources = [aws_sqs_queue.segments.arn]
  }
  statement {
    sid       = "UseProjectKey"
    actions   = ["kms:Decrypt", "kms:GenerateDataKey"]
    resources = [aws_kms_key.main.arn]
  }
}

# --- worker: segment queue -> ranged reads of the upload + the model -> segment in the work bucket -> count --
data "aws_iam_policy_document" "worker" {
  statement {
    sid       = "LogsOwnGroup"
    actions   = ["logs:CreateLogStream", "logs:PutLogEvents"]
    resources = ["${aws_cloudwatch_log_group.function["worker"].arn}:*"]
  }
  statement {
    sid       = "ConsumeSegmentQueue"
    actions   = ["sqs:ReceiveMessage", "sqs:DeleteMessage", "sqs:GetQueueAttributes", "sqs:ChangeMessageVisibility"]
    resources = [aws_sqs_queue.segments.arn]
  }
  statement {
    sid       = "ReadUploadWindow"
    actions   = ["s3:GetObject", "s3:GetObjectVersion"]
    resources = ["${local.bucket_arns.input}/*"]
  }
  statement {
    sid       = "ReadModel"
    actions   = ["s3:GetObject"]
    resources = ["${local.bucket_arns.models}/models/*"]
  }
  statement {
    sid       = "WriteSegments"
    actions   = ["s3:PutObject"]
    resources = ["${local.bucket_arns.work}/${local.work_prefix}*"]
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
}

# --- assemble: table stream -> join segments + source audio -> output bucket, delete segments -------------
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
    sid       = "ReadAndDeleteSegments"
    actions   = ["s3:GetObject", "s3:DeleteObject"]
    resources = ["${local.bucket_arns.work}/${local.work_prefix}*"]
  }
  statement {
    sid       = "ListJobSegments"
    actions   = ["s3:ListBucket"]
    resources = [local.bucket_arns.work]
    condition {
      test     = "StringLike"
      variable = "s3:prefix"
      values   = ["${local.work_prefix}*"]
    }
  }
  statement {
    sid       = "WriteOutputs"
    actions   = ["s3:PutObject"]
    resources = ["${local.bucket_arns.output}/*"]
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
}
