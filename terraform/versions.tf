terraform {
  # optional() object attributes and lifecycle preconditions need 1.3+; 1.5 is the oldest line we target.
  required_version = ">= 1.5.0"

  required_providers {
    aws = {
      source = "hashicorp/aws"
      # 5.x: Lambda logging_config (JSON logs) needs >= 5.24; stay on the stable 5 line.
      version = "~> 5.70"
    }
  }
}

provider "aws" {
  # null -> the standard AWS configuration chain (AWS_REGION, ~/.aws/config).
  region = var.aws_region

  default_tags {
    tags = merge({ Project = local.prefix, ManagedBy = "terraform" }, var.tags)
  }
}
