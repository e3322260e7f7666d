"""The subset of Lambda event filtering (EventBridge patterns) that the assembly stream filter uses.

Lambda applies `FilterCriteria` to each stream record before invoking the function; locally the stream
dispatcher does the same with this matcher so the one filter file (`config/assembly_filter.json`) decides
for both. Supported: nested objects, lists of allowed exact values, and `{"anything-but": [...]}`.
Leaves are compared as strings, as Lambda does for DynamoDB's string-encoded numbers (`{"N": "0"}`).
Anything else in a pattern raises, so an unsupported pattern fails loudly instead of matching wrongly.
"""

from __future__ import annotations

from typing import Any

_MISSING = object()


def _leaf_matches(value: Any, allowed: list[Any]) -> bool:
    if value is _MISSING or isinstance(value, dict | list):
        return False
    text = str(value)
    for option in allowed:
        if isinstance(option, dict):
            if set(option) != {"anything-but"}:
                raise ValueError(f"unsupported filter operator: {sorted(option)}")
            excluded = option["anything-but"]
            excluded = excluded if isinstance(excluded, list) else [excluded]
            if text not in {str(item) for item in excluded}:
                return True
        elif option is None or isinstance(option, list):
            raise ValueError(f"unsupported filter value: {option!r}")
        elif text == str(option):
            return True
    return False


def matches(pattern: dict[str, Any], record: dict[str, Any]) -> bool:
    """True when `record` satisfies every field of `pattern` (fields absent from the pattern are ignored)."""
    for key, expected in pattern.items():
        value = record.get(key, _MISSING) if isinstance(record, dict) else _MISSING
        if isinstance(expected, dict):
            if not isinstance(value, dict) or not matches(expected, value):
                return False
        elif isinstance(expected, list):
            if not _leaf_matches(value, expected):
                return False
        else:
            raise ValueError(f"filter values must be objects or lists, got {expected!r} for {key!r}")
    return True
