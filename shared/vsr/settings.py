"""The one source of truth for tunables shared by Terraform and the local runtime.

`config/settings.json` is read by Terraform (`jsondecode(file(...))`) and by this module; derived values
(visibility timeouts, vCPUs per worker) are computed here and in `terraform/locals.tf` from the same numbers,
never typed twice. Tests and the local runtime may override values with `VSR_SETTINGS_OVERRIDES`
(a JSON object deep-merged over the file) or replace the file with `VSR_SETTINGS_FILE`.
"""

from __future__ import annotations

import copy
import json
import os
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any

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


@dataclass(frozen=True)
class FunctionSettings:
    timeout_s: int
    memory_mb: int
    ephemeral_storage_mb: int
    reserved_concurrency: int | None = None


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
    def tile_overlap(self) -> int:
        return int(self.raw["model"]["tile_overlap"])

    # --- functions and queues ----------------------------------------------------------------------
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

    # --- segment planning --------------------------------------------------------------------------
    @property
    def segments(self) -> dict[str, Any]:
        return dict(self.raw["segments"])

    def worker_vcpus(self) -> float:
        seg = self.raw["segments"]
        return min(float(seg["max_vcpus"]), self.function("worker").memory_mb / float(seg["mb_per_vcpu"]))

    # --- encoding, limits, jobs --------------------------------------------------------------------
    @property
    def encode(self) -> dict[str, Any]:
        return dict(self.raw["encode"])

    @property
    def limits(self) -> dict[str, Any]:
        return dict(self.raw["limits"])

    @property
    def job_ttl_s(self) -> int:
        return int(self.raw["jobs"]["ttl_days"]) * 86400

    @property
    def progress_interval_s(self) -> float:
        """How often a worker writes its segment's frame count to the job (people follow jobs by it)."""
        return float(self.raw["jobs"]["progress_interval_s"])

    @property
    def assembly_lease_s(self) -> int:
        return int(self.raw["jobs"]["assembly_lease_s"])

    @property
    def precision(self) -> str:
        """fp32 | int8: int8 runs `<model>-int8` where that variant passed the fidelity gate, else fp32."""
        return str(self.raw["model"].get("precision", "fp32"))


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
