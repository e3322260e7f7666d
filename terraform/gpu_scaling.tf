# The GPU service's desired count follows the GPU segment queue (step scaling; the capacity provider then fits
# instances to the tasks). All periods and counts are settings gpu.*:
# - scale out: every gpu.scale_out_s, the backlog (visible + in-flight segments) minus the tasks already wanted
#   is the number of tasks to add, up to gpu.max_tasks. Counting in-flight segments keeps a busy task's segment
#   in the backlog, so the deficit is the segments that no task holds yet; the service never shrinks while
#   there is work, so a busy task is not stopped to match a falling backlog;
# - scale to zero: a backlog of 0 for gpu.scale_in_idle_s sets the desired count to 0 (the explicit rule to 0).
#   Tasks drain on SIGTERM (stopTimeout gpu.stop_timeout_s) and managed scaling then stops the idle instances.

resource "aws_appautoscaling_target" "gpu_worker" {
  count              = local.gpu_count
  service_namespace  = "ecs"
  scalable_dimension = "ecs:service:DesiredCount"
  resource_id        = "service/${aws_ecs_cluster.gpu[0].name}/${aws_ecs_service.gpu_worker[0].name}"
  min_capacity       = 0
  max_capacity       = local.gpu_max_tasks
}

resource "aws_appautoscaling_policy" "gpu_scale_out" {
  count              = local.gpu_count
  name               = "${local.names.gpu_service}-scale-out"
  policy_type        = "StepScaling"
  service_namespace  = aws_appautoscaling_target.gpu_worker[0].service_namespace
  scalable_dimension = aws_appautoscaling_target.gpu_worker[0].scalable_dimension
  resource_id        = aws_appautoscaling_target.gpu_worker[0].resource_id

  step_scaling_policy_configuration {
    adjustment_type         = "ChangeInCapacity"
    cooldown                = local.gpu_scaling_period_s
    metric_aggregation_type = "Maximum"

    # the alarm's threshold is a deficit of 1: a deficit of 1 + k is k above it and adds 1 + k tasks
    dynamic "step_adjustment" {
      for_each = range(1, local.gpu_max_tasks + 1)
      content {
        metric_interval_lower_bound = step_adjustment.value - 1
        metric_interval_upper_bound = step_adjustment.value < local.gpu_max_tasks ? step_adjustment.value : null
        scaling_adjustment          = step_adjustment.value
      }
    }
  }
}

resource "aws_appautoscaling_policy" "gpu_scale_to_zero" {
  count              = local.gpu_count
  name               = "${local.names.gpu_service}-scale-to-zero"
  policy_type        = "StepScaling"
  service_namespace  = aws_appautoscaling_target.gpu_worker[0].service_namespace
  scalable_dimension = aws_appautoscaling_target.gpu_worker[0].scalable_dimension
  resource_id        = aws_appautoscaling_target.gpu_worker[0].resource_id

  step_scaling_policy_configuration {
    adjustment_type         = "ExactCapacity"
    cooldown                = local.gpu_scaling_period_s
    metric_aggregation_type = "Maximum"

    step_adjustment {
      metric_interval_upper_bound = 0
      scaling_adjustment          = 0
    }
  }
}

locals {
  # the GPU queue's backlog as metric math inputs; FILL: a queue with no datapoint has no backlog
  gpu_backlog_queries = {
    visible  = "ApproximateNumberOfMessagesVisible"
    inflight = "ApproximateNumberOfMessagesNotVisible"
  }
}

resource "aws_cloudwatch_metric_alarm" "gpu_backlog_deficit" {
  count               = local.gpu_count
  alarm_name          = "${local.names.gpu_service}-backlog-deficit"
  alarm_description   = "Segments on ${local.names.gpu_segment_queue} that no GPU task holds yet: adds that many tasks (scaling, not paging)."
  comparison_operator = "GreaterThanOrEqualToThreshold"
  threshold           = 1
  evaluation_periods  = 1
  datapoints_to_alarm = 1
  treat_missing_data  = "notBreaching"
  alarm_actions       = [aws_appautoscaling_policy.gpu_scale_out[0].arn]

  dynamic "metric_query" {
    for_each = local.gpu_backlog_queries
    content {
      id = metric_query.key
      metric {
        namespace   = "AWS/SQS"
        metric_name = metric_query.value
        dimensions  = { QueueName = aws_sqs_queue.segments_gpu[0].name }
        period      = local.gpu_scaling_period_s
        stat        = "Maximum"
      }
    }
  }
  metric_query {
    id = "desired"
    metric {
      namespace   = "ECS/ContainerInsights"
      metric_name = "DesiredTaskCount"
      dimensions  = { ClusterName = aws_ecs_cluster.gpu[0].name, ServiceName = aws_ecs_service.gpu_worker[0].name }
      period      = local.gpu_scaling_period_s
      stat        = "Maximum"
    }
  }
  metric_query {
    id          = "deficit"
    expression  = "FILL(visible, 0) + FILL(inflight, 0) - FILL(desired, 0)"
    label       = "GPU segments without a task"
    return_data = true
  }
}

resource "aws_cloudwatch_metric_alarm" "gpu_idle" {
  count               = local.gpu_count
  alarm_name          = "${local.names.gpu_service}-idle"
  alarm_description   = "No segment on ${local.names.gpu_segment_queue} for settings gpu.scale_in_idle_s: scales the GPU service to 0 (scaling, not paging)."
  comparison_operator = "LessThanOrEqualToThreshold"
  threshold           = 0
  evaluation_periods  = local.gpu_idle_periods
  datapoints_to_alarm = local.gpu_idle_periods
  treat_missing_data  = "breaching"
  alarm_actions       = [aws_appautoscaling_policy.gpu_scale_to_zero[0].arn]

  dynamic "metric_query" {
    for_each = local.gpu_backlog_queries
    content {
      id = metric_query.key
      metric {
        namespace   = "AWS/SQS"
        metric_name = metric_query.value
        dimensions  = { QueueName = aws_sqs_queue.segments_gpu[0].name }
        period      = local.gpu_scaling_period_s
        stat        = "Maximum"
      }
    }
  }
  metric_query {
    id          = "backlog"
    expression  = "FILL(visible, 0) + FILL(inflight, 0)"
    label       = "GPU segments queued or running"
    return_data = true
  }
}
