"""The fragmented path's text subtitles and chapters, written as WebVTT beside the output (vsr.media.sidecars).

Advisory like the job's quality check: the video is already joined when this runs, so a source whose
subtitles cannot be read still delivers its video, and the report's `assembly.sidecars` says why.
Idempotent: the same source gives the same files under the same keys.
"""

from __future__ import annotations

from typing import Any

from vsr.logs import get_logger
from vsr.media import sidecars
from vsr.media.safety import Source
from vsr.pipeline import artifacts

log = get_logger(__name__)

VTT = "text/vtt; charset=utf-8"


def deliver(source: Source, subtitle_streams: int, bucket: str, video_key: str, budget_s: float) -> dict[str, Any]:
    """Write the source's text subtitle tracks and chapters as WebVTT beside `video_key`; the report block.
    Reading the subtitles stops after `budget_s` (settings sidecars.budget_s): the assembler's timeout holds."""
    block: dict[str, Any] = {"subtitles": [], "chapters": None, "subtitles_dropped": 0}
    try:
        tracks, images = sidecars.read_text_tracks(source, budget_s) if subtitle_streams else ([], 0)
        chapters = sidecars.read_chapters(source)
    except Exception as exc:  # advisory: the output is already whole
        log.warning("sidecars.failed", error=str(exc))
        return {**block, "subtitles_dropped": subtitle_streams, "error": str(exc)}
    block["subtitles_dropped"] = images + max(0, len(tracks) - artifacts.MAX_SIDECAR_TRACKS)
    for number, track in enumerate(tracks[: artifacts.MAX_SIDECAR_TRACKS], start=1):
        key = artifacts.subtitle_key(video_key, number, track.language)
        artifacts.put_text(bucket, key, sidecars.webvtt(track.cues), VTT)
        block["subtitles"].append(
            {
                "key": key,
                "source_stream": track.index,
                "codec": track.codec,
                "language": track.language,
                "title": track.title,
                "cues": len(track.cues),
            }
        )
    if chapters:
        block["chapters"] = artifacts.chapters_key(video_key)
        artifacts.put_text(bucket, block["chapters"], sidecars.webvtt(chapters), VTT)
    log.info("sidecars.written", subtitles=len(block["subtitles"]), chapters=len(chapters))
    return block


def keys(block: dict[str, Any]) -> list[str]:
    """The sidecar files' keys of a report block (what `vsr run` downloads beside the output)."""
    return [item["key"] for item in block.get("subtitles", [])] + ([block["chapters"]] if block.get("chapters") else [])
