"""Names of the AWS resources a stage talks to, from the environment Terraform (or `vsr run`) sets
(the variables are the deployment contract's, vsr.aws.deployment.ENV_VARS).

`Resources.from_env()` reads them in a Lambda; `Resources.to_env()` gives the same variables back so the
local runtime can set them for the handlers it calls.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, fields

from vsr.aws.deployment import ENV_VARS, WORKER_TIER_ENV
from vsr.errors import VsrError


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
    gpu_segment_queue_url: str = ""
    event_bus: str = ""
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


def worker_tier(environ: Mapping[str, str] | None = None) -> str:
    """The worker tier this process is (`VSR_WORKER_TIER`, set on the GPU fleet's task; Lambda by default)."""
    env = os.environ if environ is None else environ
    tier = env.get(WORKER_TIER_ENV, "").strip() or "lambda"
    if tier not in ("lambda", "gpu"):
        raise ConfigurationError(f"{WORKER_TIER_ENV}={tier!r}; expected lambda or gpu")
    return tier
