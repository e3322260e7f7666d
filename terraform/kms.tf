# One customer managed key encrypts the buckets, queues, table, logs, alarm topic and function environments.
# Services that must encrypt for us (S3 event delivery into the encrypted ingest queue, CloudWatch Logs,
# CloudWatch alarms publishing to the encrypted topic) are named in the key policy, each scoped to this account.

data "aws_iam_policy_document" "kms" {
  # The AWS default key policy statement: the account (through IAM policies) administers and uses the key.
  # Without it the key can become unmanageable; the function roles get only Decrypt/GenerateDataKey (iam.tf).
  #checkov:skip=CKV_AWS_109:key policies name their own key as "*"; this is the AWS default account-administration statement
  #checkov:skip=CKV_AWS_111:key policies name their own key as "*"; this is the AWS default account-administration statement
  #checkov:skip=CKV_AWS_356:in a key policy "*" is this key only; there is no narrower resource to name
  statement {
    sid       = "AccountAdministersKey"
    effect    = "Allow"
    actions   = ["kms:*"]
    resources = ["*"]
    principals {
      type        = "AWS"
      identifiers = ["arn:${local.partition}:iam::${local.account_id}:root"]
    }
  }

  statement {
    sid       = "S3DeliversEventsToEncryptedQueue"
    effect    = "Allow"
    actions   = ["kms:GenerateDataKey", "kms:Decrypt"]
    resources = ["*"]
    principals {
      type        = "Service"
      identifiers = ["s3.amazonaws.com"]
    }
    condition {
      test     = "StringEquals"
      variable = "aws:SourceAccount"
      values   = [local.account_id]
    }
  }

  statement {
    sid       = "CloudWatchAlarmsPublishToEncryptedTopic"
    effect    = "Allow"
    actions   = ["kms:GenerateDataKey", "kms:Decrypt"]
    resources = ["*"]
    principals {
      type        = "Service"
      identifiers = ["cloudwatch.amazonaws.com"]
    }
    condition {
      test     = "StringEquals"
      variable = "aws:SourceAccount"
      values   = [local.account_id]
    }
  }

  statement {
    sid       = "EventBridgeDeliversToEncryptedTopicAndQueue"
    effect    = "Allow"
    actions   = ["kms:GenerateDataKey", "kms:Decrypt"]
    resources = ["*"]
    principals {
      type        = "Service"
      identifiers = ["events.amazonaws.com"]
    }
    condition {
      test     = "StringEquals"
      variable = "aws:SourceAccount"
      values   = [local.account_id]
    }
  }

  statement {
    sid    = "CloudWatchLogsEncryptsFunctionLogs"
    effect = "Allow"
    actions = [
      "kms:Encrypt",
      "kms:Decrypt",
      "kms:ReEncryptFrom",
      "kms:ReEncryptTo",
      "kms:GenerateDataKey",
      "kms:GenerateDataKeyWithoutPlaintext",
      "kms:DescribeKey",
    ]
    resources = ["*"]
    principals {
      type        = "Service"
      identifiers = ["logs.${local.region}.amazonaws.com"]
    }
    condition {
      test     = "ArnLike"
      variable = "kms:EncryptionContext:aws:logs:arn"
      values = [
        "arn:${local.partition}:logs:${local.region}:${local.account_id}:log-group:/aws/lambda/${local.prefix}-*",
        "arn:${local.partition}:logs:${local.region}:${local.account_id}:log-group:${local.gpu_log_group}",
        # the upload API's access log (api.tf)
        "arn:${local.partition}:logs:${local.region}:${local.account_id}:log-group:/aws/apigateway/${local.prefix}-*",
      ]
    }
  }
}

resource "aws_kms_key" "main" {
  description             = "${local.prefix}: video super-resolution pipeline data (S3, SQS, DynamoDB, logs, SNS)"
  enable_key_rotation     = true
  deletion_window_in_days = var.kms_deletion_window_days
  policy                  = data.aws_iam_policy_document.kms.json
}

resource "aws_kms_alias" "main" {
  name          = "alias/${local.prefix}"
  target_key_id = aws_kms_key.main.key_id
}
