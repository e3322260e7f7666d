"""The deployment contract: what Terraform creates and the code relies on, in one place.

- resource names, a function of the name prefix (and, for buckets, account and region: bucket names are global);
- the environment variables the functions read (`ENV_VARS`, plus `FIXED_ENV` that Terraform sets as is);
- the model object's layout in the models bucket and the S3 metadata ingest reads from it;
- the work bucket's prefix for job files.

`terraform/locals.tf` mirrors it (`names`, `function_env`, `model_key`, `work_prefix`), and
tests/deploy/test_terraform_wiring.py checks the mirror in one test. The local runtime (`vsr.local.provision`),
`vsr status`/`vsr redrive` (`vsr.ops`) and the handlers (`vsr.aws.resources`) import it.
"""

from __future__ import annotations

from dataclasses import dataclass

# Resources field -> the environment variable Terraform sets on the functions.
ENV_VARS: dict[str, str] = {
    "input_bucket": "VSR_INPUT_BUCKET",
    "output_bucket": "VSR_OUTPUT_BUCKET",
    "work_bucket": "VSR_WORK_BUCKET",
    "models_bucket": "VSR_MODELS_BUCKET",
    "ingest_queue_url": "VSR_INGEST_QUEUE_URL",
    "segment_queue_url": "VSR_SEGMENT_QUEUE_URL",
    # the GPU tier's segment queue (settings gpu.enabled): ingest sends a job planned for that tier there; empty
    # when the fleet is off. On the GPU worker itself VSR_SEGMENT_QUEUE_URL is this queue (one worker, two queues).
    "gpu_segment_queue_url": "VSR_GPU_SEGMENT_QUEUE_URL",
    # the EventBridge bus job state changes go to (vsr.pipeline.jobs.notify); empty: no events
    "event_bus": "VSR_EVENT_BUS",
    "table": "VSR_TABLE",
    "model_key": "VSR_MODEL_KEY",
    # the model's scale and cost, from the converter's sidecar, so ingest never reads the model bucket
    "model_scale": "VSR_MODEL_SCALE",
    "model_macs_per_pixel": "VSR_MODEL_MACS_PER_PIXEL",
}
# Set on every function besides ENV_VARS: where Lambda may write the model (its only writable place is /tmp).
FIXED_ENV: dict[str, str] = {"VSR_MODEL_DIR": "/tmp/vsr-models"}
# Also set by Terraform: VSR_LOG_LEVEL and VSR_SETTINGS_OVERRIDES (vsr.settings).
# Which worker tier a process is (lambda | gpu): it picks the ONNX Runtime providers (settings) and is recorded
# with every segment. The ECS task definition sets it to gpu; unset means lambda.
WORKER_TIER_ENV = "VSR_WORKER_TIER"

MODELS_PREFIX = "models/"
# S3 user metadata on the model object (what Terraform's aws_s3_object.model writes and ingest reads)
META_NAME = "name"
META_SCALE = "scale"
META_MACS = "macs-per-input-pixel"
META_SHA256 = "sha256"
MODEL_METADATA_KEYS = (META_NAME, META_SCALE, META_MACS, META_SHA256)

WORK_PREFIX = "jobs/"  # the work bucket's job files; its lifecycle rule expires this prefix

FUNCTIONS = ("ingest", "worker", "assemble")


def model_key(model_name: str) -> str:
    return f"{MODELS_PREFIX}{model_name}.onnx"


def model_sidecar_key(model_name: str) -> str:
    return f"{MODELS_PREFIX}{model_name}.json"


@dataclass(frozen=True)
class ResourceNames:
    input_bucket: str
    output_bucket: str
    work_bucket: str
    models_bucket: str
    ingest_queue: str
    ingest_dlq: str
    segment_queue: str
    segment_dlq: str
    gpu_segment_queue: str
    gpu_segment_dlq: str
    assembly_failures: str
    table: str
    model_key: str
    ingest_function: str
    worker_function: str
    assemble_function: str
    gpu_cluster: str
    gpu_service: str
    gpu_repository: str


def table_name(prefix: str) -> str:
    return f"{prefix}-jobs"


def queue_name(prefix: str, queue: str) -> str:
    """`ingest`, `segments` or `segments-gpu`, and their dead-letter queues (`<queue>-dlq`)."""
    return f"{prefix}-{queue}"


def resource_names(prefix: str, model_name: str, account_id: str, region: str) -> ResourceNames:
    """The one naming function: buckets `<prefix>-<role>-<account>-<region>`, the rest `<prefix>-<role>`."""
    suffix = f"{account_id}-{region}"
    return ResourceNames(
        input_bucket=f"{prefix}-input-{suffix}",
        output_bucket=f"{prefix}-output-{suffix}",
        work_bucket=f"{prefix}-work-{suffix}",
        models_bucket=f"{prefix}-models-{suffix}",
        ingest_queue=queue_name(prefix, "ingest"),
        ingest_dlq=queue_name(prefix, "ingest-dlq"),
        segment_queue=queue_name(prefix, "segments"),
        segment_dlq=queue_name(prefix, "segments-dlq"),
        gpu_segment_queue=queue_name(prefix, "segments-gpu"),
        gpu_segment_dlq=queue_name(prefix, "segments-gpu-dlq"),
        assembly_failures=f"{prefix}-assembly-failures",
        table=table_name(prefix),
        model_key=model_key(model_name),
        ingest_function=f"{prefix}-ingest",
        worker_function=f"{prefix}-worker",
        assemble_function=f"{prefix}-assemble",
        gpu_cluster=f"{prefix}-gpu",
        gpu_service=f"{prefix}-gpu-worker",
        gpu_repository=f"{prefix}-gpu-worker",
    )
