"""The local stream dispatcher's event filter: the assembly filter file must fire exactly when remaining hits 0."""

from __future__ import annotations

from typing import Any

import pytest

from vsr.local.filters import matches
from vsr.settings import load_assembly_filter


def _record(event: str, new: int | None, old: int | None) -> dict[str, Any]:
    dynamodb: dict[str, Any] = {"Keys": {"job_id": {"S": "j"}}}
    if new is not None:
        dynamodb["NewImage"] = {"job_id": {"S": "j"}, "remaining": {"N": str(new)}}
    if old is not None:
        dynamodb["OldImage"] = {"job_id": {"S": "j"}, "remaining": {"N": str(old)}}
    return {"eventName": event, "eventSource": "aws:dynamodb", "dynamodb": dynamodb}


@pytest.mark.parametrize(
    ("record", "expected"),
    [
        (_record("MODIFY", 0, 1), True),  # the last segment counted: assemble
        (_record("MODIFY", 0, 5), True),
        (_record("MODIFY", 1, 2), False),  # still segments to go
        (_record("MODIFY", 0, 0), False),  # a later update of a finished job (lease, COMPLETE) must not re-fire
        (_record("INSERT", 0, None), False),  # moto emits INSERTs for creating updates; never assemble on those
        (_record("MODIFY", 0, None), False),  # anything-but needs the field to exist
        (_record("REMOVE", None, 0), False),  # TTL expiry
    ],
)
def test_assembly_filter_fires_only_when_remaining_reaches_zero(record: dict[str, Any], expected: bool) -> None:
    assert matches(load_assembly_filter(), record) is expected


def test_numbers_are_matched_as_strings() -> None:
    assert matches({"n": ["0"]}, {"n": 0})
    assert matches({"n": [0]}, {"n": "0"})
    assert not matches({"n": ["0"]}, {"n": "00"})


def test_nested_objects_and_value_lists() -> None:
    pattern = {"a": {"b": ["x", "y"]}, "c": [{"anything-but": ["no", "never"]}]}
    assert matches(pattern, {"a": {"b": "y", "extra": 1}, "c": "yes"})
    assert not matches(pattern, {"a": {"b": "z"}, "c": "yes"})
    assert not matches(pattern, {"a": {"b": "x"}, "c": "never"})
    assert not matches(pattern, {"a": "x", "c": "yes"})  # an object pattern needs an object
    assert not matches(pattern, {"a": {"b": {"nested": "x"}}, "c": "yes"})  # a leaf pattern needs a leaf
    assert matches({"c": [{"anything-but": "no"}]}, {"c": "yes"})  # a single excluded value is allowed too


def test_unsupported_operators_fail_loudly() -> None:
    with pytest.raises(ValueError):
        matches({"n": [{"numeric": [">", 0]}]}, {"n": 1})
    with pytest.raises(ValueError):
        matches({"n": "0"}, {"n": "0"})
