# The one settings file the local runtime reads too (shared/vsr/config/settings.json). Numbers come from it; the
# derivations below mirror shared/vsr/settings.py (visibility = factor x consumer timeout, TTL in seconds, ...).

data "aws_caller_identity" "current" {}
data "aws_region" "current" {}
data "aws_partition" "current" {}

locals {
  settings_file = "${path.module}/../shared/vsr/config/settings.json"
  filter_file   = "${path.module}/../shared/vsr/config/assembly_filter.json"
  settings      = jsondecode(file(local.settings_file))
  # Re-encoded so the pattern is byte-for-byte what the local runtime's vsr.settings.load_assembly_filter() matches.
  assembly_filter_pattern = jsonencode(jsondecode(file(local.filter_file)))

  prefix     = coalesce(var.name_prefix, local.settings.name_prefix)
  account_id = data.aws_caller_identity.current.account_id
  region     = data.aws_region.current.name
  partition  = data.aws_partition.current.partition

  # Lambda runtime and handler string of every function: settings "lambda" (tools/package.py builds the layer
  # for the same runtime; `make lambda-smoke` resolves the same handler string).
  runtime = local.settings.lambda.runtime
  handler = local.settings.lambda.handler

  # --- functions: settings values, each field overridable through var.functions ---------------------------
  function_names = ["ingest", "worker", "assemble"]
  functions = {
    for name in local.function_names : name => {
      timeout_s            = coalesce(try(var.functions[name].timeout_s, null), local.settings.functions[name].timeout_s)
      memory_mb            = coalesce(try(var.functions[name].memory_mb, null), local.settings.functions[name].memory_mb)
      ephemeral_storage_mb = coalesce(try(var.functions[name].ephemeral_storage_mb, null), local.settings.functions[name].ephemeral_storage_mb)
    }
  }
  # Event source mappings (batch sizes, stream retries): the local dispatchers read the same settings.
  event_sources               = local.settings.event_sources
  assembly_max_retry_attempts = coalesce(var.assembly_max_retry_attempts, local.settings.event_sources.assemble.maximum_retry_attempts)
  worker_reserved_concurrency = coalesce(var.worker_reserved_concurrency, local.settings.functions.worker.reserved_concurrency)
  worker_max_concurrency      = coalesce(var.worker_max_concurrency, local.settings.queues.worker_max_concurrency)

  # --- queues: AWS wants visibility >= 6x the consumer's timeout; the factor is a setting ------------------
  visibility_timeout_factor = local.settings.queues.visibility_timeout_factor
  ingest_visibility_s       = local.visibility_timeout_factor * local.functions.ingest.timeout_s
  segment_visibility_s      = local.visibility_timeout_factor * local.functions.worker.timeout_s
  message_retention_s       = local.settings.queues.message_retention_s

  # --- the opt-in GPU worker tier: settings gpu (vsr.settings.GpuTier), the same numbers the planner uses -------
  gpu         = local.settings.gpu
  gpu_enabled = var.gpu_fleet_enabled != null ? var.gpu_fleet_enabled : local.settings.gpu.enabled
  gpu_count   = local.gpu_enabled ? 1 : 0
  # the planned (priced) type first: it is the on-demand priority and what the planner assumed
  gpu_instance_types = var.gpu_instance_types != null ? var.gpu_instance_types : concat(
    [local.gpu.planned_instance_type],
    [for name in keys(local.gpu.instance_types) : name if name != local.gpu.planned_instance_type],
  )
  gpu_max_tasks    = coalesce(var.gpu_max_tasks, local.gpu.max_tasks)
  gpu_task_cpu     = local.gpu.task_vcpus * 1024 # ECS CPU units
  gpu_task_memory  = local.gpu.task_memory_mb
  gpu_visibility_s = local.gpu.visibility_timeout_s
  # the scale-to-zero alarm: a backlog of 0 for scale_in_idle_s, in periods of scale_out_s
  gpu_scaling_period_s = local.gpu.scale_out_s
  gpu_idle_periods     = ceil(local.gpu.scale_in_idle_s / local.gpu.scale_out_s)

  # --- jobs, model, observability ----------------------------------------------------------------------------
  work_expiry_days   = coalesce(var.work_expiry_days, local.settings.jobs.ttl_days)
  log_retention_days = coalesce(var.log_retention_days, local.settings.observability.log_retention_days)
  oldest_message_s   = local.settings.observability.oldest_message_alarm_s

  model_base      = coalesce(var.model_name, local.settings.model.name)
  model_dir       = coalesce(var.model_dir, pathexpand("~/.cache/vsr/models")) # vsr.models.registry.DEFAULT_MODEL_DIR
  model_precision = coalesce(var.model_precision, lookup(local.settings.model, "precision", "fp32"))
  # int8 runs `<model>-int8` only where `make models` installed that variant because it passed the fidelity
  # gate (its sidecar says so); otherwise the fp32 model. Same rule as vsr.models.registry.deployed_model_name.
  model_int8_passed = try(jsondecode(file("${local.model_dir}/${local.model_base}-int8.json")).gate == "pass", false)
  model_name        = local.model_precision == "int8" && local.model_int8_passed ? "${local.model_base}-int8" : local.model_base
  model_file        = "${local.model_dir}/${local.model_name}.onnx"
  model_sidecar     = "${local.model_dir}/${local.model_name}.json"
  model_key         = "models/${local.model_name}.onnx"
  model_meta_key    = "models/${local.model_name}.json"
  # frame interpolation (settings interpolation.model): uploaded beside the SR model when `make models` built it;
  # workers of jobs with vsr-interpolate/vsr-fps/vsr-slowmo download it (vsr.pipeline.timejob.interpolation_key)
  interpolation_name = local.settings.interpolation.model
  interpolation_file = "${local.model_dir}/${local.interpolation_name}.onnx"
  interpolation_key  = "models/${local.interpolation_name}.onnx"
  # The converter's sidecar carries scale and macs_per_input_pixel: ingest plans segments from them without
  # reading the model (VSR_MODEL_SCALE / VSR_MODEL_MACS_PER_PIXEL, vsr.pipeline.modelstore.configured_model).
  model_meta = jsondecode(file(local.model_sidecar))

  package_dir = coalesce(var.package_dir, "${path.module}/../build/lambda/${var.architecture}")
  layer_zip   = "${local.package_dir}/layer.zip"
  function_zips = {
    for name in local.function_names : name => "${local.package_dir}/${name}.zip"
  }

  # Work segments live under this prefix of the work bucket (vsr.pipeline writes jobs/<job_id>/...).
  work_prefix = "jobs/"

  # Settings the code reads at run time, re-stated through VSR_SETTINGS_OVERRIDES so a Terraform override
  # (e.g. a larger worker memory) is also what the ingest planner and the worker see. worker_max_concurrency
  # also sizes each job's segment window (segments.window_per_worker x it; vsr.pipeline.window), as the
  # local runtime passes its own worker count.
  settings_overrides = jsonencode({
    name_prefix  = local.prefix
    architecture = var.architecture
    model        = { name = local.model_name }
    functions = {
      ingest   = local.functions.ingest
      worker   = merge(local.functions.worker, { reserved_concurrency = local.worker_reserved_concurrency })
      assemble = local.functions.assemble
    }
    queues = { worker_max_concurrency = local.worker_max_concurrency }
    # the planner offers the GPU tier only where this deployment has the fleet (vsr.settings.enabled_tiers)
    gpu = { enabled = local.gpu_enabled, max_tasks = local.gpu_max_tasks }
  })

  names = {
    input_bucket      = "${local.prefix}-input-${local.account_id}-${local.region}"
    output_bucket     = "${local.prefix}-output-${local.account_id}-${local.region}"
    work_bucket       = "${local.prefix}-work-${local.account_id}-${local.region}"
    models_bucket     = "${local.prefix}-models-${local.account_id}-${local.region}"
    ingest_queue      = "${local.prefix}-ingest"
    ingest_dlq        = "${local.prefix}-ingest-dlq"
    segment_queue     = "${local.prefix}-segments"
    segment_dlq       = "${local.prefix}-segments-dlq"
    gpu_segment_queue = "${local.prefix}-segments-gpu"
    gpu_segment_dlq   = "${local.prefix}-segments-gpu-dlq"
    gpu_cluster       = "${local.prefix}-gpu"
    gpu_service       = "${local.prefix}-gpu-worker"
    gpu_repository    = "${local.prefix}-gpu-worker"
    assembly_failures = "${local.prefix}-assembly-failures"
    table             = "${local.prefix}-jobs"
    alarms_topic      = "${local.prefix}-alarms"
    dashboard         = "${local.prefix}-pipeline"
  }
  function_full_names = { for name in local.function_names : name => "${local.prefix}-${name}" }

  # Environment every function gets (vsr.aws.resources.Resources.from_env reads these). Ingest sends a job planned
  # for the GPU tier to VSR_GPU_SEGMENT_QUEUE_URL, empty when the fleet is off (the planner then never picks it).
  function_env = {
    VSR_INPUT_BUCKET          = aws_s3_bucket.this["input"].id
    VSR_OUTPUT_BUCKET         = aws_s3_bucket.this["output"].id
    VSR_WORK_BUCKET           = aws_s3_bucket.this["work"].id
    VSR_MODELS_BUCKET         = aws_s3_bucket.this["models"].id
    VSR_INGEST_QUEUE_URL      = aws_sqs_queue.ingest.url
    VSR_SEGMENT_QUEUE_URL     = aws_sqs_queue.segments.url
    VSR_GPU_SEGMENT_QUEUE_URL = local.gpu_enabled ? aws_sqs_queue.segments_gpu[0].url : ""
    VSR_EVENT_BUS             = local.event_bus_env
    VSR_TABLE                 = aws_dynamodb_table.jobs.name
    VSR_MODEL_KEY             = local.model_key
    VSR_MODEL_SCALE           = tostring(local.model_meta.scale)
    VSR_MODEL_MACS_PER_PIXEL  = tostring(local.model_meta.macs_per_input_pixel)
    VSR_MODEL_DIR             = "/tmp/vsr-models"
    VSR_LOG_LEVEL             = var.log_level
    VSR_SETTINGS_OVERRIDES    = local.settings_overrides
  }
}

locals {
  function_names_set = toset(local.function_names)
  function_descriptions = {
    ingest   = "${local.prefix}: probe an uploaded video in place, plan segments, write the job, enqueue segments"
    worker   = "${local.prefix}: upscale one segment (decode window from S3, ONNX Runtime, encode, upload, count)"
    assemble = "${local.prefix}: join a finished job's segments with the source audio into the output bucket"
  }
}
