"""Lambda entry point: the upload API (API Gateway HTTP API with a Cognito JWT authorizer) -> vsr.web.

Thin by design: the routes, validation and views are pure functions in the shared `vsr` package (the layer).
"""

from __future__ import annotations

from typing import Any

from vsr.web import lambda_api


def handler(event: dict[str, Any], context: Any) -> dict[str, Any]:
    return lambda_api.handle_event(event, context)
