# ingest queue <- input bucket events; segment queue <- ingest; each with its own dead-letter queue.
# Visibility timeouts are the settings' factor x the consuming function's timeout (AWS requires >= 6x).

resource "aws_sqs_queue" "ingest_dlq" {
  name                      = local.names.ingest_dlq
  message_retention_seconds = local.message_retention_s
  kms_master_key_id         = aws_kms_key.main.arn
}

resource "aws_sqs_queue" "ingest" {
  name                       = local.names.ingest_queue
  visibility_timeout_seconds = local.ingest_visibility_s
  message_retention_seconds  = local.message_retention_s
  kms_master_key_id          = aws_kms_key.main.arn

  redrive_policy = jsonencode({
    deadLetterTargetArn = aws_sqs_queue.ingest_dlq.arn
    maxReceiveCount     = local.settings.queues.ingest_max_receive_count
  })
}

resource "aws_sqs_queue_redrive_allow_policy" "ingest_dlq" {
  queue_url = aws_sqs_queue.ingest_dlq.id
  redrive_allow_policy = jsonencode({
    redrivePermission = "byQueue"
    sourceQueueArns   = [aws_sqs_queue.ingest.arn]
  })
}

resource "aws_sqs_queue" "segments_dlq" {
  name                      = local.names.segment_dlq
  message_retention_seconds = local.message_retention_s
  kms_master_key_id         = aws_kms_key.main.arn
}

resource "aws_sqs_queue" "segments" {
  name                       = local.names.segment_queue
  visibility_timeout_seconds = local.segment_visibility_s
  message_retention_seconds  = local.message_retention_s
  kms_master_key_id          = aws_kms_key.main.arn

  redrive_policy = jsonencode({
    deadLetterTargetArn = aws_sqs_queue.segments_dlq.arn
    maxReceiveCount     = local.settings.queues.segment_max_receive_count
  })
}

resource "aws_sqs_queue_redrive_allow_policy" "segments_dlq" {
  queue_url = aws_sqs_queue.segments_dlq.id
  redrive_allow_policy = jsonencode({
    redrivePermission = "byQueue"
    sourceQueueArns   = [aws_sqs_queue.segments.arn]
  })
}

# Stream records whose assembly failed after every retry land here (the stream keeps them only 24 h).
resource "aws_sqs_queue" "assembly_failures" {
  name                      = local.names.assembly_failures
  message_retention_seconds = local.message_retention_s
  kms_master_key_id         = aws_kms_key.main.arn
}

# Only the input bucket of this account may send to the ingest queue.
data "aws_iam_policy_document" "ingest_queue" {
  statement {
    sid       = "InputBucketEventsOnly"
    effect    = "Allow"
    actions   = ["sqs:SendMessage"]
    resources = [aws_sqs_queue.ingest.arn]
    principals {
      type        = "Service"
      identifiers = ["s3.amazonaws.com"]
    }
    condition {
      test     = "ArnEquals"
      variable = "aws:SourceArn"
      values   = [aws_s3_bucket.this["input"].arn]
    }
    condition {
      test     = "StringEquals"
      variable = "aws:SourceAccount"
      values   = [local.account_id]
    }
  }
}

resource "aws_sqs_queue_policy" "ingest" {
  queue_url = aws_sqs_queue.ingest.id
  policy    = data.aws_iam_policy_document.ingest_queue.json
}

# The GPU tier's segment queue (only with the fleet): the same segment messages, consumed by `vsr worker` tasks
# that keep a segment invisible with a heartbeat, so its visibility timeout is a setting of its own (gpu.*).
resource "aws_sqs_queue" "segments_gpu_dlq" {
  count                     = local.gpu_count
  name                      = local.names.gpu_segment_dlq
  message_retention_seconds = local.message_retention_s
  kms_master_key_id         = aws_kms_key.main.arn
}

resource "aws_sqs_queue" "segments_gpu" {
  count                      = local.gpu_count
  name                       = local.names.gpu_segment_queue
  visibility_timeout_seconds = local.gpu_visibility_s
  message_retention_seconds  = local.message_retention_s
  receive_wait_time_seconds  = local.gpu.poll_wait_s
  kms_master_key_id          = aws_kms_key.main.arn

  redrive_policy = jsonencode({
    deadLetterTargetArn = aws_sqs_queue.segments_gpu_dlq[0].arn
    maxReceiveCount     = local.gpu.max_receive_count
  })
}

resource "aws_sqs_queue_redrive_allow_policy" "segments_gpu_dlq" {
  count     = local.gpu_count
  queue_url = aws_sqs_queue.segments_gpu_dlq[0].id
  redrive_allow_policy = jsonencode({
    redrivePermission = "byQueue"
    sourceQueueArns   = [aws_sqs_queue.segments_gpu[0].arn]
  })
}
