"""Names of the AWS resources a stage talks to, from the environment Terraform (or `vsr run`) sets.

`Resources.from_env()` reads them in a Lambda; `Resources.to_env()` gives the same variables back so the
local runtime can set them for the handlers it calls.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, fields

from vsr.errors import VsrError

# field name -> environment variable
ENV_VARS: dict[str, str] = {
    "input_bucket": "VSR_INPUT_BUCKET",
    "output_bucket": "VSR_OUTPUT_BUCKET",
    "work_bucket": "VSR_WORK_BUCKET",
    "models_bucket": "VSR_MODELS_BUCKET",
    "ingest_queue_url": "VSR_INGEST_QUEUE_URL",
    "segment_queue_url": "VSR_SEGMENT_QUEUE_URL",
    "table": "VSR_TABLE",
    "model_key": "VSR_MODEL_KEY",
    # the model's scale and cost, from the converter's sidecar, so ingest never reads the model bucket
    "model_scale": "VSR_MODEL_SCALE",
    "model_macs_per_pixel": "VSR_MODEL_MACS_PER_PIXEL",
}


class ConfigurationError(VsrError):
    """The deployment is missing a setting: an operator must fix it (not the user's fault, not retryable)."""

    code = "configuration"


@dataclass(frozen=True)
class Resources:
    input_bucket: str = ""
    output_bucket: str = ""
    work_bucket: str = ""
    models_bucket: str = ""
    ingest_queue_url: str = ""
    segment_queue_url: str = ""
    table: str = ""
    model_key: str = ""
    model_scale: str = ""
    model_macs_per_pixel: str = ""

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> Resources:
        env = os.environ if environ is None else environ
        return cls(**{name: env.get(var, "") for name, var in ENV_VARS.items()})

    def to_env(self) -> dict[str, str]:
        """The environment variables describing these resources (empty values left out)."""
        return {ENV_VARS[f.name]: getattr(self, f.name) for f in fields(self) if getattr(self, f.name)}

    def require(self, *names: str) -> Resources:
        """Fail early and clearly when a stage runs without the resources it needs."""
        missing = [ENV_VARS[name] for name in names if not getattr(self, name)]
        if missing:
            raise ConfigurationError(f"missing environment variables: {', '.join(missing)}")
        return self
