# Job events (vsr.pipeline.jobs.notify): every job state change is a "VSR Job State Change" event from source
# `vsr` on the default bus. Opt-out with events_enabled = false (the functions then get an empty VSR_EVENT_BUS and
# emit nothing). Optional consumers: an e-mail on COMPLETE and FAILED (an encrypted SNS topic with a readable
# message from an input transformer), and a webhook (an API destination whose API key EventBridge keeps in Secrets
# Manager, with retries and a dead-letter queue). The detail's schema: shared/vsr/config/job_event.schema.json.

locals {
  events_enabled  = var.events_enabled
  event_bus_name  = "default"
  event_bus_arn   = "arn:${local.partition}:events:${local.region}:${local.account_id}:event-bus/default"
  event_bus_env   = local.events_enabled ? local.event_bus_name : ""
  notify_email    = local.events_enabled && var.notify_email != null
  notify_webhook  = local.events_enabled && var.webhook_url != null
  job_event_rules = { source = ["vsr"], "detail-type" = ["VSR Job State Change"] }
}

# --- e-mail on COMPLETE and FAILED --------------------------------------------------------------------------
resource "aws_sns_topic" "job_notifications" {
  count             = local.notify_email ? 1 : 0
  name              = "${local.prefix}-job-notifications"
  kms_master_key_id = aws_kms_key.main.arn
}

resource "aws_sns_topic_subscription" "job_email" {
  count     = local.notify_email ? 1 : 0
  topic_arn = aws_sns_topic.job_notifications[0].arn
  protocol  = "email"
  endpoint  = var.notify_email
}

data "aws_iam_policy_document" "job_notifications" {
  count = local.notify_email ? 1 : 0
  statement {
    sid       = "JobEventRulePublishes"
    actions   = ["sns:Publish"]
    resources = [aws_sns_topic.job_notifications[0].arn]
    principals {
      type        = "Service"
      identifiers = ["events.amazonaws.com"]
    }
    condition {
      test     = "ArnEquals"
      variable = "aws:SourceArn"
      values   = [aws_cloudwatch_event_rule.job_finished[0].arn]
    }
  }
}

resource "aws_sns_topic_policy" "job_notifications" {
  count  = local.notify_email ? 1 : 0
  arn    = aws_sns_topic.job_notifications[0].arn
  policy = data.aws_iam_policy_document.job_notifications[0].json
}

resource "aws_cloudwatch_event_rule" "job_finished" {
  count          = local.notify_email ? 1 : 0
  name           = "${local.prefix}-job-finished"
  description    = "${local.prefix}: jobs that completed or failed, to the notification e-mail"
  event_bus_name = local.event_bus_name
  event_pattern  = jsonencode(merge(local.job_event_rules, { detail = { state = ["COMPLETE", "FAILED"] } }))
}

resource "aws_cloudwatch_event_target" "job_email" {
  count          = local.notify_email ? 1 : 0
  rule           = aws_cloudwatch_event_rule.job_finished[0].name
  event_bus_name = local.event_bus_name
  target_id      = "job-email"
  arn            = aws_sns_topic.job_notifications[0].arn

  input_transformer {
    input_paths = {
      key    = "$.detail.input.key"
      state  = "$.detail.state"
      reason = "$.detail.error.reason"
      bucket = "$.detail.output.bucket"
      output = "$.detail.output.key"
      wall   = "$.detail.plan.actual_wall_s"
      cost   = "$.detail.plan.predicted_cost_usd"
      job    = "$.detail.job_id"
    }
    input_template = "\"vsr job <job>: <key> is <state>. Output: s3://<bucket>/<output> (wall time <wall> s, predicted cost $<cost>). Reason if it failed: <reason>\""
  }
}

# --- webhook ------------------------------------------------------------------------------------------------
resource "aws_cloudwatch_event_connection" "webhook" {
  count              = local.notify_webhook ? 1 : 0
  name               = "${local.prefix}-webhook"
  description        = "${local.prefix}: the job webhook's API key (EventBridge stores it in Secrets Manager)"
  authorization_type = "API_KEY"
  auth_parameters {
    api_key {
      key   = var.webhook_api_key_header
      value = var.webhook_api_key
    }
  }

  lifecycle {
    precondition {
      condition     = var.webhook_api_key != null
      error_message = "webhook_url needs webhook_api_key: the endpoint must be able to tell EventBridge's calls from anyone else's."
    }
  }
}

resource "aws_cloudwatch_event_api_destination" "webhook" {
  count                            = local.notify_webhook ? 1 : 0
  name                             = "${local.prefix}-webhook"
  description                      = "${local.prefix}: every job event, POSTed as JSON"
  invocation_endpoint              = var.webhook_url
  http_method                      = "POST"
  invocation_rate_limit_per_second = 10
  connection_arn                   = aws_cloudwatch_event_connection.webhook[0].arn
}

resource "aws_cloudwatch_event_rule" "job_events" {
  count          = local.notify_webhook ? 1 : 0
  name           = "${local.prefix}-job-events"
  description    = "${local.prefix}: every job state change, to the webhook"
  event_bus_name = local.event_bus_name
  event_pattern  = jsonencode(local.job_event_rules)
}

resource "aws_sqs_queue" "webhook_dlq" {
  count                     = local.notify_webhook ? 1 : 0
  name                      = "${local.prefix}-webhook-dlq"
  message_retention_seconds = local.message_retention_s
  kms_master_key_id         = aws_kms_key.main.arn
}

data "aws_iam_policy_document" "webhook_dlq" {
  count = local.notify_webhook ? 1 : 0
  statement {
    sid       = "UndeliveredWebhookEvents"
    actions   = ["sqs:SendMessage"]
    resources = [aws_sqs_queue.webhook_dlq[0].arn]
    principals {
      type        = "Service"
      identifiers = ["events.amazonaws.com"]
    }
    condition {
      test     = "ArnEquals"
      variable = "aws:SourceArn"
      values   = [aws_cloudwatch_event_rule.job_events[0].arn]
    }
  }
}

resource "aws_sqs_queue_policy" "webhook_dlq" {
  count     = local.notify_webhook ? 1 : 0
  queue_url = aws_sqs_queue.webhook_dlq[0].id
  policy    = data.aws_iam_policy_document.webhook_dlq[0].json
}

data "aws_iam_policy_document" "assume_events" {
  statement {
    actions = ["sts:AssumeRole"]
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
}

resource "aws_iam_role" "webhook" {
  count              = local.notify_webhook ? 1 : 0
  name               = "${local.prefix}-webhook-invoke"
  assume_role_policy = data.aws_iam_policy_document.assume_events.json
}

data "aws_iam_policy_document" "webhook" {
  count = local.notify_webhook ? 1 : 0
  statement {
    sid       = "InvokeTheWebhookOnly"
    actions   = ["events:InvokeApiDestination"]
    resources = [aws_cloudwatch_event_api_destination.webhook[0].arn]
  }
}

resource "aws_iam_role_policy" "webhook" {
  count  = local.notify_webhook ? 1 : 0
  name   = "${local.prefix}-webhook-invoke"
  role   = aws_iam_role.webhook[0].id
  policy = data.aws_iam_policy_document.webhook[0].json
}

resource "aws_cloudwatch_event_target" "webhook" {
  count          = local.notify_webhook ? 1 : 0
  rule           = aws_cloudwatch_event_rule.job_events[0].name
  event_bus_name = local.event_bus_name
  target_id      = "job-webhook"
  arn            = aws_cloudwatch_event_api_destination.webhook[0].arn
  role_arn       = aws_iam_role.webhook[0].arn

  retry_policy {
    maximum_event_age_in_seconds = 86400
    maximum_retry_attempts       = 185
  }
  dead_letter_config {
    arn = aws_sqs_queue.webhook_dlq[0].arn
  }
}

# --- an event that could not be sent: the functions log it with an embedded metric (EMF) -------------------------
resource "aws_cloudwatch_metric_alarm" "job_events_undelivered" {
  count               = local.events_enabled ? 1 : 0
  alarm_name          = "${local.prefix}-job-events-undelivered"
  alarm_description   = "A job state change could not be sent to EventBridge after retries (the job itself is unaffected; search the logs for job_event.undelivered)."
  namespace           = "vsr"
  metric_name         = "JobEventsUndelivered"
  statistic           = "Sum"
  period              = 300
  evaluation_periods  = 1
  comparison_operator = "GreaterThanThreshold"
  threshold           = 0
  treat_missing_data  = "notBreaching"
  alarm_actions       = local.alarm_actions
  ok_actions          = local.alarm_actions
}
