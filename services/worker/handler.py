"""Lambda entry point: One segment message from the segment queue -> decode, upscale, encode, upload, count.

Thin by design: translate the AWS event into calls into the shared `vsr` package (the layer).
"""

from __future__ import annotations

from typing import Any

from vsr.pipeline import worker


def handler(event: dict[str, Any], context: Any) -> dict[str, Any]:
    return worker.handle_event(event, context)
