# One item per job (vsr.pipeline.jobs). The stream feeds assembly when `remaining` reaches 0.

resource "aws_dynamodb_table" "jobs" {
  name         = local.names.table
  billing_mode = "PAY_PER_REQUEST"
  hash_key     = "job_id" # vsr.pipeline.jobs.KEY

  attribute {
    name = "job_id"
    type = "S"
  }

  stream_enabled   = true
  stream_view_type = "NEW_AND_OLD_IMAGES"

  ttl {
    attribute_name = "expires_at" # vsr.pipeline.jobs.TTL_ATTRIBUTE
    enabled        = true
  }

  point_in_time_recovery {
    enabled = true
  }

  server_side_encryption {
    enabled     = true
    kms_key_arn = aws_kms_key.main.arn
  }

  deletion_protection_enabled = !var.force_destroy_buckets
}
