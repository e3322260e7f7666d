"""Fault injection for the local runtime's tests, applied from outside the production code paths.

A fault plan is handed to function *containers* (the child processes that host the real handlers), never to
a handler: the container patches one dependency of the handler (by default the engine's `Upscaler.upscale`,
so a worker fails mid-segment, after the decode, inside the handler's own error handling) and arms it only
for the invocations a rule names. Production code has no test hooks, and `vsr run` never passes a plan.

Plan (JSON):
    {"marker_dir": "/tmp/x",                              # where "block" writes its marker files
     "target": "vsr.engine:Upscaler.upscale",             # default target of the rules, "module:attr.attr"
     "rules": [{"segment": 1, "action": "raise", "attempts": null, "reason": "..."},
               {"segment": 0, "action": "block", "attempts": [1], "block_s": 120},
               {"function": "assemble", "target": "vsr.pipeline.assemble:join_segments",
                "action": "block", "once": true}]}
- `function`: which function's containers get the rule (default "worker");
- `segment`: the segment index of the SQS message (null: any invocation, e.g. a stream record);
- `attempts`: SQS ApproximateReceiveCount values (1 = first delivery); null means every delivery;
- `fraction`: only that share of the matching invocations, chosen by a hash of the message id (or stream
  event id) and the rule's position, so a load test can fail "about 10% of invocations" reproducibly;
- `raise` raises TransientError(reason), what a flaky dependency does; `block` writes
  `<marker_dir>/blocked-<function>-seg<i>-pid<pid>` and hangs, so a test can SIGKILL that container;
  with `once`, only while no such marker exists yet (the replacement container then passes).
"""

from __future__ import annotations

import hashlib
import importlib
import json
import os
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from vsr.errors import TransientError

DEFAULT_TARGET = "vsr.engine:Upscaler.upscale"
ACTIONS = ("raise", "block")


@dataclass(frozen=True)
class FaultRule:
    action: str  # "raise" | "block"
    segment: int | None = None
    attempts: tuple[int, ...] | None = None
    function: str = "worker"
    target: str = DEFAULT_TARGET
    reason: str = "injected fault"
    block_s: float = 300.0
    once: bool = False
    fraction: float | None = None

    def applies(self, segment: int | None, attempt: int, draw: float = 0.0) -> bool:
        """`draw` is the invocation's uniform number in [0, 1) for this rule (see `_draw`)."""
        return (
            (self.segment is None or segment == self.segment)
            and (self.attempts is None or attempt in self.attempts)
            and (self.fraction is None or draw < self.fraction)
        )

    def marker_prefix(self) -> str:
        return f"blocked-{self.function}-seg{'any' if self.segment is None else self.segment}-"


@dataclass(frozen=True)
class FaultPlan:
    rules: tuple[FaultRule, ...]
    marker_dir: str | None = None

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> FaultPlan:
        default_target = str(data.get("target", DEFAULT_TARGET))
        rules = []
        for rule in data.get("rules", []):
            if rule["action"] not in ACTIONS:
                raise ValueError(f"unknown fault action {rule['action']!r}")
            attempts = rule.get("attempts")
            segment = rule.get("segment")
            rules.append(
                FaultRule(
                    action=str(rule["action"]),
                    segment=None if segment is None else int(segment),
                    attempts=None if attempts is None else tuple(int(a) for a in attempts),
                    function=str(rule.get("function", "worker")),
                    target=str(rule.get("target", default_target)),
                    reason=str(rule.get("reason", "injected fault")),
                    block_s=float(rule.get("block_s", 300.0)),
                    once=bool(rule.get("once", False)),
                    fraction=None if rule.get("fraction") is None else float(rule["fraction"]),
                )
            )
        return cls(rules=tuple(rules), marker_dir=data.get("marker_dir"))

    def for_function(self, function: str) -> FaultPlan | None:
        """The rules one function's containers get; None when there are none."""
        rules = tuple(rule for rule in self.rules if rule.function == function)
        return FaultPlan(rules=rules, marker_dir=self.marker_dir) if rules else None

    def to_json(self) -> str:
        return json.dumps(
            {
                "marker_dir": self.marker_dir,
                "rules": [
                    {**asdict(r), "attempts": None if r.attempts is None else list(r.attempts)} for r in self.rules
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
        index = None
        try:
            body = json.loads(record.get("body", "null"))
            index = segment_index(body) if isinstance(body, dict) else None
        except (TypeError, ValueError):
            pass
        attempt = int(record.get("attributes", {}).get("ApproximateReceiveCount", "1"))
        identity = str(record.get("messageId") or record.get("eventID") or "")
        for position, rule in enumerate(plan.rules):
            if rule.applies(index, attempt, _draw(identity, position)):
                return rule
    return None


def _draw(identity: str, position: int) -> float:
    """A uniform number in [0, 1) fixed by the message and the rule: the same delivery always draws the same."""
    digest = hashlib.sha256(f"{identity}:{position}".encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2**64


def _resolve_target(target: str) -> tuple[Any, str]:
    module_name, _, attr_path = target.partition(":")
    owner: Any = importlib.import_module(module_name)
    *parents, name = attr_path.split(".")
    for parent in parents:
        owner = getattr(owner, parent)
    return owner, name


def _block(plan: FaultPlan, rule: FaultRule) -> None:
    folder = Path(plan.marker_dir) if plan.marker_dir else None
    if folder is not None and rule.once and any(folder.glob(rule.marker_prefix() + "*")):
        return
    if folder is not None:
        (folder / f"{rule.marker_prefix()}pid{os.getpid()}").write_text(str(os.getpid()))
    time.sleep(rule.block_s)  # the injected fault is a hang; the test kills this process meanwhile


def install(plan: FaultPlan) -> None:
    """Patch every target of the plan so it misbehaves while a matching invocation is running."""
    for target in sorted({rule.target for rule in plan.rules}):
        owner, name = _resolve_target(target)
        original = getattr(owner, name)

        def faulty(*args: Any, _original: Any = original, _target: str = target, **kwargs: Any) -> Any:
            rule = _Armed.rule
            if rule is not None and rule.target == _target:
                if rule.action == "raise":
                    raise TransientError(rule.reason)
                _block(plan, rule)
            return _original(*args, **kwargs)

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
