# Every tunable that also lives in shared/vsr/config/settings.json defaults to null here and falls back to the
# settings value in locals.tf: the numbers are typed once, in the settings file. Set a variable only to override.

variable "aws_region" {
  description = "AWS region to deploy into; null uses the standard AWS configuration chain (AWS_REGION, ~/.aws/config)."
  type        = string
  default     = null
}

variable "name_prefix" {
  description = "Prefix of every resource name; null uses settings.json name_prefix."
  type        = string
  default     = null

  validation {
    condition     = var.name_prefix == null || can(regex("^[a-z][a-z0-9-]{1,20}$", var.name_prefix))
    error_message = "name_prefix must be 2-21 characters of lower-case letters, digits and '-', starting with a letter (it becomes part of S3 bucket names)."
  }
}

variable "architecture" {
  description = "Lambda CPU architecture of the functions and the layer; must match `make package ARCH=...`."
  type        = string
  default     = "arm64"

  validation {
    condition     = contains(["arm64", "x86_64"], var.architecture)
    error_message = "architecture must be arm64 or x86_64."
  }
}

variable "functions" {
  description = "Per-function overrides of settings.json functions.<name> (timeout_s, memory_mb, ephemeral_storage_mb); unset fields keep the settings value. Keys: ingest, worker, assemble."
  type = map(object({
    timeout_s            = optional(number)
    memory_mb            = optional(number)
    ephemeral_storage_mb = optional(number)
  }))
  default = {}

  validation {
    condition     = alltrue([for name in keys(var.functions) : contains(["ingest", "worker", "assemble"], name)])
    error_message = "functions keys must be ingest, worker or assemble."
  }
  validation {
    condition     = alltrue([for f in values(var.functions) : f.timeout_s == null || (try(f.timeout_s >= 1 && f.timeout_s <= 900, false))])
    error_message = "timeout_s must be between 1 and 900 seconds (the Lambda maximum)."
  }
  validation {
    condition     = alltrue([for f in values(var.functions) : f.memory_mb == null || (try(f.memory_mb >= 128 && f.memory_mb <= 10240, false))])
    error_message = "memory_mb must be between 128 and 10240 MB."
  }
  validation {
    condition     = alltrue([for f in values(var.functions) : f.ephemeral_storage_mb == null || (try(f.ephemeral_storage_mb >= 512 && f.ephemeral_storage_mb <= 10240, false))])
    error_message = "ephemeral_storage_mb must be between 512 and 10240 MB."
  }
}

variable "worker_reserved_concurrency" {
  description = "Reserved concurrency of the worker function; null uses settings.json functions.worker.reserved_concurrency."
  type        = number
  default     = null

  validation {
    condition     = var.worker_reserved_concurrency == null || try(var.worker_reserved_concurrency >= 2, false)
    error_message = "worker_reserved_concurrency must be at least 2 (the SQS event source's minimum maximum concurrency)."
  }
}

variable "worker_max_concurrency" {
  description = "ScalingConfig MaximumConcurrency of the segment queue's event source mapping; null uses settings.json queues.worker_max_concurrency. Must not exceed the worker's reserved concurrency."
  type        = number
  default     = null

  validation {
    condition     = var.worker_max_concurrency == null || try(var.worker_max_concurrency >= 2 && var.worker_max_concurrency <= 1000, false)
    error_message = "worker_max_concurrency must be between 2 and 1000 (the SQS event source limits)."
  }
}

variable "model_name" {
  description = "Name of the converted model to upload and run (see `vsr models list`); null uses settings.json model.name."
  type        = string
  default     = null
}

variable "model_precision" {
  description = "fp32 or int8: int8 uploads `<model_name>-int8` where that variant passed the fidelity gate (else fp32); null uses settings.json model.precision."
  type        = string
  default     = null

  validation {
    condition     = var.model_precision == null || contains(["fp32", "int8"], coalesce(var.model_precision, "fp32"))
    error_message = "model_precision must be fp32 or int8."
  }
}

variable "model_dir" {
  description = "Folder holding the converted ONNX models and their JSON sidecars (`make models` writes them); null uses ~/.cache/vsr/models, the model directory of the CLI and make (vsr.models.registry.model_dir)."
  type        = string
  default     = null
}

variable "package_dir" {
  description = "Folder holding layer.zip, ingest.zip, worker.zip and assemble.zip from `make package ARCH=<architecture>`; null uses ../build/lambda/<architecture>."
  type        = string
  default     = null
}

variable "log_level" {
  description = "Application log level of the functions (VSR_LOG_LEVEL and the Lambda application log level)."
  type        = string
  default     = "INFO"

  validation {
    condition     = contains(["DEBUG", "INFO", "WARN", "ERROR"], var.log_level)
    error_message = "log_level must be DEBUG, INFO, WARN or ERROR."
  }
}

variable "log_retention_days" {
  description = "CloudWatch log retention; null uses settings.json observability.log_retention_days."
  type        = number
  default     = null

  validation {
    condition     = var.log_retention_days == null || contains([1, 3, 5, 7, 14, 30, 60, 90, 120, 150, 180, 365, 400, 545, 731, 1096, 1827, 2192, 2557, 2922, 3288, 3653], coalesce(var.log_retention_days, 0))
    error_message = "log_retention_days must be one of the values CloudWatch Logs accepts (1, 3, 5, 7, 14, 30, 60, 90, ... 3653)."
  }
}

variable "work_expiry_days" {
  description = "Days after which leftover work segments (jobs/ in the work bucket) expire; null uses settings.json jobs.ttl_days, so a failed job's segments live as long as its record."
  type        = number
  default     = null

  validation {
    condition     = var.work_expiry_days == null || try(var.work_expiry_days >= 1, false)
    error_message = "work_expiry_days must be at least 1."
  }
}

variable "assembly_max_retry_attempts" {
  description = "How often the stream event source retries a failed assembly batch (bisecting it) before sending the record to the assembly failure queue; null = settings.json event_sources.assemble."
  type        = number
  default     = null

  validation {
    condition     = var.assembly_max_retry_attempts == null || try(var.assembly_max_retry_attempts >= 0 && var.assembly_max_retry_attempts <= 10000, false)
    error_message = "assembly_max_retry_attempts must be between 0 and 10000."
  }
}

variable "alarm_email" {
  description = "E-mail address subscribed to the alarm topic (AWS sends a confirmation mail); null subscribes nobody."
  type        = string
  default     = null

  validation {
    condition     = var.alarm_email == null || can(regex("^[^@\\s]+@[^@\\s]+\\.[^@\\s]+$", coalesce(var.alarm_email, "x")))
    error_message = "alarm_email must be an e-mail address."
  }
}

variable "kms_deletion_window_days" {
  description = "Waiting period before the customer managed KMS key is deleted after `terraform destroy`."
  type        = number
  default     = 30

  validation {
    condition     = var.kms_deletion_window_days >= 7 && var.kms_deletion_window_days <= 30
    error_message = "kms_deletion_window_days must be between 7 and 30."
  }
}

variable "force_destroy_buckets" {
  description = "Let `terraform destroy` delete buckets that still hold objects (all versions). Off by default so outputs are never lost by accident."
  type        = bool
  default     = false
}

variable "tags" {
  description = "Extra tags applied to every resource."
  type        = map(string)
  default     = {}
}

# --- the opt-in GPU worker tier (gpu.tf, gpu_network.tf, gpu_iam.tf, gpu_scaling.tf) ----------------------------

variable "gpu_fleet_enabled" {
  description = "Deploy the GPU worker tier (a second segment queue feeding an ECS service on GPU instances, scaled from zero); null uses settings.json gpu.enabled (false: new AWS accounts have no GPU instance quota)."
  type        = bool
  default     = null
}

variable "gpu_image_tag" {
  description = "Tag of the GPU worker image in the Terraform-made ECR repository (tags are immutable): the tag `make push` pushed (make deploy passes the same IMAGE_TAG). Required when the GPU fleet is enabled."
  type        = string
  default     = null

  validation {
    condition     = var.gpu_image_tag == null || can(regex("^[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}$", coalesce(var.gpu_image_tag, "x")))
    error_message = "gpu_image_tag must be a Docker tag: up to 128 letters, digits, '_', '.' and '-', not starting with '.' or '-'."
  }
}

variable "gpu_ami_id" {
  description = "AMI of the GPU instances; null looks up the ECS GPU-optimised Amazon Linux 2 AMI that AWS recommends (SSM /aws/service/ecs/optimized-ami/amazon-linux-2/gpu/recommended/image_id)."
  type        = string
  default     = null
}

variable "gpu_instance_types" {
  description = "Instance types the GPU Auto Scaling group may launch (first = highest priority); null uses the keys of settings.json gpu.instance_types."
  type        = list(string)
  default     = null
}

variable "gpu_max_tasks" {
  description = "Most GPU worker tasks (one GPU each, one per instance); null uses settings.json gpu.max_tasks."
  type        = number
  default     = null

  validation {
    condition     = var.gpu_max_tasks == null || try(var.gpu_max_tasks >= 1, false)
    error_message = "gpu_max_tasks must be at least 1."
  }
}

variable "gpu_subnet_ids" {
  description = "Subnets of the GPU instances (they need a route to the AWS APIs: an internet gateway with public IPs, NAT, or VPC endpoints); empty creates a minimal VPC with two public subnets and no inbound access."
  type        = list(string)
  default     = []
}

variable "gpu_security_group_id" {
  description = "Security group of the GPU instances when gpu_subnet_ids is given; null creates one that allows HTTPS out and nothing in."
  type        = string
  default     = null
}

variable "gpu_vpc_cidr" {
  description = "Address range of the minimal VPC created when gpu_subnet_ids is empty."
  type        = string
  default     = "10.42.0.0/16"

  validation {
    condition     = can(cidrnetmask(var.gpu_vpc_cidr))
    error_message = "gpu_vpc_cidr must be an IPv4 CIDR block."
  }
}

# --- job events (events.tf) ---------------------------------------------------------------------------------

variable "events_enabled" {
  description = "Emit a 'VSR Job State Change' EventBridge event (default bus) on every job state change."
  type        = bool
  default     = true
}

variable "notify_email" {
  description = "E-mail address told when a job completes or fails (an SNS e-mail subscription; AWS sends a confirmation mail). null: none."
  type        = string
  default     = null

  validation {
    condition     = var.notify_email == null || can(regex("^[^@\\s]+@[^@\\s]+\\.[^@\\s]+$", coalesce(var.notify_email, "x")))
    error_message = "notify_email must be an e-mail address."
  }
}

variable "webhook_url" {
  description = "HTTPS endpoint that receives every job event as JSON (an EventBridge API destination). null: none."
  type        = string
  default     = null

  validation {
    condition     = var.webhook_url == null || startswith(coalesce(var.webhook_url, "https://"), "https://")
    error_message = "webhook_url must be an https:// URL."
  }
}

variable "webhook_api_key_header" {
  description = "Header that carries the webhook's API key."
  type        = string
  default     = "x-api-key"
}

variable "webhook_api_key" {
  description = "The webhook's API key (stored by EventBridge in Secrets Manager). Required with webhook_url."
  type        = string
  default     = null
  sensitive   = true
}

variable "api_enabled" {
  description = "The upload API (api.tf): API Gateway HTTP API with a Cognito user pool, app client and JWT authorizer, and its Lambda. Off by default."
  type        = bool
  default     = false
}

variable "api_page_origin" {
  description = "The one origin the upload page is served from (CORS and the sign-in callback). The page is hosted by `vsr serve` (docs/web.md), so by default the local one."
  type        = string
  default     = "http://localhost:8080"

  validation {
    condition     = can(regex("^(https://[a-z0-9.-]+(:[0-9]+)?|http://(localhost|127\\.0\\.0\\.1)(:[0-9]+)?)$", var.api_page_origin))
    error_message = "api_page_origin must be an https:// origin, or http:// on localhost / 127.0.0.1 (no path, no trailing slash)."
  }
}

variable "api_auth_domain_prefix" {
  description = "Prefix of the Cognito hosted sign-in domain (<prefix>.auth.<region>.amazoncognito.com). null: <name prefix>-<account id>."
  type        = string
  default     = null
}
