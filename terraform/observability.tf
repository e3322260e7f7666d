# Logs (JSON, retention from settings), alarms to one SNS topic, and a dashboard of the whole pipeline.

resource "aws_cloudwatch_log_group" "function" {
  #checkov:skip=CKV_AWS_338:retention is settings.json observability.log_retention_days (cost control); raise it there or with var.log_retention_days
  for_each          = local.function_names_set
  name              = "/aws/lambda/${local.function_full_names[each.key]}"
  retention_in_days = local.log_retention_days
  kms_key_id        = aws_kms_key.main.arn
}

resource "aws_sns_topic" "alarms" {
  name              = local.names.alarms_topic
  kms_master_key_id = aws_kms_key.main.arn
}

resource "aws_sns_topic_subscription" "alarm_email" {
  count     = var.alarm_email == null ? 0 : 1
  topic_arn = aws_sns_topic.alarms.arn
  protocol  = "email"
  endpoint  = var.alarm_email
}

locals {
  alarm_actions = [aws_sns_topic.alarms.arn]
  # the GPU tier's queues join the same alarms and dashboard rows where the fleet exists
  dead_letter_queues = merge(
    {
      ingest-dlq        = aws_sqs_queue.ingest_dlq.name
      segments-dlq      = aws_sqs_queue.segments_dlq.name
      assembly-failures = aws_sqs_queue.assembly_failures.name
    },
    local.gpu_enabled ? { segments-gpu-dlq = aws_sqs_queue.segments_gpu_dlq[0].name } : {},
  )
  work_queues = merge(
    {
      ingest   = aws_sqs_queue.ingest.name
      segments = aws_sqs_queue.segments.name
    },
    local.gpu_enabled ? { segments-gpu = aws_sqs_queue.segments_gpu[0].name } : {},
  )
  function_metric_alarms = {
    for pair in setproduct(local.function_names, ["Errors", "Throttles"]) :
    "${pair[0]}-${lower(pair[1])}" => { function = pair[0], metric = pair[1] }
  }
}

# Anything in a dead-letter queue is a job that needs a human (and `vsr redrive`).
resource "aws_cloudwatch_metric_alarm" "dlq_depth" {
  for_each            = local.dead_letter_queues
  alarm_name          = "${local.prefix}-${each.key}-not-empty"
  alarm_description   = "Messages in ${each.value}: inspect with `vsr status`, fix, then `vsr redrive`."
  namespace           = "AWS/SQS"
  metric_name         = "ApproximateNumberOfMessagesVisible"
  dimensions          = { QueueName = each.value }
  statistic           = "Maximum"
  period              = 300
  evaluation_periods  = 1
  comparison_operator = "GreaterThanThreshold"
  threshold           = 0
  treat_missing_data  = "notBreaching"
  alarm_actions       = local.alarm_actions
  ok_actions          = local.alarm_actions
}

resource "aws_cloudwatch_metric_alarm" "oldest_message" {
  for_each            = local.work_queues
  alarm_name          = "${local.prefix}-${each.key}-oldest-message-age"
  alarm_description   = "The oldest message on ${each.value} waited longer than settings observability.oldest_message_alarm_s: the pipeline is stuck or under-provisioned."
  namespace           = "AWS/SQS"
  metric_name         = "ApproximateAgeOfOldestMessage"
  dimensions          = { QueueName = each.value }
  statistic           = "Maximum"
  period              = 300
  evaluation_periods  = 1
  comparison_operator = "GreaterThanThreshold"
  threshold           = local.oldest_message_s
  treat_missing_data  = "notBreaching"
  alarm_actions       = local.alarm_actions
  ok_actions          = local.alarm_actions
}

resource "aws_cloudwatch_metric_alarm" "function" {
  for_each            = local.function_metric_alarms
  alarm_name          = "${local.prefix}-${each.key}"
  alarm_description   = "${each.value.metric} of ${local.function_full_names[each.value.function]} (see its log group)."
  namespace           = "AWS/Lambda"
  metric_name         = each.value.metric
  dimensions          = { FunctionName = aws_lambda_function.this[each.value.function].function_name }
  statistic           = "Sum"
  period              = 300
  evaluation_periods  = 1
  comparison_operator = "GreaterThanThreshold"
  threshold           = 0
  treat_missing_data  = "notBreaching"
  alarm_actions       = local.alarm_actions
  ok_actions          = local.alarm_actions
}

# --- dashboard ---------------------------------------------------------------------------------------------
locals {
  lambda_metric_rows = [
    for metric in ["Invocations", "Errors", "Throttles", "Duration", "ConcurrentExecutions"] : {
      type   = "metric"
      width  = 8
      height = 6
      properties = {
        title  = "Lambda ${metric}"
        region = local.region
        stat   = metric == "Duration" ? "Maximum" : (metric == "ConcurrentExecutions" ? "Maximum" : "Sum")
        period = 60
        view   = "timeSeries"
        metrics = [
          for name in local.function_names : ["AWS/Lambda", metric, "FunctionName", local.function_full_names[name]]
        ]
      }
    }
  ]
  sqs_metric_rows = [
    for metric in ["ApproximateNumberOfMessagesVisible", "ApproximateNumberOfMessagesNotVisible", "ApproximateAgeOfOldestMessage"] : {
      type   = "metric"
      width  = 8
      height = 6
      properties = {
        title   = "SQS ${metric}"
        region  = local.region
        stat    = "Maximum"
        period  = 60
        view    = "timeSeries"
        metrics = [for queue in concat(values(local.work_queues), values(local.dead_letter_queues)) : ["AWS/SQS", metric, "QueueName", queue]]
      }
    }
  ]
  table_widget = {
    type   = "metric"
    width  = 8
    height = 6
    properties = {
      title  = "DynamoDB jobs table"
      region = local.region
      stat   = "Sum"
      period = 60
      view   = "timeSeries"
      metrics = [
        ["AWS/DynamoDB", "ConsumedWriteCapacityUnits", "TableName", local.names.table],
        ["AWS/DynamoDB", "ConsumedReadCapacityUnits", "TableName", local.names.table],
        ["AWS/DynamoDB", "ConditionalCheckFailedRequests", "TableName", local.names.table],
      ]
    }
  }
  errors_widget = {
    type   = "log"
    width  = 16
    height = 6
    properties = {
      title  = "Recent warnings and errors (JSON logs)"
      region = local.region
      view   = "table"
      query  = "SOURCE '/aws/lambda/${local.function_full_names.ingest}' | SOURCE '/aws/lambda/${local.function_full_names.worker}' | SOURCE '/aws/lambda/${local.function_full_names.assemble}' |${local.gpu_enabled ? " SOURCE '${local.gpu_log_group}' |" : ""} fields @timestamp, @log, level, event, job_id, segment, reason | filter level in ['warning', 'error', 'critical', 'WARN', 'ERROR'] | sort @timestamp desc | limit 50"
    }
  }
}

locals {
  # the GPU fleet: tasks wanted/running/starting (Container Insights) and the instances under them
  gpu_widgets = local.gpu_enabled ? [{
    type   = "metric"
    width  = 8
    height = 6
    properties = {
      title  = "GPU worker tasks and instances"
      region = local.region
      stat   = "Maximum"
      period = 60
      view   = "timeSeries"
      metrics = concat(
        [
          for metric in ["DesiredTaskCount", "RunningTaskCount", "PendingTaskCount"] :
          ["ECS/ContainerInsights", metric, "ClusterName", local.names.gpu_cluster, "ServiceName", local.names.gpu_service]
        ],
        [["AWS/AutoScaling", "GroupInServiceInstances", "AutoScalingGroupName", aws_autoscaling_group.gpu[0].name]],
      )
    }
  }] : []
}

resource "aws_cloudwatch_dashboard" "pipeline" {
  dashboard_name = local.names.dashboard
  dashboard_body = jsonencode({
    widgets = concat(local.lambda_metric_rows, local.sqs_metric_rows, [local.table_widget, local.errors_widget], local.gpu_widgets)
  })
}
