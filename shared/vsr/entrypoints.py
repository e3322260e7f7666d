"""What each Lambda function runs: `services/<function>/handler.py` delegates to exactly these.

The local runtime imports them from the installed `vsr` package, so `vsr run` works from any directory and
from a plain `pip install`, not only from a checkout; tests/unit/test_entrypoints.py checks that each
services handler delegates to the function named here.
"""

from __future__ import annotations

FUNCTIONS = ("ingest", "worker", "assemble")

# function -> "module:callable" taking (event, context), as Lambda calls `handler.handler`
HANDLERS: dict[str, str] = {name: f"vsr.pipeline.{name}:handle_event" for name in FUNCTIONS}
# The upload API (opt-in, terraform/api.tf): not a pipeline stage, so not in FUNCTIONS (no queue, no container).
API_FUNCTION = "api"
HANDLERS[API_FUNCTION] = "vsr.web.lambda_api:handle_event"
