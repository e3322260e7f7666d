"""Each Lambda entry point (services/<function>/handler.py) delegates to exactly the function the local runtime
imports from the installed package (vsr.entrypoints), so `vsr run` exercises what Lambda runs."""

from __future__ import annotations

import importlib
import importlib.util
import sys
from pathlib import Path
from typing import Any

import pytest

from vsr.entrypoints import API_FUNCTION, FUNCTIONS, HANDLERS
from vsr.local.bootstrap import load_handler as _load_handler
from vsr.settings import get_settings

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


def test_lambda_handler_strings_resolve_as_the_runtime_does(monkeypatch: pytest.MonkeyPatch) -> None:
    """Terraform's handler string (settings lambda.handler) names a module found on sys.path, /var/task first on
    Lambda, and a function in it; the bootstrap resolves it the same way in the Lambda sandbox."""
    original = list(sys.path)
    for function in FUNCTIONS:
        monkeypatch.setattr(sys, "path", [str(SERVICES / function), *original])
        monkeypatch.delitem(sys.modules, "handler", raising=False)
        handler = _load_handler(get_settings().lambda_handler)
        assert callable(handler)
        assert Path(sys.modules["handler"].__file__).resolve() == (SERVICES / function / "handler.py").resolve()
    monkeypatch.delitem(sys.modules, "handler", raising=False)
    for bad in ("handler", ".handler", "handler."):
        with pytest.raises(ValueError, match=r"module\.function"):
            _load_handler(bad)
