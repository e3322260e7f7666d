# The opt-in GPU worker tier (var.gpu_fleet_enabled, else settings gpu.enabled): the GPU segment queue
# (queues.tf) feeds an ECS service of `vsr worker` tasks, one GPU each, on GPU instances that an Auto Scaling
# group starts from zero. The service's desired count follows the queue (gpu_scaling.tf); the capacity
# provider's managed scaling starts and stops instances to fit the tasks. Network: gpu_network.tf; roles:
# gpu_iam.tf. Every resource here has count = local.gpu_count, so nothing exists while the fleet is off.

# --- the image (docker/gpu-worker/Dockerfile; `make image` and `make push`) ------------------------------
resource "aws_ecr_repository" "gpu_worker" {
  count                = local.gpu_count
  name                 = local.names.gpu_repository
  image_tag_mutability = "IMMUTABLE" # a tag names one build: the task definition pins it
  force_delete         = var.force_destroy_buckets

  image_scanning_configuration {
    scan_on_push = true
  }

  encryption_configuration {
    encryption_type = "KMS"
    kms_key         = aws_kms_key.main.arn
  }
}

resource "aws_ecr_lifecycle_policy" "gpu_worker" {
  count      = local.gpu_count
  repository = aws_ecr_repository.gpu_worker[0].name
  policy = jsonencode({
    rules = [{
      rulePriority = 1
      description  = "Untagged layers of superseded builds"
      selection    = { tagStatus = "untagged", countType = "sinceImagePushed", countUnit = "days", countNumber = 1 }
      action       = { type = "expire" }
    }]
  })
}

resource "aws_cloudwatch_log_group" "gpu_worker" {
  #checkov:skip=CKV_AWS_338:retention is settings.json observability.log_retention_days (cost control); raise it there or with var.log_retention_days
  count             = local.gpu_count
  name              = local.gpu_log_group
  retention_in_days = local.log_retention_days
  kms_key_id        = aws_kms_key.main.arn
}

# --- cluster and capacity ----------------------------------------------------------------------------------
resource "aws_ecs_cluster" "gpu" {
  count = local.gpu_count
  name  = local.names.gpu_cluster

  setting {
    name  = "containerInsights" # DesiredTaskCount per service: the scale-out alarm's other input
    value = "enabled"
  }
}

data "aws_ssm_parameter" "gpu_ami" {
  count = local.gpu_enabled && var.gpu_ami_id == null ? 1 : 0
  name  = "/aws/service/ecs/optimized-ami/amazon-linux-2/gpu/recommended/image_id"
}

resource "aws_launch_template" "gpu" {
  count       = local.gpu_count
  name_prefix = "${local.names.gpu_cluster}-"
  description = "${local.prefix}: ECS GPU-optimised AMI joining ${local.names.gpu_cluster}"
  image_id    = var.gpu_ami_id != null ? var.gpu_ami_id : data.aws_ssm_parameter.gpu_ami[0].insecure_value
  user_data   = base64encode(local.gpu_user_data)

  iam_instance_profile {
    arn = aws_iam_instance_profile.gpu_instance[0].arn
  }

  # IMDSv2 only, one hop: a container on the bridge network cannot reach the instance role's credentials.
  metadata_options {
    http_endpoint               = "enabled"
    http_tokens                 = "required"
    http_put_response_hop_limit = 1
    instance_metadata_tags      = "disabled"
  }

  block_device_mappings {
    device_name = "/dev/xvda" # the root volume of the Amazon Linux 2 ECS AMIs: images and the tasks' scratch space
    ebs {
      volume_size = local.gpu.disk_gb
      volume_type = "gp3"
      # the account's EBS key, not the project key: EC2 Auto Scaling creates the volume with its service-linked
      # role, which a customer key's policy would have to name (and that role may not exist yet in a new account)
      encrypted             = true
      delete_on_termination = true
    }
  }

  network_interfaces {
    # public subnets without NAT (the minimal VPC): the address reaches the AWS APIs; nothing may come in
    associate_public_ip_address = local.gpu_public_ip
    security_groups             = [local.gpu_security_group_id]
    delete_on_termination       = true
  }

  monitoring {
    enabled = true
  }

  tag_specifications {
    resource_type = "instance"
    tags          = { Name = "${local.names.gpu_cluster}-instance" }
  }
}

resource "aws_autoscaling_group" "gpu" {
  count               = local.gpu_count
  name_prefix         = "${local.names.gpu_cluster}-"
  min_size            = 0
  max_size            = local.gpu_max_tasks
  vpc_zone_identifier = local.gpu_subnet_ids
  # the capacity provider's managed termination protection: an instance running a task is never scaled in
  protect_from_scale_in     = true
  health_check_type         = "EC2"
  capacity_rebalance        = true # replace a spot instance AWS warns about before it is reclaimed
  default_instance_warmup   = local.gpu.boot_s
  wait_for_capacity_timeout = "0" # starts empty; capacity follows the tasks
  enabled_metrics           = ["GroupDesiredCapacity", "GroupInServiceInstances", "GroupPendingInstances"]

  mixed_instances_policy {
    instances_distribution {
      on_demand_base_capacity                  = 0
      on_demand_percentage_above_base_capacity = local.gpu.on_demand_percentage
      on_demand_allocation_strategy            = "prioritized"
      spot_allocation_strategy                 = "capacity-optimized"
    }
    launch_template {
      launch_template_specification {
        launch_template_id = aws_launch_template.gpu[0].id
        version            = aws_launch_template.gpu[0].latest_version
      }
      dynamic "override" {
        for_each = local.gpu_instance_types
        content {
          instance_type = override.value
        }
      }
    }
  }

  # ECS tags the group it manages; stating the tag keeps a second plan from removing it
  tag {
    key                 = "AmazonECSManaged"
    value               = "true"
    propagate_at_launch = true
  }

  lifecycle {
    ignore_changes = [desired_capacity] # the capacity provider's managed scaling sets it
  }
}

resource "aws_ecs_capacity_provider" "gpu" {
  count = local.gpu_count
  name  = local.names.gpu_cluster

  auto_scaling_group_provider {
    auto_scaling_group_arn         = aws_autoscaling_group.gpu[0].arn
    managed_termination_protection = "ENABLED"
    managed_draining               = "ENABLED" # a scaled-in or reclaimed instance's tasks get SIGTERM and drain

    # ECS starts instances for tasks that have none (from zero too) and stops empty ones: one task per instance
    managed_scaling {
      status                    = "ENABLED"
      target_capacity           = 100
      minimum_scaling_step_size = 1
      maximum_scaling_step_size = local.gpu_max_tasks
      instance_warmup_period    = local.gpu.boot_s
    }
  }
}

resource "aws_ecs_cluster_capacity_providers" "gpu" {
  count              = local.gpu_count
  cluster_name       = aws_ecs_cluster.gpu[0].name
  capacity_providers = [aws_ecs_capacity_provider.gpu[0].name]

  default_capacity_provider_strategy {
    capacity_provider = aws_ecs_capacity_provider.gpu[0].name
    weight            = 1
    base              = 0
  }
}

# --- the task and the service ------------------------------------------------------------------------------
resource "aws_ecs_task_definition" "gpu_worker" {
  count                    = local.gpu_count
  family                   = local.names.gpu_service
  requires_compatibilities = ["EC2"]
  network_mode             = "bridge" # awsvpc tasks on EC2 get no public address, and the minimal VPC has no NAT
  cpu                      = local.gpu_task_cpu
  memory                   = local.gpu_task_memory
  task_role_arn            = aws_iam_role.gpu_task[0].arn
  execution_role_arn       = aws_iam_role.gpu_execution[0].arn

  # segments are decoded and encoded in /tmp: a Docker volume on the instance's encrypted root disk (gpu.disk_gb),
  # one per task. A named volume starts with the image's /tmp mode (1777), so the non-root user can write to it
  # (a bind mount of a host path would be root's).
  volume {
    name = "scratch"
    docker_volume_configuration {
      scope  = "task"
      driver = "local"
    }
  }

  container_definitions = jsonencode([{
    name      = "worker"
    image     = "${aws_ecr_repository.gpu_worker[0].repository_url}:${coalesce(var.gpu_image_tag, "unset")}"
    essential = true
    # the image's ENTRYPOINT is `vsr worker`; it long-polls VSR_SEGMENT_QUEUE_URL
    environment          = [for name, value in local.gpu_task_env : { name = name, value = value }]
    resourceRequirements = [{ type = "GPU", value = "1" }]
    # SIGTERM (scale-in, spot reclaim, deployment), then gpu.drain_s to finish or release the segment, then SIGKILL
    stopTimeout            = local.gpu.stop_timeout_s
    readonlyRootFilesystem = true
    privileged             = false
    mountPoints            = [{ sourceVolume = "scratch", containerPath = "/tmp", readOnly = false }]
    linuxParameters        = { initProcessEnabled = true }
    logConfiguration = {
      logDriver = "awslogs"
      options = {
        awslogs-group         = aws_cloudwatch_log_group.gpu_worker[0].name
        awslogs-region        = local.region
        awslogs-stream-prefix = "gpu-worker"
      }
    }
  }])

  lifecycle {
    precondition {
      condition     = var.gpu_image_tag != null
      error_message = "The GPU fleet needs gpu_image_tag: the tag `make push` pushed to the ECR repository (make deploy passes IMAGE_TAG)."
    }
    precondition {
      condition     = local.gpu.stop_timeout_s > local.gpu.drain_s && local.gpu.stop_timeout_s <= 120
      error_message = "settings gpu.stop_timeout_s must exceed gpu.drain_s (the worker drains first) and be at most 120 (the ECS maximum)."
    }
    precondition {
      condition = alltrue([
        for name in local.gpu_instance_types : try(
          local.gpu.instance_types[name].vcpus * 1024 >= local.gpu_task_cpu && local.gpu.instance_types[name].memory_mb > local.gpu_task_memory,
          true,
        )
      ])
      error_message = "settings gpu.task_vcpus / gpu.task_memory_mb must fit every instance type of gpu.instance_types."
    }
  }
}

resource "aws_ecs_service" "gpu_worker" {
  count           = local.gpu_count
  name            = local.names.gpu_service
  cluster         = aws_ecs_cluster.gpu[0].arn
  task_definition = aws_ecs_task_definition.gpu_worker[0].arn
  desired_count   = 0 # from zero; Application Auto Scaling sets it from the queue (gpu_scaling.tf)
  # a deployment may stop old tasks first: a second GPU per task would only cost money
  deployment_minimum_healthy_percent = 0
  deployment_maximum_percent         = 100

  capacity_provider_strategy {
    capacity_provider = aws_ecs_capacity_provider.gpu[0].name
    weight            = 1
    base              = 0
  }

  deployment_circuit_breaker {
    enable   = true
    rollback = true
  }

  depends_on = [aws_ecs_cluster_capacity_providers.gpu, aws_iam_role_policy.gpu_task]

  lifecycle {
    ignore_changes = [desired_count]
  }
}

locals {
  gpu_log_group = "/ecs/${local.names.gpu_service}"
  # the worker Lambda's environment, but this tier's queue, this tier's providers (VSR_WORKER_TIER) and the
  # region (Lambda sets AWS_REGION itself; a container does not)
  gpu_task_env = merge(local.function_env, {
    VSR_SEGMENT_QUEUE_URL = local.gpu_enabled ? aws_sqs_queue.segments_gpu[0].url : ""
    VSR_WORKER_TIER       = "gpu" # vsr.aws.deployment.WORKER_TIER_ENV
    VSR_MODEL_DIR         = "/tmp/vsr-models"
    AWS_REGION            = local.region
  })
  # joins the cluster; GPU support and spot draining (SIGTERM to the task on a reclaim warning) are explicit
  gpu_user_data = <<-EOT
    #!/bin/bash
    cat >> /etc/ecs/ecs.config <<CONFIG
    ECS_CLUSTER=${local.names.gpu_cluster}
    ECS_ENABLE_GPU_SUPPORT=true
    ECS_ENABLE_SPOT_INSTANCE_DRAINING=true
    ECS_CONTAINER_STOP_TIMEOUT=${local.gpu.stop_timeout_s}s
    ECS_IMAGE_PULL_BEHAVIOR=prefer-cached
    CONFIG
  EOT
}
