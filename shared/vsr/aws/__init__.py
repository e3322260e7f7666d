"""AWS building blocks: cached boto3 clients with retries, resource names from the environment, S3 ranged reads.

Every AWS call the project makes goes through clients from `vsr.aws.clients`, so the IAM policies in
`terraform/` can be derived from the calls in `vsr.aws` and `vsr.pipeline`.
"""
