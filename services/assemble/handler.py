"""Lambda entry point: DynamoDB stream record (filtered: remaining reached 0) -> join segments, restore audio.

Thin by design: translate the AWS event into calls into the shared `vsr` package (the layer).
"""

from __future__ import annotations

from typing import Any

from vsr.pipeline import assemble


def handler(event: dict[str, Any], context: Any) -> dict[str, Any]:
    return assemble.handle_event(event, context)
