"""Each Lambda entry point (services/<function>/handler.py) delegates to exactly the function the local runtime
imports from the installed package (vsr.entrypoints), so `vsr run` exercises what Lambda runs."""

from __future__ import annotations

import importlib
import importlib.util
from pathlib import Path
from typing import Any

import pytest

from vsr.entrypoints import API_FUNCTION, FUNCTIONS, HANDLERS
from vsr.local.containers import _load_handler

SERVICES = Path(__file__).resolve().parents[2] / "services"


@pytest.mark.parametrize("function", [*FUNCTIONS, API_FUNCTION])
def test_services_handler_delegates_to_the_entrypoint(function: str, monkeypatch: pytest.MonkeyPatch) -> None:
    module_name, attribute = HANDLERS[function].split(":")
    seen: list[tuple[Any, Any]] = []

    def fake(event: Any, context: Any) -> dict[str, str]:
        seen.append((event, context))
        return {"from": function}

    monkeypatch.setattr(importlib.import_module(module_name), attribute, fake)
    handler = _load_handler(str(SERVICES / function / "handler.py"))
    assert handler({"Records": []}, "ctx") == {"from": function}
    assert seen == [({"Records": []}, "ctx")]


def test_the_runtime_loads_handlers_by_module_name() -> None:
    for function in (*FUNCTIONS, API_FUNCTION):
        assert callable(_load_handler(HANDLERS[function]))
