"""Settings are resolved at the edges: no module below the stages reads them from the global."""

from __future__ import annotations

from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[2] / "shared" / "vsr"

# The layers that take plain arguments: media, models and engine, tiling, pure planning and simulation,
# the quality metrics, AWS adapters. Stages (vsr.pipeline.*), the CLI commands and the local runtime read
# settings and pass typed values down.
LEAF_MODULES = [
    "media",
    "models",
    "engine.py",
    "tiling.py",
    "segment.py",
    "planning.py",
    "simulation.py",
    "quality/metrics.py",
    "quality/temporal.py",
    "quality/blockflow.py",
    "quality/flow.py",
    "quality/jobcheck.py",
    "quality/preview.py",
    "aws",
    "keys.py",
    "local/names.py",
    "local/retries.py",
    "local/download.py",
]


def _files(entry: str) -> list[Path]:
    path = PACKAGE / entry
    return sorted(path.rglob("*.py")) if path.is_dir() else [path]


def test_no_module_below_the_stages_calls_get_settings() -> None:
    offenders = [
        str(path.relative_to(PACKAGE))
        for entry in LEAF_MODULES
        for path in _files(entry)
        if "get_settings(" in path.read_text()
    ]
    assert offenders == []


def test_the_leaf_list_names_real_modules() -> None:
    assert all((PACKAGE / entry).exists() for entry in LEAF_MODULES)
