# Four buckets with one job each: uploads (input), results (output), transient segments (work), and the model
# plus the Lambda layer (models). All private, KMS-encrypted with the project key, TLS-only, versioned.

locals {
  buckets = toset(["input", "output", "work", "models"])
}

resource "aws_s3_bucket" "this" {
  #checkov:skip=CKV_AWS_18:server access logs need a fifth, non-KMS bucket; enable CloudTrail S3 data events for an audit trail
  #checkov:skip=CKV_AWS_144:cross-region replication doubles storage cost; inputs are the user's own copies and outputs can be recomputed
  #checkov:skip=CKV2_AWS_62:only the input bucket has a consumer for its events (aws_s3_bucket_notification.input)
  for_each = local.buckets

  bucket        = local.names["${each.key}_bucket"]
  force_destroy = var.force_destroy_buckets
}

resource "aws_s3_bucket_ownership_controls" "this" {
  for_each = local.buckets
  bucket   = aws_s3_bucket.this[each.key].id

  rule {
    object_ownership = "BucketOwnerEnforced" # ACLs disabled
  }
}

resource "aws_s3_bucket_public_access_block" "this" {
  for_each = local.buckets
  bucket   = aws_s3_bucket.this[each.key].id

  block_public_acls       = true
  block_public_policy     = true
  ignore_public_acls      = true
  restrict_public_buckets = true
}

resource "aws_s3_bucket_server_side_encryption_configuration" "this" {
  for_each = local.buckets
  bucket   = aws_s3_bucket.this[each.key].id

  rule {
    apply_server_side_encryption_by_default {
      sse_algorithm     = "aws:kms"
      kms_master_key_id = aws_kms_key.main.arn
    }
    bucket_key_enabled = true # one KMS call per bucket key, not per object: cheaper, fewer throttles
  }
}

resource "aws_s3_bucket_versioning" "this" {
  for_each = local.buckets
  bucket   = aws_s3_bucket.this[each.key].id

  versioning_configuration {
    status = "Enabled"
  }
}

resource "aws_s3_bucket_lifecycle_configuration" "this" {
  for_each = local.buckets
  bucket   = aws_s3_bucket.this[each.key].id

  # Work segments are deleted by assembly; whatever a failed job leaves behind expires with the job record.
  dynamic "rule" {
    for_each = each.key == "work" ? [1] : []
    content {
      id     = "expire-work-segments"
      status = "Enabled"
      filter {
        prefix = local.work_prefix
      }
      expiration {
        days = local.work_expiry_days
      }
      noncurrent_version_expiration {
        noncurrent_days = 1
      }
      abort_incomplete_multipart_upload {
        days_after_initiation = 1
      }
    }
  }

  rule {
    id     = "tidy-versions-and-uploads"
    status = "Enabled"
    filter {}
    abort_incomplete_multipart_upload {
      days_after_initiation = 1
    }
    noncurrent_version_expiration {
      noncurrent_days = local.work_expiry_days
    }
    expiration {
      expired_object_delete_marker = true
    }
  }

  depends_on = [aws_s3_bucket_versioning.this]
}

data "aws_iam_policy_document" "bucket" {
  for_each = local.buckets

  statement {
    sid       = "DenyInsecureTransport"
    effect    = "Deny"
    actions   = ["s3:*"]
    resources = [aws_s3_bucket.this[each.key].arn, "${aws_s3_bucket.this[each.key].arn}/*"]
    principals {
      type        = "*"
      identifiers = ["*"]
    }
    condition {
      test     = "Bool"
      variable = "aws:SecureTransport"
      values   = ["false"]
    }
  }

  statement {
    sid       = "DenyOutdatedTls"
    effect    = "Deny"
    actions   = ["s3:*"]
    resources = [aws_s3_bucket.this[each.key].arn, "${aws_s3_bucket.this[each.key].arn}/*"]
    principals {
      type        = "*"
      identifiers = ["*"]
    }
    condition {
      test     = "NumericLessThan"
      variable = "s3:TlsVersion"
      values   = ["1.2"]
    }
  }
}

resource "aws_s3_bucket_policy" "this" {
  for_each = local.buckets
  bucket   = aws_s3_bucket.this[each.key].id
  policy   = data.aws_iam_policy_document.bucket[each.key].json

  depends_on = [aws_s3_bucket_public_access_block.this]
}

# Every upload to the input bucket becomes a message on the ingest queue (never a direct Lambda invocation:
# the queue and its DLQ keep an upload that ingest cannot handle yet).
resource "aws_s3_bucket_notification" "input" {
  bucket = aws_s3_bucket.this["input"].id

  queue {
    id        = "ingest"
    queue_arn = aws_sqs_queue.ingest.arn
    events    = ["s3:ObjectCreated:*"]
  }

  depends_on = [aws_sqs_queue_policy.ingest]
}

# --- the configured model and its sidecar (scale, macs_per_input_pixel, source hashes, attribution) ----------
resource "aws_s3_object" "model" {
  bucket      = aws_s3_bucket.this["models"].id
  key         = local.model_key
  source      = local.model_file
  source_hash = filemd5(local.model_file) # SSE-KMS etags are not MD5s: compare the local file instead
  kms_key_id  = aws_kms_key.main.arn

  # Read by vsr.pipeline.modelstore (HeadObject) when the environment does not carry the model's scale and cost.
  metadata = {
    name                 = local.model_name
    scale                = tostring(local.model_meta.scale)
    macs-per-input-pixel = tostring(local.model_meta.macs_per_input_pixel)
    sha256               = filesha256(local.model_file)
  }

  depends_on = [aws_s3_bucket_server_side_encryption_configuration.this]
}

resource "aws_s3_object" "interpolation_model" {
  count       = fileexists(local.interpolation_file) ? 1 : 0
  bucket      = aws_s3_bucket.this["models"].id
  key         = local.interpolation_key
  source      = local.interpolation_file
  source_hash = filemd5(local.interpolation_file)
  kms_key_id  = aws_kms_key.main.arn
  metadata = {
    name   = local.interpolation_name
    sha256 = filesha256(local.interpolation_file)
  }

  depends_on = [aws_s3_bucket_server_side_encryption_configuration.this]
}

resource "aws_s3_object" "model_sidecar" {
  bucket       = aws_s3_bucket.this["models"].id
  key          = local.model_meta_key
  source       = local.model_sidecar
  source_hash  = filemd5(local.model_sidecar)
  content_type = "application/json"
  kms_key_id   = aws_kms_key.main.arn

  depends_on = [aws_s3_bucket_server_side_encryption_configuration.this]
}
