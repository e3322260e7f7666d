"""Fault injection for the local runtime's tests, applied from outside the production code paths.

A fault plan is handed to a worker *container* (the child process that hosts the real handler), never to the
handler: the container patches one dependency of the handler (by default the engine's `Upscaler.upscale`,
so the failure happens mid-segment, after the decode, inside the handler's own error handling) and arms it
only for the segments and delivery attempts the plan names. Production code has no test hooks.

Plan (JSON):
    {"target": "vsr.engine:Upscaler.upscale",            # optional, "module:attr.attr"
     "marker_dir": "/tmp/x",                             # where "block" writes its marker file
     "rules": [{"segment": 1, "action": "raise", "attempts": null, "reason": "..."},
               {"segment": 0, "action": "block", "attempts": [1], "block_s": 120}]}
"raise" raises TransientError(reason) (what a flaky dependency does); "block" writes
`<marker_dir>/blocked-seg<i>-pid<pid>` and hangs, so a test can SIGKILL that container mid-segment.
`attempts` are SQS ApproximateReceiveCount values (1 = first delivery); null means every delivery.
"""

from __future__ import annotations

import importlib
import json
import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from vsr.errors import TransientError

DEFAULT_TARGET = "vsr.engine:Upscaler.upscale"


@dataclass(frozen=True)
class FaultRule:
    segment: int
    action: str  # "raise" | "block"
    attempts: tuple[int, ...] | None = None
    reason: str = "injected fault"
    block_s: float = 300.0

    def applies(self, segment: int | None, attempt: int) -> bool:
        return segment == self.segment and (self.attempts is None or attempt in self.attempts)


@dataclass(frozen=True)
class FaultPlan:
    rules: tuple[FaultRule, ...]
    target: str = DEFAULT_TARGET
    marker_dir: str | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> FaultPlan:
        rules = []
        for rule in data.get("rules", []):
            if rule["action"] not in ("raise", "block"):
                raise ValueError(f"unknown fault action {rule['action']!r}")
            attempts = rule.get("attempts")
            rules.append(
                FaultRule(
                    segment=int(rule["segment"]),
                    action=str(rule["action"]),
                    attempts=None if attempts is None else tuple(int(a) for a in attempts),
                    reason=str(rule.get("reason", "injected fault")),
                    block_s=float(rule.get("block_s", 300.0)),
                )
            )
        return cls(
            rules=tuple(rules), target=str(data.get("target", DEFAULT_TARGET)), marker_dir=data.get("marker_dir")
        )

    def to_json(self) -> str:
        return json.dumps(
            {
                "target": self.target,
                "marker_dir": self.marker_dir,
                "rules": [
                    {
                        "segment": r.segment,
                        "action": r.action,
                        "attempts": None if r.attempts is None else list(r.attempts),
                        "reason": r.reason,
                        "block_s": r.block_s,
                    }
                    for r in self.rules
                ],
            }
        )


class _Armed:
    """The rule armed for the running invocation. A plain global, not a ContextVar: the handler may run the
    patched dependency in its own threads, and a container runs one invocation at a time (like Lambda)."""

    rule: FaultRule | None = None


def segment_index(body: dict[str, Any]) -> int | None:
    """The segment index in a segment message (tolerates `segment` as an int or an object with `index`)."""
    for key in ("segment", "segment_index", "index"):
        value = body.get(key)
        if isinstance(value, dict) and "index" in value:
            return int(value["index"])
        if isinstance(value, int) and not isinstance(value, bool):
            return value
    return None


def _rule_for(plan: FaultPlan, event: dict[str, Any]) -> FaultRule | None:
    for record in event.get("Records", []):
        try:
            body = json.loads(record.get("body", ""))
        except (TypeError, ValueError):
            continue
        index = segment_index(body) if isinstance(body, dict) else None
        attempt = int(record.get("attributes", {}).get("ApproximateReceiveCount", "1"))
        for rule in plan.rules:
            if rule.applies(index, attempt):
                return rule
    return None


def _resolve_target(target: str) -> tuple[Any, str]:
    module_name, _, attr_path = target.partition(":")
    owner: Any = importlib.import_module(module_name)
    *parents, name = attr_path.split(".")
    for parent in parents:
        owner = getattr(owner, parent)
    return owner, name


def install(plan: FaultPlan) -> None:
    """Patch the plan's target so it misbehaves while a matching invocation is running."""
    owner, name = _resolve_target(plan.target)
    original = getattr(owner, name)

    def faulty(*args: Any, **kwargs: Any) -> Any:
        rule = _Armed.rule
        if rule is not None and rule.action == "raise":
            raise TransientError(rule.reason)
        if rule is not None and rule.action == "block":
            if plan.marker_dir:
                marker = Path(plan.marker_dir) / f"blocked-seg{rule.segment}-pid{os.getpid()}"
                marker.write_text(str(os.getpid()))
            time.sleep(rule.block_s)  # the injected fault is a hang; the test kills this process meanwhile
        return original(*args, **kwargs)

    setattr(owner, name, faulty)


def wrap_handler(
    handler: Callable[[dict[str, Any], Any], Any], plan: FaultPlan
) -> Callable[[dict[str, Any], Any], Any]:
    """Arm the plan's rule (if any) for the duration of one invocation of the real handler."""

    def wrapped(event: dict[str, Any], context: Any) -> Any:
        _Armed.rule = _rule_for(plan, event)
        try:
            return handler(event, context)
        finally:
            _Armed.rule = None

    return wrapped
