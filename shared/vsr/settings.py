"""The one source of truth for tunables shared by Terraform and the local runtime.

`config/settings.json` is read by Terraform (`jsondecode(file(...))`) and by this module; derived values
(visibility timeouts, vCPUs per worker) are computed here and in `terraform/locals.tf` from the same numbers,
never typed twice. Tests and the local runtime may override values with `VSR_SETTINGS_OVERRIDES`
(a JSON object deep-merged over the file) or replace the file with `VSR_SETTINGS_FILE`.
"""

from __future__ import annotations

import copy
import dataclasses
import json
import os
from dataclasses import dataclass, fields
from functools import cache
from pathlib import Path
from typing import Any

from vsr.assembly_path import ASSEMBLER_DISK_HEADROOM, AssemblyCapacity, OutputModel

CONFIG_DIR = Path(__file__).resolve().parent / "config"
SETTINGS_FILE = CONFIG_DIR / "settings.json"
ASSEMBLY_FILTER_FILE = CONFIG_DIR / "assembly_filter.json"


def deep_merge(base: dict[str, Any], overrides: dict[str, Any]) -> dict[str, Any]:
    merged = copy.deepcopy(base)
    for key, value in overrides.items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = deep_merge(merged[key], value)
        else:
            merged[key] = copy.deepcopy(value)
    return merged


DEINTERLACE_MODES = ("auto", "on", "off")  # settings input.deinterlace, vsr-deinterlace (vsr.media.interlace)
# settings input.deinterlace_rate: frame (25i -> 25p, one frame per source frame) or field (25i -> 50p, one per field)
DEINTERLACE_RATES = ("frame", "field")
GEOMETRY_CHANGE_MODES = ("scale", "fail")  # settings input.geometry_changes (vsr.media.geometry)
TEMPORAL_MODES = ("off", "flow")  # settings model.temporal: no stabilisation, or flow-guided (vsr.quality.stabilise)
DELIVERY_CODECS = ("h264", "hevc", "av1", "prores")  # what vsr-codec / --codec may ask for, besides auto
NVENC_MODES = ("auto", "off")  # settings delivery.nvenc: use NVENC where it opens, or never


@dataclass(frozen=True)
class RetryPolicy:
    """Retry pacing of one SQS consumer (see vsr.pipeline.retry, which applies it)."""

    backoff_s: tuple[int, ...]  # hidden this long after failed attempt 1, 2, ...; the last value repeats
    jitter: float  # +- this fraction of each backoff, so a burst of failures does not come back in step
    max_attempts: int  # the queue's maxReceiveCount: the attempt that reaches it is the last one


@dataclass(frozen=True)
class FunctionSettings:
    timeout_s: int
    memory_mb: int
    ephemeral_storage_mb: int
    reserved_concurrency: int | None = None


@dataclass(frozen=True)
class SegmentPolicy:
    """How a job is cut into segments (see vsr.planning)."""

    work_budget_fraction: float  # of the worker timeout one segment may use (headroom for slow containers)
    min_frames: int  # floor: a segment shorter than this costs more in fixed overhead than it saves
    max_frames: int
    context_frames: int  # decoded before a segment's first frame, not output
    max_cost_overhead: float  # the default plan may cost this fraction more than the cheapest one
    window_per_worker: int  # segment messages of one job in the queue per worker at a time (0: all at once)

    @classmethod
    def from_raw(cls, raw: dict[str, Any]) -> SegmentPolicy:
        return cls(
            work_budget_fraction=float(raw["work_budget_fraction"]),
            min_frames=int(raw["min_frames"]),
            max_frames=int(raw["max_frames"]),
            context_frames=int(raw["context_frames"]),
            max_cost_overhead=float(raw["max_cost_overhead"]),
            window_per_worker=int(raw.get("window_per_worker", 0)),
        )


@dataclass(frozen=True)
class Int8Guard:
    """The saturation guard of int8 variants (vsr.guard, vsr.models.guard) and what it costs the planner.

    `cell`: input pixels per side of one clip-count cell (built into the variant's graph);
    `max_clipped_channels`: a cell with more (conv, channel) pairs clipped at the top of their uint8 range is
    recomputed in fp32; `int8_relative_cost`: the int8 variant's bare inference time over fp32's (guard
    included, bench/bench_int8.py); `expected_recompute_fraction`: share of input pixels the guard recomputes,
    measured on the bundled clips (bench/bench_int8.py prints it).
    """

    cell: int
    max_clipped_channels: float
    int8_relative_cost: float
    expected_recompute_fraction: float

    @classmethod
    def from_raw(cls, raw: dict[str, Any]) -> Int8Guard:
        return cls(
            cell=int(raw["cell"]),
            max_clipped_channels=float(raw["max_clipped_channels"]),
            int8_relative_cost=float(raw["int8_relative_cost"]),
            expected_recompute_fraction=float(raw["expected_recompute_fraction"]),
        )

    @property
    def cost_factor(self) -> float:
        """An int8 frame's compute relative to fp32's: the int8 pass plus the expected fp32 recompute."""
        return self.int8_relative_cost + self.expected_recompute_fraction


@dataclass(frozen=True)
class WorkerCapacity:
    """What one worker invocation computes: vCPUs from its memory, sustained GFLOP/s per vCPU."""

    vcpus: float
    gflops_per_vcpu: float
    memory_mb: int
    timeout_s: int
    concurrency: int  # executions at once: min(reserved concurrency, event source maximum concurrency)


@dataclass(frozen=True)
class LatencyModel:
    """Fixed and per-frame times of a job's stages; vsr.simulation plays a plan through them.

    docs/planning.md says which were measured here and which are assumptions about Lambda.
    """

    s3_event_s: float  # upload finished -> ingest message visible
    ingest_cold_start_s: float
    probe_s: float
    enqueue_s_per_segment: float
    sqs_poll_s: float  # message visible -> an idle poller picks it up
    scaling_initial_concurrency: int  # SQS event source: concurrent batches at the start
    scaling_per_minute: int  # ... and how many more it adds per minute
    worker_cold_start_s: float  # package init, model download, ONNX Runtime session
    worker_warm_start_s: float
    segment_setup_s: float  # seek to the keyframe, decode context frames, open the encoder, first keyframe
    frame_overhead_fraction: float  # decode + colour conversion + encode beyond inference, per frame
    segment_upload_s: float
    bookkeeping_s: float  # the job counter update and the message delete
    stream_s: float  # last count -> assembly invoked through the DynamoDB stream
    assembly_cold_start_s: float
    assembly_s_per_frame: float  # packet remux and upload
    assembly_fixed_s: float  # lease, plan and probe reads, audio, report
    quality_cpu_s_per_pair_mpix: float  # the job's own quality check, per frame pair and output megapixel, one thread
    quality_parallel_efficiency: float  # each extra thread of the check adds this fraction of one thread's speed
    temporal_s_per_output_mpix: float  # stabilisation (model.temporal = flow) per frame and output megapixel
    # bwdif per frame and input megapixel (vsr.media.interlace; measured 0.0008 s at 720x576 on 2 cores, PyAV 18)
    deinterlace_s_per_input_mpix: float = 0.0

    @classmethod
    def from_raw(cls, raw: dict[str, Any]) -> LatencyModel:
        fields_ = {f: raw[f] for f in cls.__dataclass_fields__ if f in raw}  # missing required: TypeError
        return cls(**{k: (int(v) if k.startswith("scaling_") else float(v)) for k, v in fields_.items()})

    def replace(self, **changes: float) -> LatencyModel:
        return dataclasses.replace(self, **changes)


@dataclass(frozen=True)
class EncodeSettings:
    """How segments and the delivery are encoded (vsr.media.encode takes this, never the settings)."""

    codec: str
    crf: int  # delivery quality
    preset: str
    join: str  # "reencode" (lossless segments, one delivery encode: seamless joins) or "remux"
    segment_crf: int  # segments' quality when they are re-encoded once more at the join (0: lossless)
    reencode_max_mpix: float  # above this many output megapixels a video's segments are remuxed instead
    # frames the fragmented path's encoder sees before and after each segment and drops (vsr.media.encode.Primer):
    # x264's lookahead at the delivery preset (veryfast: 10); bench/bench_fragment_seams.py measured 5, 10, 20
    fragment_primer_frames: int = 0

    def replace(self, **changes: Any) -> EncodeSettings:
        return dataclasses.replace(self, **changes)


@dataclass(frozen=True)
class CodecSettings:
    """One codec's named settings (settings.json `delivery.codecs.<codec>`; H.264's quality is `encode`'s)."""

    codec: str
    encoder: str  # the software encoder in the PyAV wheel
    nvenc: str | None  # its NVENC encoder, if the codec has one
    container: str
    crf: int | None  # None: the codec has no CRF (ProRes: fixed-quality profile)
    preset: str | None
    profile: str | None  # encoder profile option (ProRes 3 = 422 HQ)
    bit_depth: int | None  # forced output depth (HEVC Main 10, ProRes 10); None: the source's (8 or 10)
    nvenc_cq: int | None  # NVENC constant-quality level chosen to match `crf` (not measured: no GPU here)
    nvenc_preset: str
    encode_mpix_per_vcpu_s: float  # measured (make bench-encode): output megapixels per vCPU-second
    bytes_per_output_mpix: float  # measured: delivery bytes per output megapixel at these settings


@dataclass(frozen=True)
class AssemblyWork:
    """What the assembler does besides the fixed part: one delivery encode of the whole output (seamless joins)
    up to a size, else a packet remux; and the quality check on every join pair plus sampled pairs."""

    reencode: bool  # encode.join == "reencode"
    reencode_s_per_output_mpix: float  # 1 / (encode.reencode_mpix_per_vcpu_s x the assembler's vCPUs)
    reencode_max_mpix: float  # above it, segments are remuxed (Settings.reencode_max_megapixels)
    quality_sample_pairs: int
    quality_budget_s: float
    quality_s_per_pair_mpix: float  # wall (= billed) seconds, with the check's threads on the assembler's vCPUs


@dataclass(frozen=True)
class Pricing:
    """AWS list prices (USD, us-east-1) and request counts per segment; they change: see README's Cost."""

    lambda_gb_s: dict[str, float]
    lambda_request: float
    sqs_request: float
    dynamodb_write: float
    dynamodb_read: float
    s3_put: float
    s3_get: float
    kms_request: float
    s3_gets_per_segment: int

    @classmethod
    def from_raw(cls, raw: dict[str, Any]) -> Pricing:
        values = {f: raw[f] for f in cls.__dataclass_fields__}
        values["lambda_gb_s"] = {arch: float(price) for arch, price in raw["lambda_gb_s"].items()}
        values["s3_gets_per_segment"] = int(raw["s3_gets_per_segment"])
        return cls(**{k: (v if isinstance(v, dict | int) else float(v)) for k, v in values.items()})


@dataclass(frozen=True)
class Limits:
    """What an upload may be; ingest (and `vsr plan`) refuse anything outside with a user-facing reason."""

    max_input_bytes: int
    max_duration_s: float
    max_frames: int
    max_input_pixels: int
    max_output_pixels: int
    max_job_cost_usd: float

    @classmethod
    def from_raw(cls, raw: dict[str, Any]) -> Limits:
        return cls(
            max_input_bytes=int(raw["max_input_bytes"]),
            max_duration_s=float(raw["max_duration_s"]),
            max_frames=int(raw["max_frames"]),
            max_input_pixels=int(raw["max_input_pixels"]),
            max_output_pixels=int(raw["max_output_pixels"]),
            max_job_cost_usd=float(raw["max_job_cost_usd"]),
        )


@dataclass(frozen=True)
class DeliveryRetry:
    """A bounded retry with exponential backoff: `attempts` tries in all, waiting `first_s`, then twice as long
    each time, at most `max_s`, between them (`vsr serve`'s outbox deliveries)."""

    attempts: int
    first_s: float
    max_s: float

    def delay_after(self, attempt: int) -> float | None:
        """Seconds to wait after failed attempt number `attempt` (1-based); None: that was the last one."""
        if attempt >= self.attempts:
            return None
        return min(self.max_s, self.first_s * 2 ** (attempt - 1))


@dataclass(frozen=True)
class ApiSettings:
    """The upload API (vsr.web): presigned URL lifetimes, when an upload becomes multipart, list pages, and the
    deployed stage's throttling (terraform/api.tf reads the same section)."""

    upload_url_expiry_s: int
    download_url_expiry_s: int
    multipart_part_bytes: int  # a file above this is uploaded in parts of this size (S3: 5 MiB to 5 GiB)
    page_size: int
    max_page_size: int
    max_body_bytes: int

    @classmethod
    def from_raw(cls, raw: dict[str, Any]) -> ApiSettings:
        return cls(**{f.name: int(raw[f.name]) for f in fields(cls)})


@dataclass(frozen=True)
class FunctionSizes:
    """Memory of the three functions (what Lambda bills by) and the deployed architecture."""

    architecture: str
    ingest_mb: int
    worker_mb: int
    assemble_mb: int


TIERS = ("lambda", "gpu")  # worker tiers: Lambda CPUs (always deployed) and the opt-in ECS GPU fleet


@dataclass(frozen=True)
class GpuInstance:
    """One GPU instance type the fleet may launch; `effective_tflops` is the model's sustained rate on its GPU
    (an assumption unless docs/planning.md says it was measured)."""

    name: str
    gpu: str
    vcpus: int
    memory_mb: int
    hourly_usd: float
    effective_tflops: float


@dataclass(frozen=True)
class GpuTier:
    """The ECS GPU fleet as the planner and `vsr worker` see it (settings `gpu`; Terraform reads the same).

    Times are assumptions about AWS (docs/planning.md): an instance boots, joins the cluster and pulls the image
    in `boot_s` when the fleet is at zero; a task on a running instance starts in `task_start_s`; the scaling
    alarm reacts after `scale_out_s`; an idle fleet is billed `scale_in_idle_s` more before it scales to zero.
    """

    enabled: bool
    instance: GpuInstance  # the type the planner prices (the fleet may launch any of `instance_types`)
    instance_types: tuple[GpuInstance, ...]
    max_tasks: int
    boot_s: float
    task_start_s: float
    scale_out_s: float
    scale_in_idle_s: float
    min_billed_s: float
    segment_work_s: float  # target seconds of GPU work per segment (the heartbeat keeps it invisible meanwhile)
    segment_bytes_per_output_pixel: float  # lossless segment size estimate, for the disk limit
    disk_bytes: int
    disk_budget_fraction: float  # of the task's disk one segment's files may use
    visibility_timeout_s: int
    max_receive_count: int
    poll_wait_s: int
    drain_s: float  # on SIGTERM, a running segment may finish within this; else it is released
    providers: tuple[str, ...]

    @classmethod
    def from_raw(cls, raw: dict[str, Any]) -> GpuTier:
        types = tuple(
            GpuInstance(
                name=name,
                gpu=str(spec["gpu"]),
                vcpus=int(spec["vcpus"]),
                memory_mb=int(spec["memory_mb"]),
                hourly_usd=float(spec["hourly_usd"]),
                effective_tflops=float(spec["effective_tflops"]),
            )
            for name, spec in raw["instance_types"].items()
        )
        planned = next((t for t in types if t.name == raw["planned_instance_type"]), None)
        if planned is None:
            raise ValueError(
                f"settings gpu.planned_instance_type {raw['planned_instance_type']!r} is not in instance_types"
            )
        return cls(
            enabled=bool(raw["enabled"]),
            instance=planned,
            instance_types=types,
            max_tasks=int(raw["max_tasks"]),
            boot_s=float(raw["boot_s"]),
            task_start_s=float(raw["task_start_s"]),
            scale_out_s=float(raw["scale_out_s"]),
            scale_in_idle_s=float(raw["scale_in_idle_s"]),
            min_billed_s=float(raw["min_billed_s"]),
            segment_work_s=float(raw["segment_work_s"]),
            segment_bytes_per_output_pixel=float(raw["segment_bytes_per_output_pixel"]),
            disk_bytes=int(raw["disk_gb"]) * 1024**3,
            disk_budget_fraction=float(raw["disk_budget_fraction"]),
            visibility_timeout_s=int(raw["visibility_timeout_s"]),
            max_receive_count=int(raw["max_receive_count"]),
            poll_wait_s=int(raw["poll_wait_s"]),
            drain_s=float(raw["drain_s"]),
            providers=tuple(str(p) for p in raw["providers"]),
        )

    def seconds_per_frame(self, width: int, height: int, macs_per_input_pixel: float) -> float:
        """GPU seconds for one frame at the planned instance's sustained rate (2 FLOPs per multiply-add)."""
        return 2.0 * macs_per_input_pixel * width * height / (self.instance.effective_tflops * 1e12)


@dataclass(frozen=True)
class InterpolationSettings:
    """Settings `interpolation`: the frame-interpolation model and the numbers its path uses."""

    model: str
    scale_lists: tuple[tuple[int, tuple[float, float, float]], ...]  # (max_pixels, 0 = any size; scale list)
    cut_threshold: float  # vsr.cuts score above which two neighbouring frames are a scene cut (measured)
    # a made frame's cost as the multiply-adds per source pixel of an SR model that runs as long on the same
    # engine (measured by bench-interpolate against the x2 model in the same run), so the planner prices it
    made_frame_macs_per_pixel: float
    max_output_fps: float
    max_output_pixel_rate: float

    @classmethod
    def from_raw(cls, raw: dict[str, Any]) -> InterpolationSettings:
        rules = tuple((int(r["max_pixels"]), tuple(float(s) for s in r["scale_list"])) for r in raw["scale_lists"])
        return cls(
            model=str(raw["model"]),
            scale_lists=rules,  # type: ignore[arg-type]
            cut_threshold=float(raw["cut_threshold"]),
            made_frame_macs_per_pixel=float(raw["made_frame_macs_per_pixel"]),
            max_output_fps=float(raw["max_output_fps"]),
            max_output_pixel_rate=float(raw["max_output_pixel_rate"]),
        )


@dataclass(frozen=True)
class Settings:
    raw: dict[str, Any]

    @property
    def name_prefix(self) -> str:
        return str(self.raw["name_prefix"])

    # --- model -------------------------------------------------------------------------------------
    @property
    def model_name(self) -> str:
        return str(self.raw["model"]["name"])

    @property
    def tile(self) -> int:
        return int(self.raw["model"]["tile"])

    @property
    def interpolation(self) -> InterpolationSettings:
        return InterpolationSettings.from_raw(self.raw["interpolation"])

    @property
    def tile_overlap(self) -> int:
        return int(self.raw["model"]["tile_overlap"])

    @property
    def int8_guard(self) -> Int8Guard:
        return Int8Guard.from_raw(self.raw["model"]["int8_guard"])

    # --- functions and queues ----------------------------------------------------------------------
    @property
    def lambda_runtime(self) -> str:
        """The Lambda runtime every function and the layer use (Terraform's `runtime`), e.g. python3.13."""
        return str(self.raw["lambda"]["runtime"])

    @property
    def lambda_python_version(self) -> str:
        """The CPython version of that runtime ("3.13"): the layer's wheels are built for it."""
        runtime = self.lambda_runtime
        if not runtime.startswith("python"):
            raise ValueError(f"lambda.runtime {runtime!r} is not a Python runtime")
        return runtime.removeprefix("python")

    @property
    def lambda_handler(self) -> str:
        """Terraform's handler string for every function: `module.function` inside the function's zip."""
        return str(self.raw["lambda"]["handler"])

    def function(self, name: str) -> FunctionSettings:
        return FunctionSettings(**self.raw["functions"][name])

    def visibility_timeout_s(self, consumer: str) -> int:
        """AWS requires a queue's visibility timeout >= 6x its consuming function's timeout."""
        return int(self.raw["queues"]["visibility_timeout_factor"]) * self.function(consumer).timeout_s

    @property
    def ingest_max_receive_count(self) -> int:
        return int(self.raw["queues"]["ingest_max_receive_count"])

    @property
    def segment_max_receive_count(self) -> int:
        return int(self.raw["queues"]["segment_max_receive_count"])

    @property
    def worker_reserved_concurrency(self) -> int:
        return int(self.raw["functions"]["worker"]["reserved_concurrency"])

    @property
    def worker_max_concurrency(self) -> int:
        return int(self.raw["queues"]["worker_max_concurrency"])

    def event_source(self, function: str) -> dict[str, int]:
        """Event source mapping knobs (batch size, stream retries) for `function`; Terraform reads the same."""
        return {key: int(value) for key, value in self.raw["event_sources"][function].items()}

    @property
    def visibility_extension_s(self) -> int:
        return int(self.raw["queues"]["visibility_extension_s"])

    def retry_policy(self, consumer: str) -> RetryPolicy:
        """How a failed attempt of `consumer` ("ingest" | "worker") is retried: hidden for the next backoff of
        `queues.retry_backoff_s` (jittered by `queues.retry_jitter`), up to the queue's maxReceiveCount."""
        queues = self.raw["queues"]
        attempts = self.ingest_max_receive_count if consumer == "ingest" else self.segment_max_receive_count
        return RetryPolicy(
            backoff_s=tuple(int(s) for s in queues["retry_backoff_s"]),
            jitter=float(queues["retry_jitter"]),
            max_attempts=attempts,
        )

    # --- segment planning --------------------------------------------------------------------------
    @property
    def architecture(self) -> str:
        """The Lambda architecture prices are read for (Terraform passes its `architecture` variable here)."""
        return str(self.raw["architecture"])

    @property
    def segment_policy(self) -> SegmentPolicy:
        return SegmentPolicy.from_raw(self.raw["segments"])

    def worker_vcpus(self) -> float:
        return self.function_vcpus("worker")

    def function_vcpus(self, name: str) -> float:
        """vCPUs Lambda gives a function of its memory size (one per `segments.mb_per_vcpu`, up to the cap)."""
        seg = self.raw["segments"]
        return min(float(seg["max_vcpus"]), self.function(name).memory_mb / float(seg["mb_per_vcpu"]))

    @property
    def worker_capacity(self) -> WorkerCapacity:
        worker = self.function("worker")
        return WorkerCapacity(
            vcpus=self.worker_vcpus(),
            gflops_per_vcpu=float(self.raw["segments"]["gflops_per_vcpu"]),
            memory_mb=worker.memory_mb,
            timeout_s=worker.timeout_s,
            concurrency=min(self.worker_reserved_concurrency, self.worker_max_concurrency),
        )

    @property
    def latency(self) -> LatencyModel:
        return LatencyModel.from_raw(self.raw["latency"])

    @property
    def pricing(self) -> Pricing:
        return Pricing.from_raw(self.raw["pricing"])

    @property
    def function_sizes(self) -> FunctionSizes:
        return FunctionSizes(
            architecture=self.architecture,
            ingest_mb=self.function("ingest").memory_mb,
            worker_mb=self.function("worker").memory_mb,
            assemble_mb=self.function("assemble").memory_mb,
        )

    # --- encoding, limits, jobs --------------------------------------------------------------------

    @property
    def limits(self) -> Limits:
        """The Lambda tier's limits (settings `limits`): what every deployment has."""
        return self.limits_for("lambda")

    def limits_for(self, tier: str) -> Limits:
        """A worker tier's limits: settings `limits`, with the GPU fleet's own `gpu.limits` over them (longer
        videos, a higher cost limit: a film is hours of GPU time). One block per tier, read by nothing else."""
        if tier not in TIERS:
            raise ValueError(f"unknown worker tier {tier!r}; expected one of {', '.join(TIERS)}")
        raw = self.raw["limits"]
        if tier == "gpu":
            raw = deep_merge(raw, self.raw["gpu"].get("limits", {}))
        return Limits.from_raw(raw)

    def intake_limits(self) -> Limits:
        """The most permissive limits over this deployment's tiers: what an upload is checked against before
        it is probed (its size), when the tier is not known yet."""
        tiers = [self.limits_for(t) for t in self.enabled_tiers()]
        return max(tiers, key=lambda limits: limits.max_input_bytes)

    @property
    def job_ttl_s(self) -> int:
        return int(self.raw["jobs"]["ttl_days"]) * 86400

    @property
    def progress_interval_s(self) -> float:
        """How often a worker writes its segment's frame count to the job (people follow jobs by it)."""
        return float(self.raw["jobs"]["progress_interval_s"])

    @property
    def delivery_retry(self) -> DeliveryRetry:
        """How `vsr serve` retries a failed outbox delivery before it writes `<name>.delivery-error.json`."""
        raw = self.raw["serve"]
        return DeliveryRetry(
            attempts=int(raw["delivery_attempts"]),
            first_s=float(raw["delivery_backoff_s"]),
            max_s=float(raw["delivery_backoff_max_s"]),
        )

    @property
    def api(self) -> ApiSettings:
        return ApiSettings.from_raw(self.raw["api"])

    @property
    def assembly_lease_s(self) -> int:
        return int(self.raw["jobs"]["assembly_lease_s"])

    def segment_window(self, tier: str = "lambda") -> int:
        """Segment messages of one job in the queue at a time (0: all of them): segments.window_per_worker times
        the tier's segment queue concurrency (Lambda's event source maximum, or the fleet's task maximum), so one
        job can still keep every worker busy while a later job's segments queue behind only that window, not
        behind the whole of a long job."""
        concurrency = self.gpu.max_tasks if tier == "gpu" else self.worker_max_concurrency
        return max(0, self.segment_policy.window_per_worker * concurrency)

    @property
    def encode_settings(self) -> EncodeSettings:
        raw = self.raw["encode"]
        return EncodeSettings(
            codec=str(raw["codec"]),
            crf=int(raw["crf"]),
            preset=str(raw["preset"]),
            join=str(raw.get("join", "remux")),
            segment_crf=int(raw.get("segment_crf", raw["crf"])),
            reencode_max_mpix=self.reencode_max_megapixels(),
            fragment_primer_frames=int(raw.get("fragment_primer_frames", 0)),
        )

    def encode_settings_for(self, codec: str) -> EncodeSettings:
        """`encode_settings` with the re-encode limit of a job delivered in `codec` (its encoder's speed)."""
        return self.encode_settings.replace(reencode_max_mpix=self.reencode_max_megapixels(codec))

    @property
    def output_model(self) -> OutputModel:
        """The delivery's bytes per output frame and megapixel (bench/bench_output_size.py) and the margin a
        prediction of a job's output size gets (vsr.assembly_path)."""
        raw = self.raw["encode"]
        return OutputModel(
            bytes_per_output_mpix=float(raw["delivery_bytes_per_output_mpix"]),
            margin=float(raw["output_size_margin"]),
        )

    def assembly_capacity(self, reencode: bool) -> AssemblyCapacity:
        """What the faststart join can hold: the assembler's ephemeral storage (what Terraform deploys) with
        its headroom, and the outputs it keeps there at once (2 when it re-encodes the joins, else 1)."""
        storage = self.function("assemble").ephemeral_storage_mb * 1024**2
        return AssemblyCapacity(
            faststart_disk_bytes=int(storage * ASSEMBLER_DISK_HEADROOM), faststart_copies=2 if reencode else 1
        )

    @property
    def assembly_work(self) -> AssemblyWork:
        return self.assembly_work_for("h264")

    def assembly_work_for(self, codec: str) -> AssemblyWork:
        """The assembler's work for a job delivered in `codec`: its one delivery encode runs at that encoder's
        measured speed (settings delivery.codecs.<codec>.encode_mpix_per_vcpu_s, `make bench-encode`)."""
        vcpus = self.function_vcpus("assemble")
        latency = self.latency
        check_speedup = 1.0 + max(0.0, vcpus - 1.0) * latency.quality_parallel_efficiency
        return AssemblyWork(
            reencode=str(self.raw["encode"].get("join", "remux")) == "reencode",
            reencode_s_per_output_mpix=1.0 / (self.delivery_codec(codec).encode_mpix_per_vcpu_s * vcpus),
            reencode_max_mpix=self.reencode_max_megapixels(codec),
            quality_sample_pairs=self.quality_sample_pairs,
            quality_budget_s=self.quality_budget_s,
            quality_s_per_pair_mpix=latency.quality_cpu_s_per_pair_mpix / check_speedup,
        )

    def reencode_max_megapixels(self, codec: str = "h264") -> float:
        """Output megapixels the assembler can decode and encode once (seamless joins) within its share of
        the function timeout (`segments.work_budget_fraction`, like the workers), at the measured speed of
        the delivery encoder (bench: lossless segments -> the codec's default settings)."""
        seg = self.raw["segments"]
        assemble = self.function("assemble")
        vcpus = self.function_vcpus("assemble")
        rate = self.delivery_codec(codec).encode_mpix_per_vcpu_s
        return rate * vcpus * assemble.timeout_s * float(seg["work_budget_fraction"])

    # --- delivery formats (vsr.media.profiles) -------------------------------------------------------
    def delivery_codec(self, codec: str) -> CodecSettings:
        """One delivery codec's named settings; H.264's CRF, preset and speed are `encode`'s (one number each)."""
        codecs = self.raw["delivery"]["codecs"]
        if codec not in codecs:
            raise ValueError(f"unknown delivery codec {codec!r}; settings delivery.codecs has {', '.join(codecs)}")
        raw = codecs[codec]
        if codec == "h264":
            encode = self.raw["encode"]
            raw = {**raw, "crf": encode["crf"], "preset": encode["preset"]}
            raw.setdefault("encode_mpix_per_vcpu_s", encode["reencode_mpix_per_vcpu_s"])

        def opt(key: str) -> Any:
            return raw.get(key)

        return CodecSettings(
            codec=codec,
            encoder=str(raw["encoder"]),
            nvenc=None if opt("nvenc") is None else str(raw["nvenc"]),
            container=str(raw["container"]),
            crf=None if opt("crf") is None else int(raw["crf"]),
            preset=None if opt("preset") is None else str(raw["preset"]),
            profile=None if opt("profile") is None else str(raw["profile"]),
            bit_depth=None if opt("bit_depth") is None else int(raw["bit_depth"]),
            nvenc_cq=None if opt("nvenc_cq") is None else int(raw["nvenc_cq"]),
            nvenc_preset=str(raw.get("nvenc_preset", "p5")),
            encode_mpix_per_vcpu_s=float(raw["encode_mpix_per_vcpu_s"]),
            bytes_per_output_mpix=float(raw["bytes_per_output_mpix"]),
        )

    @property
    def delivery_codecs(self) -> dict[str, CodecSettings]:
        return {name: self.delivery_codec(name) for name in self.raw["delivery"]["codecs"]}

    @property
    def delivery_default_codec(self) -> str:
        """What a job without `--codec` / `vsr-codec` gets (auto: by the source's depth and transfer)."""
        return str(self.raw["delivery"].get("default_codec", "auto"))

    @property
    def delivery_nvenc(self) -> str:
        """auto: encode with NVENC where it opens (a GPU instance), else software; off: always software."""
        mode = str(self.raw["delivery"].get("nvenc", "auto"))
        if mode not in NVENC_MODES:
            raise ValueError(f'settings delivery.nvenc is "{mode}"; expected one of {", ".join(NVENC_MODES)}')
        return mode

    # --- quality check in every job ------------------------------------------------------------------
    @property
    def quality_sample_pairs(self) -> int:
        """Interior frame pairs the assembly measures besides every pair across a segment join."""
        return int(self.raw["quality"]["sample_pairs"])

    @property
    def sidecar_budget_s(self) -> float:
        """Time the fragmented path's assembler may spend reading the source's subtitles (a Matroska or MPEG-TS
        source is read through, which a film of tens of GB would not finish inside the assembler's timeout)."""
        return float(self.raw["sidecars"]["budget_s"])

    @property
    def quality_budget_s(self) -> float:
        """Time the assembly may spend measuring; pairs left beyond it are counted as skipped."""
        return float(self.raw["quality"]["budget_s"])

    @property
    def precision(self) -> str:
        """fp32 | int8: int8 runs `<model>-int8` where that variant passed the fidelity gate, else fp32."""
        return str(self.raw["model"].get("precision", "fp32"))

    @property
    def gpu(self) -> GpuTier:
        return GpuTier.from_raw(self.raw["gpu"])

    def enabled_tiers(self) -> tuple[str, ...]:
        """The worker tiers this deployment has: Lambda always, the GPU fleet when settings gpu.enabled."""
        return TIERS if bool(self.raw["gpu"]["enabled"]) else ("lambda",)

    def providers(self, tier: str) -> tuple[str, ...]:
        """ONNX Runtime execution providers, in order of preference, for a worker of `tier`."""
        if tier not in TIERS:
            raise ValueError(f"unknown worker tier {tier!r}; expected one of {', '.join(TIERS)}")
        raw = self.raw["gpu"]["providers"] if tier == "gpu" else self.raw["lambda_providers"]
        return tuple(str(p) for p in raw)

    @property
    def geometry_changes(self) -> str:
        """scale | fail: what a mid-stream change of frame size, pixel format or SAR does (vsr.media.geometry)."""
        mode = str(self.raw.get("input", {}).get("geometry_changes", "scale"))
        if mode not in GEOMETRY_CHANGE_MODES:
            raise ValueError(
                f'settings input.geometry_changes is "{mode}"; expected one of {", ".join(GEOMETRY_CHANGE_MODES)}'
            )
        return mode

    @property
    def deinterlace(self) -> str:
        """auto | on | off: whether interlaced sources are deinterlaced (bwdif) before the model
        (vsr.media.interlace); auto follows the detection (field order confirmed by idet)."""
        mode = str(self.raw.get("input", {}).get("deinterlace", "auto"))
        if mode not in DEINTERLACE_MODES:
            raise ValueError(f'settings input.deinterlace is "{mode}"; expected one of {", ".join(DEINTERLACE_MODES)}')
        return mode

    @property
    def deinterlace_rate(self) -> str:
        """frame | field: what a deinterlaced source becomes (vsr.media.interlace): frame keeps one frame per
        source frame (25i -> 25p); field makes one per field (25i -> 50p, bwdif send_field, timestamps doubled)."""
        rate = str(self.raw.get("input", {}).get("deinterlace_rate", "frame"))
        if rate not in DEINTERLACE_RATES:
            raise ValueError(
                f'settings input.deinterlace_rate is "{rate}"; expected one of {", ".join(DEINTERLACE_RATES)}'
            )
        return rate

    @property
    def idet_frames(self) -> int:
        """Frames from the start that FFmpeg's idet judges to confirm (or refute) the stream's field flags."""
        return int(self.raw.get("input", {}).get("idet_frames", 24))

    @property
    def temporal(self) -> str:
        """off | flow: flow-guided stabilisation of the output (vsr.quality.stabilise); off by default (README)."""
        mode = str(self.raw["model"].get("temporal", "off"))
        if mode not in TEMPORAL_MODES:
            raise ValueError(f'settings model.temporal is "{mode}"; expected one of {", ".join(TEMPORAL_MODES)}')
        return mode


def load_assembly_filter() -> dict[str, Any]:
    """The DynamoDB stream filter that fires assembly; Terraform reads the same file."""
    return json.loads(ASSEMBLY_FILTER_FILE.read_text())


@cache
def _load(file: str, overrides: str) -> Settings:
    raw = json.loads(Path(file).read_text())
    if overrides:
        raw = deep_merge(raw, json.loads(overrides))
    return Settings(raw=raw)


def get_settings() -> Settings:
    """Settings for this process (cached per distinct environment)."""
    return _load(os.environ.get("VSR_SETTINGS_FILE", str(SETTINGS_FILE)), os.environ.get("VSR_SETTINGS_OVERRIDES", ""))
