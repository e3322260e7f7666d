"""The Terraform configuration as python-hcl2 parses it: blocks by type and name, attributes unwrapped."""

from __future__ import annotations

import re
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any

import hcl2

ROOT = Path(__file__).resolve().parents[2]
TERRAFORM = ROOT / "terraform"


def unwrap(value: Any) -> Any:
    """python-hcl2 wraps some attribute values in one-element lists; blocks stay lists of dicts."""
    while isinstance(value, list) and len(value) == 1 and not isinstance(value[0], dict):
        value = value[0]
    return value


def as_list(value: Any) -> list[Any]:
    """A list-valued attribute (e.g. actions = [...]) as a flat list, however python-hcl2 wrapped it."""
    if isinstance(value, list) and len(value) == 1 and isinstance(value[0], list):
        return list(value[0])
    return list(value) if isinstance(value, list) else [value]


def expression(value: Any) -> str:
    """An attribute's expression text without the outer ${...}."""
    text = str(unwrap(value))
    match = re.fullmatch(r"\$\{(.*)\}", text, flags=re.DOTALL)
    return match.group(1) if match else text


def _unwrap_all(value: Any) -> Any:
    """Locals hold no blocks, so every one-element list around a value is python-hcl2's wrapping."""
    while isinstance(value, list) and len(value) == 1:
        value = value[0]
    if isinstance(value, dict):
        return {k: _unwrap_all(v) for k, v in value.items() if not k.startswith("__")}
    return value


@dataclass
class TerraformConfig:
    files: dict[str, dict[str, Any]]

    def _blocks(self, kind: str) -> list[dict[str, Any]]:
        return [block for parsed in self.files.values() for block in parsed.get(kind, [])]

    def resources(self, rtype: str) -> dict[str, dict[str, Any]]:
        return {name: body for block in self._blocks("resource") for name, body in block.get(rtype, {}).items()}

    def resource(self, rtype: str, name: str) -> dict[str, Any]:
        return self.resources(rtype)[name]

    def data(self, dtype: str) -> dict[str, dict[str, Any]]:
        return {name: body for block in self._blocks("data") for name, body in block.get(dtype, {}).items()}

    @property
    def locals(self) -> dict[str, Any]:
        merged: dict[str, Any] = {}
        for block in self._blocks("locals"):
            merged.update({k: _unwrap_all(v) for k, v in block.items() if not k.startswith("__")})
        return merged

    @property
    def variables(self) -> dict[str, dict[str, Any]]:
        return {name: body for block in self._blocks("variable") for name, body in block.items()}

    @property
    def outputs(self) -> dict[str, dict[str, Any]]:
        return {name: body for block in self._blocks("output") for name, body in block.items()}


def _strip_quotes(text: str) -> str:
    return text[1:-1] if len(text) >= 2 and text[0] == text[-1] == '"' else text


def normalise(value: Any) -> Any:
    """One shape across python-hcl2 versions: no quotes around labels or strings, no comment/meta keys.

    Older releases return `"${...}"`-free plain strings and wrap attributes in one-element lists; 8.x returns
    quoted strings and labels with `__is_block__` / `__comments__` markers unless told otherwise.
    """
    if isinstance(value, dict):
        return {_strip_quotes(k): normalise(v) for k, v in value.items() if not k.startswith("__")}
    if isinstance(value, list):
        return [normalise(v) for v in value]
    if isinstance(value, str):
        text = _strip_quotes(value)
        match = re.fullmatch(r'\$\{"(.*)"\}', text, flags=re.DOTALL)  # old style: ${"${x}:*"} for "${x}:*"
        return match.group(1) if match else text
    return value


def _parse(handle: Any) -> dict[str, Any]:
    options_type = getattr(hcl2, "SerializationOptions", None)
    if options_type is None:
        try:
            from hcl2.utils import SerializationOptions as options_type  # type: ignore[no-redef]
        except ImportError:
            options_type = None
    if options_type is not None:
        options = options_type(with_comments=False, with_meta=False, explicit_blocks=False, strip_string_quotes=True)
        return hcl2.load(handle, serialization_options=options)
    return hcl2.load(handle)


@cache
def load() -> TerraformConfig:
    files = {}
    for path in sorted(TERRAFORM.glob("*.tf")):
        with path.open() as handle:
            files[path.name] = normalise(_parse(handle))
    return TerraformConfig(files)


def compact(text: Any) -> str:
    """An expression without whitespace, `null` spelled one way (for comparisons across parser versions)."""
    return re.sub(r"\s+", "", str(text)).replace("None", "null")


def statements(policy_document: dict[str, Any]) -> list[dict[str, Any]]:
    """Statements of an aws_iam_policy_document with actions/resources as flat lists of strings."""
    result = []
    # `dynamic "statement"` blocks (optional grants: the GPU queue, job events) are left out here; their tests
    # read them, and the rendered policies are checked after a real apply (test_terraform_moto)
    for statement in policy_document.get("statement", []):
        result.append(
            {
                "sid": unwrap(statement.get("sid", "")),
                "effect": unwrap(statement.get("effect", "Allow")),
                "actions": as_list(statement.get("actions", [])),
                "resources": as_list(statement.get("resources", [])),
                "condition": statement.get("condition", []),
            }
        )
    return result


def dynamic_statements(policy_document: dict[str, Any]) -> list[dict[str, Any]]:
    """The `dynamic "statement"` blocks of a policy document (optional grants), as (for_each, content) dicts."""
    found = []
    for dynamic in policy_document.get("dynamic", []):
        blocks = dynamic.get("statement")
        for block in [blocks] if isinstance(blocks, dict) else list(blocks or []):
            contents = block.get("content")
            for content in [contents] if isinstance(contents, dict) else list(contents or []):
                found.append({"for_each": block.get("for_each"), "content": content})
    return found


def all_statements(policy_document: dict[str, Any]) -> list[dict[str, Any]]:
    """Fixed and optional statements alike (an optional grant must still be justified and scoped)."""
    optional = {"statement": [d["content"] for d in dynamic_statements(policy_document)]}
    return statements(policy_document) + statements(optional)
