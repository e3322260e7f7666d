"""What the pipeline tests compare between a source and its upscaled output (PyAV, demux only)."""

from __future__ import annotations

from fractions import Fraction
from pathlib import Path

import av


def video_times(path: Path) -> list[Fraction]:
    """Presentation times of every video frame, sorted (exact rationals)."""
    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        times = [
            Fraction(packet.pts) * Fraction(stream.time_base)
            for packet in container.demux(stream)
            if packet.pts is not None and packet.size
        ]
    return sorted(times)


def video_size(path: Path) -> tuple[int, int, int]:
    """(width, height, decoded frame count)."""
    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        count = sum(1 for _ in container.decode(stream))
        return stream.codec_context.width, stream.codec_context.height, count


def audio_packets(path: Path) -> list[tuple[Fraction, bytes]]:
    """(presentation time, payload) of every audio packet."""
    with av.open(str(path)) as container:
        if not container.streams.audio:
            return []
        stream = container.streams.audio[0]
        return [
            (Fraction(packet.pts) * Fraction(stream.time_base), bytes(packet))
            for packet in container.demux(stream)
            if packet.pts is not None and packet.size
        ]
