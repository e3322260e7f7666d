"""What each Lambda function runs: `services/<function>/handler.py` delegates to exactly these.

The local runtime imports them from the installed `vsr` package, so `vsr run` works from any directory and
from a plain `pip install`, not only from a checkout; tests/unit/test_entrypoints.py checks that each
services handler delegates to the function named here.
"""

from __future__ import annotations

FUNCTIONS = ("ingest", "worker", "assemble")

# function -> "module:callable" taking (event, context), as Lambda calls `handler.handler`
HANDLERS: dict[str, str] = {name: f"vsr.pipeline.{name}:handle_event" for name in FUNCTIONS}
