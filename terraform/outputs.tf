output "input_bucket" {
  description = "Upload videos here; each upload becomes one job."
  value       = aws_s3_bucket.this["input"].id
}

output "output_bucket" {
  description = "Upscaled videos and their JSON reports appear here."
  value       = aws_s3_bucket.this["output"].id
}

output "work_bucket" {
  description = "Transient upscaled segments (jobs/<job_id>/...), deleted after assembly."
  value       = aws_s3_bucket.this["work"].id
}

output "models_bucket" {
  description = "The model (models/) and the Lambda layer (lambda/)."
  value       = aws_s3_bucket.this["models"].id
}

output "ingest_queue_url" {
  value = aws_sqs_queue.ingest.url
}

output "segment_queue_url" {
  value = aws_sqs_queue.segments.url
}

output "dead_letter_queue_urls" {
  description = "Dead-letter queues (and the assembly failure queue): a message here needs `vsr redrive`."
  value = {
    ingest            = aws_sqs_queue.ingest_dlq.url
    segments          = aws_sqs_queue.segments_dlq.url
    assembly_failures = aws_sqs_queue.assembly_failures.url
    segments_gpu      = local.gpu_enabled ? aws_sqs_queue.segments_gpu_dlq[0].url : null
  }
}

output "table_name" {
  value = aws_dynamodb_table.jobs.name
}

output "kms_key_arn" {
  description = "Uploaders need kms:GenerateDataKey on this key, readers of the output bucket kms:Decrypt."
  value       = aws_kms_key.main.arn
}

output "alarm_topic_arn" {
  value = aws_sns_topic.alarms.arn
}

output "dashboard_url" {
  value = "https://${local.region}.console.aws.amazon.com/cloudwatch/home?region=${local.region}#dashboards:name=${aws_cloudwatch_dashboard.pipeline.dashboard_name}"
}

output "upload_command" {
  description = "Example: start a job."
  value       = "aws s3 cp my-video.mp4 s3://${aws_s3_bucket.this["input"].id}/my-video.mp4"
}

output "fetch_command" {
  description = "Example: download every result (videos and JSON reports)."
  value       = "aws s3 cp --recursive s3://${aws_s3_bucket.this["output"].id}/ ./out/"
}

output "redrive_command" {
  description = "Return dead-letter messages to their source queues (after fixing the cause)."
  value       = "eval \"$(terraform -chdir=terraform output -raw env_exports)\" && vsr redrive"
}

output "redrive_command_aws_cli" {
  description = "The same with the AWS CLI only (one move task per dead-letter queue)."
  value = join(" && ", [
    for dlq in concat([aws_sqs_queue.ingest_dlq, aws_sqs_queue.segments_dlq], aws_sqs_queue.segments_gpu_dlq) : "aws sqs start-message-move-task --source-arn ${dlq.arn}"
  ])
}

output "env" {
  description = "The VSR_* variables the functions get; export them to point `vsr status` / `vsr redrive` at this deployment."
  value = merge(
    { for key, value in local.function_env : key => value if !contains(["VSR_MODEL_DIR", "VSR_SETTINGS_OVERRIDES"], key) },
    { AWS_REGION = local.region },
  )
}

output "env_exports" {
  description = "`eval \"$(terraform output -raw env_exports)\"` sets the variables of the env output in a shell."
  value = join("\n", [
    for key, value in merge(
      { for key, value in local.function_env : key => value if !contains(["VSR_MODEL_DIR", "VSR_SETTINGS_OVERRIDES"], key) },
      { AWS_REGION = local.region },
    ) : "export ${key}='${value}'"
  ])
}

# --- the GPU tier (null while the fleet is off) ------------------------------------------------------------
output "gpu_segment_queue_url" {
  description = "The GPU tier's segment queue (VSR_GPU_SEGMENT_QUEUE_URL); null without the fleet."
  value       = local.gpu_enabled ? aws_sqs_queue.segments_gpu[0].url : null
}

output "gpu_repository_url" {
  description = "ECR repository of the GPU worker image: `make push` pushes IMAGE_TAG here (tags are immutable)."
  value       = local.gpu_enabled ? aws_ecr_repository.gpu_worker[0].repository_url : null
}

output "gpu_cluster_name" {
  value = local.gpu_enabled ? aws_ecs_cluster.gpu[0].name : null
}

output "gpu_service_name" {
  description = "ECS service of `vsr worker` tasks; its desired count follows the GPU queue (from 0)."
  value       = local.gpu_enabled ? aws_ecs_service.gpu_worker[0].name : null
}

output "api" {
  description = "The upload API (api_enabled): its URL and what a page or an app needs to sign users in. null when off."
  value = local.api_enabled ? {
    url           = aws_apigatewayv2_api.api[0].api_endpoint
    user_pool_id  = aws_cognito_user_pool.api[0].id
    client_id     = aws_cognito_user_pool_client.api[0].id
    auth_domain   = "https://${aws_cognito_user_pool_domain.api[0].domain}.auth.${local.region}.amazoncognito.com"
    issuer        = "https://${aws_cognito_user_pool.api[0].endpoint}"
    page_origin   = var.api_page_origin
    function_name = aws_lambda_function.api[0].function_name
    access_log    = aws_cloudwatch_log_group.api_access[0].name
  } : null
}
