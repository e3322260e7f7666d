"""Synthetic probes (VideoInfo) for planning and admission tests: no file, exact constant-rate pts."""

from __future__ import annotations

from fractions import Fraction

from vsr.media.probe import VideoInfo


def video(width: int, height: int, seconds: float, fps: int = 25, size_bytes: int = 10_000_000) -> VideoInfo:
    frames = round(seconds * fps)
    return VideoInfo(
        format_name="mov,mp4,m4a,3gp,3g2,mj2",
        size_bytes=size_bytes,
        duration_s=seconds,
        start_time_s=0.0,
        video_index=0,
        width=width,
        height=height,
        rotation=0,
        display_matrix=None,
        codec="h264",
        profile=None,
        pix_fmt="yuv420p",
        bit_depth=8,
        time_base=Fraction(1, fps * 512),
        average_rate=Fraction(fps),
        base_rate=Fraction(fps),
        sample_aspect_ratio=None,
        frame_count=frames,
        pts=[i * 512 for i in range(frames)],
        is_vfr=False,
        color_range=0,
        color_primaries=2,
        color_trc=2,
        colorspace=2,
    )
