"""Lambda entry point: S3 ObjectCreated notifications (delivered through the ingest SQS queue) -> one job per upload.

Thin by design: translate the AWS event into calls into the shared `vsr` package (the layer).
"""

from __future__ import annotations

from typing import Any

from vsr.pipeline import ingest


def handler(event: dict[str, Any], context: Any) -> dict[str, Any]:
    return ingest.handle_event(event, context)
