# Where the GPU instances run: the subnets and security group given (var.gpu_subnet_ids,
# var.gpu_security_group_id), or else a minimal VPC made here: two public subnets in two zones behind an
# internet gateway, and a security group that lets HTTPS out (S3, SQS, DynamoDB, ECR, ECS, CloudWatch Logs, KMS
# are all HTTPS) and nothing in. No NAT gateway or interface endpoints: a fleet that is at zero most of the
# time would pay for them by the hour. Instances get a public address that accepts no connection.

locals {
  gpu_own_vpc           = local.gpu_enabled && length(var.gpu_subnet_ids) == 0
  gpu_own_vpc_count     = local.gpu_own_vpc ? 1 : 0
  gpu_subnet_ids        = local.gpu_own_vpc ? aws_subnet.gpu[*].id : var.gpu_subnet_ids
  gpu_public_ip         = local.gpu_own_vpc
  gpu_own_sg            = local.gpu_enabled && (local.gpu_own_vpc || var.gpu_security_group_id == null)
  gpu_security_group_id = local.gpu_own_sg ? aws_security_group.gpu[0].id : var.gpu_security_group_id
  gpu_vpc_id            = local.gpu_own_vpc ? aws_vpc.gpu[0].id : try(data.aws_subnet.gpu_given[0].vpc_id, null)
}

data "aws_availability_zones" "available" {
  #checkov:skip=CKV_AWS_394:only the first two zones are used, by index, for the minimal VPC; to choose zones pass gpu_subnet_ids
  count = local.gpu_own_vpc_count
  state = "available"
}

# the VPC of the subnets given, for a security group made here
data "aws_subnet" "gpu_given" {
  count = local.gpu_enabled && !local.gpu_own_vpc && var.gpu_security_group_id == null ? 1 : 0
  id    = var.gpu_subnet_ids[0]
}

resource "aws_vpc" "gpu" {
  #checkov:skip=CKV2_AWS_11:flow logs of a VPC that accepts no inbound traffic would record only the fleet's own HTTPS calls; enable them on a VPC you pass in
  count                = local.gpu_own_vpc_count
  cidr_block           = var.gpu_vpc_cidr
  enable_dns_support   = true
  enable_dns_hostnames = true
  tags                 = { Name = local.names.gpu_cluster }
}

# The VPC's default security group allows nothing, so no resource can fall back to an open one.
resource "aws_default_security_group" "gpu" {
  count  = local.gpu_own_vpc_count
  vpc_id = aws_vpc.gpu[0].id
}

resource "aws_internet_gateway" "gpu" {
  count  = local.gpu_own_vpc_count
  vpc_id = aws_vpc.gpu[0].id
}

resource "aws_subnet" "gpu" {
  count                   = local.gpu_own_vpc ? 2 : 0
  vpc_id                  = aws_vpc.gpu[0].id
  availability_zone       = data.aws_availability_zones.available[0].names[count.index]
  cidr_block              = cidrsubnet(var.gpu_vpc_cidr, 4, count.index)
  map_public_ip_on_launch = false # the launch template asks for the address; nothing else launched here gets one
  tags                    = { Name = "${local.names.gpu_cluster}-${count.index}" }
}

resource "aws_route_table" "gpu" {
  count  = local.gpu_own_vpc_count
  vpc_id = aws_vpc.gpu[0].id

  route {
    cidr_block = "0.0.0.0/0"
    gateway_id = aws_internet_gateway.gpu[0].id
  }
}

resource "aws_route_table_association" "gpu" {
  count          = local.gpu_own_vpc ? 2 : 0
  subnet_id      = aws_subnet.gpu[count.index].id
  route_table_id = aws_route_table.gpu[0].id
}

resource "aws_security_group" "gpu" {
  count       = local.gpu_own_sg ? 1 : 0
  name_prefix = "${local.names.gpu_cluster}-"
  description = "${local.prefix} GPU workers: HTTPS out to the AWS APIs, nothing in"
  vpc_id      = local.gpu_vpc_id

  egress {
    description = "HTTPS to the AWS APIs (S3, SQS, DynamoDB, ECR, ECS, CloudWatch Logs, KMS)"
    from_port   = 443
    to_port     = 443
    protocol    = "tcp"
    cidr_blocks = ["0.0.0.0/0"]
  }

  lifecycle {
    create_before_destroy = true
  }
}
