# The GPU tier's roles, least privilege like iam.tf:
# - the task role: what `vsr worker` does, which is the worker Lambda's process_segment path on the GPU queue
#   (tests/deploy/test_iam.py holds it to the worker's justified actions);
# - the execution role: the ECS agent pulls the image from this repository and writes the task's log stream;
# - the instance role: the ECS agent on the instance registers it with the cluster (AWS's managed policy).

data "aws_iam_policy_document" "assume_ecs_tasks" {
  statement {
    effect  = "Allow"
    actions = ["sts:AssumeRole"]
    principals {
      type        = "Service"
      identifiers = ["ecs-tasks.amazonaws.com"]
    }
    condition {
      test     = "StringEquals"
      variable = "aws:SourceAccount"
      values   = [local.account_id]
    }
  }
}

data "aws_iam_policy_document" "assume_ec2" {
  statement {
    effect  = "Allow"
    actions = ["sts:AssumeRole"]
    principals {
      type        = "Service"
      identifiers = ["ec2.amazonaws.com"]
    }
  }
}

# --- task role: the GPU queue -> ranged reads of the upload + probe + model -> segment in the work bucket -> count
resource "aws_iam_role" "gpu_task" {
  count              = local.gpu_count
  name               = "${local.names.gpu_service}-task-role"
  assume_role_policy = data.aws_iam_policy_document.assume_ecs_tasks.json
}

resource "aws_iam_role_policy" "gpu_task" {
  count  = local.gpu_count
  name   = "${local.names.gpu_service}-least-privilege"
  role   = aws_iam_role.gpu_task[0].id
  policy = data.aws_iam_policy_document.gpu_task[0].json
}

data "aws_iam_policy_document" "gpu_task" {
  count = local.gpu_count
  statement {
    sid       = "ConsumeGpuSegmentQueue"
    actions   = ["sqs:ReceiveMessage", "sqs:DeleteMessage", "sqs:GetQueueAttributes"]
    resources = [aws_sqs_queue.segments_gpu[0].arn]
  }
  statement {
    # the heartbeat while a segment runs, and releasing it (visibility 0) on a drain
    sid       = "ExtendVisibilityOfLongSegments"
    actions   = ["sqs:ChangeMessageVisibility"]
    resources = [aws_sqs_queue.segments_gpu[0].arn]
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
    # vsr.pipeline.window: a finished segment sends its job's next one, to the queue of the job's tier
    sid       = "ReleaseNextSegment"
    actions   = ["sqs:SendMessage"]
    resources = [aws_sqs_queue.segments_gpu[0].arn]
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

# --- execution role: pull this repository's image, write this log group ---------------------------------------
resource "aws_iam_role" "gpu_execution" {
  count              = local.gpu_count
  name               = "${local.names.gpu_service}-execution-role"
  assume_role_policy = data.aws_iam_policy_document.assume_ecs_tasks.json
}

resource "aws_iam_role_policy" "gpu_execution" {
  count  = local.gpu_count
  name   = "${local.names.gpu_service}-pull-and-log"
  role   = aws_iam_role.gpu_execution[0].id
  policy = data.aws_iam_policy_document.gpu_execution[0].json
}

data "aws_iam_policy_document" "gpu_execution" {
  count = local.gpu_count
  statement {
    # GetAuthorizationToken has no resource: the token is per registry, the pulls below are per repository
    sid       = "RegistryLogin"
    actions   = ["ecr:GetAuthorizationToken"]
    resources = ["*"]
  }
  statement {
    sid       = "PullWorkerImage"
    actions   = ["ecr:BatchCheckLayerAvailability", "ecr:GetDownloadUrlForLayer", "ecr:BatchGetImage"]
    resources = [aws_ecr_repository.gpu_worker[0].arn]
  }
  statement {
    sid       = "LogsOwnGroup"
    actions   = ["logs:CreateLogStream", "logs:PutLogEvents"]
    resources = ["${aws_cloudwatch_log_group.gpu_worker[0].arn}:*"]
  }
}

# --- instance role: the ECS agent registers the instance and polls for its tasks ---------------------------------
resource "aws_iam_role" "gpu_instance" {
  count              = local.gpu_count
  name               = "${local.names.gpu_cluster}-instance-role"
  assume_role_policy = data.aws_iam_policy_document.assume_ec2.json
}

resource "aws_iam_role_policy_attachment" "gpu_instance" {
  count      = local.gpu_count
  role       = aws_iam_role.gpu_instance[0].name
  policy_arn = "arn:${local.partition}:iam::aws:policy/service-role/AmazonEC2ContainerServiceforEC2Role"
}

resource "aws_iam_instance_profile" "gpu_instance" {
  count = local.gpu_count
  name  = "${local.names.gpu_cluster}-instance"
  role  = aws_iam_role.gpu_instance[0].name
}
