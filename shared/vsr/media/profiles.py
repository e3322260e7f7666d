"""Delivery profiles: which codec, container and encoder settings a job's output is written with.

One small surface that every encode path calls (the assembler's one delivery encode today, a per-segment
delivery encode of fragmented outputs later):

- `requested_codec(value)` parses what a user asked for (`vsr upscale --codec`, S3 metadata `vsr-codec`);
  a bad value is a BadRequestError with the accepted values, raised once at ingest.
- `choose_profile(requested, bit_depth=, color_trc=, hdr10=, width=, height=, codecs=)` turns it into the
  job's `DeliveryProfile` (codec, container,
  bit depth, quality settings, why). `auto` keeps H.264 for 8-bit SDR sources and picks HEVC Main 10 for
  deeper or HDR sources: H.264 High 10 keeps the bits, but almost no browser or hardware decoder plays it.
  The profile is a plain dict in the job's request (`job.model["delivery"]`), so every segment message and
  the assembler see the same choice whatever the settings are when they run.
- `encoder_spec(profile, codec, width, height, hdr10=..., nvenc=...)` is the encoder to open: name,
  options, pixel format and codec tag (`hvc1` for HEVC in MP4/MOV so Apple players open it). HDR10 static
  metadata (mastering display, content light level) goes into the bitstream (x265 SEI, SVT-AV1 metadata OBUs).
- `choose_delivery(...)` (`choose_encoder` as one value) prefers the codec's NVENC encoder when settings ask
  for it and it really opens (the wheel carries `*_nvenc`, but they need the NVIDIA driver at run time), else
  the software encoder; the report names the one used and why NVENC was not.
- `add_video_stream(container, spec, ...)` opens that encoder on an output container with the source's time
  base, SAR and colour tags; `job_profile(model)` reads the profile back from a job or segment message.
- `audio_choice(container, codec, bits)`: what happens to each source audio stream in the container.

Numbers (CRF, presets, measured encode speed and size) live in settings.json `delivery` (settings.CodecSettings).
"""

from __future__ import annotations

import struct
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass, field
from fractions import Fraction
from typing import Any

import av

from vsr.errors import BadRequestError
from vsr.logs import get_logger
from vsr.settings import DELIVERY_CODECS, CodecSettings

log = get_logger(__name__)

CODECS = DELIVERY_CODECS
AUTO = "auto"
REQUESTABLE = (*CODECS, AUTO)
CODEC_METADATA_KEY = "vsr-codec"  # S3 user metadata (S3 lower-cases names)

CONTAINER_FORMATS = {"mp4": "mp4", "mov": "mov"}  # container -> FFmpeg muxer
EXTENSIONS = {"mp4": ".mp4", "mov": ".mov"}
CONTENT_TYPES = {"mp4": "video/mp4", "mov": "video/quicktime"}

# FFmpeg AVColorTransferCharacteristic values of HDR signals: SMPTE ST 2084 (PQ) and ARIB STD-B67 (HLG).
HDR_TRANSFERS = {16: "pq", 18: "hlg"}

# Audio codecs MP4 carries without `-strict experimental` and common players decode; the rest becomes AAC.
MP4_AUDIO = frozenset({"aac", "mp3", "ac3", "eac3", "opus", "flac", "alac"})


@dataclass(frozen=True)
class DeliveryProfile:
    """The job's delivery: rides in the job's request (`model["delivery"]`) as `to_dict()`."""

    codec: str
    container: str
    bit_depth: int
    crf: int | None
    preset: str | None
    requested: str = AUTO
    reason: str = ""

    @property
    def extension(self) -> str:
        return EXTENSIONS[self.container]

    @property
    def content_type(self) -> str:
        return CONTENT_TYPES[self.container]

    @property
    def muxer(self) -> str:
        return CONTAINER_FORMATS[self.container]

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> DeliveryProfile:
        return cls(
            codec=str(data["codec"]),
            container=str(data["container"]),
            bit_depth=int(data["bit_depth"]),
            crf=None if data.get("crf") is None else int(data["crf"]),
            preset=None if data.get("preset") is None else str(data["preset"]),
            requested=str(data.get("requested", AUTO)),
            reason=str(data.get("reason", "")),
        )


def job_profile(model: Mapping[str, Any]) -> DeliveryProfile | None:
    """The delivery profile in a job's request (`job.model` / a segment message's `model`); None for jobs
    created before profiles existed (they are H.264 in MP4)."""
    data = model.get("delivery")
    return DeliveryProfile.from_dict(data) if data else None


def delivery_codec(model: Mapping[str, Any]) -> str:
    profile = job_profile(model)
    return profile.codec if profile else "h264"


@dataclass(frozen=True)
class Hdr10:
    """HDR10 static metadata: SMPTE ST 2086 mastering display and CTA-861.3 content light level."""

    primaries: tuple[tuple[Fraction, Fraction], ...] | None = None  # (x, y) of R, G, B
    white_point: tuple[Fraction, Fraction] | None = None
    min_luminance: Fraction | None = None  # cd/m2
    max_luminance: Fraction | None = None
    max_cll: int | None = None
    max_fall: int | None = None

    def to_dict(self) -> dict[str, Any]:
        def s(v: Fraction) -> str:
            return f"{v.numerator}/{v.denominator}"

        return {
            "primaries": [[s(x), s(y)] for x, y in self.primaries] if self.primaries else None,
            "white_point": [s(v) for v in self.white_point] if self.white_point else None,
            "min_luminance": s(self.min_luminance) if self.min_luminance is not None else None,
            "max_luminance": s(self.max_luminance) if self.max_luminance is not None else None,
            "max_cll": self.max_cll,
            "max_fall": self.max_fall,
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any] | None) -> Hdr10 | None:
        if not data:
            return None

        def f(v: Any) -> Fraction | None:
            return None if v is None else Fraction(v)

        primaries = data.get("primaries")
        white = data.get("white_point")
        return cls(
            primaries=tuple((Fraction(x), Fraction(y)) for x, y in primaries) if primaries else None,
            white_point=(Fraction(white[0]), Fraction(white[1])) if white else None,
            min_luminance=f(data.get("min_luminance")),
            max_luminance=f(data.get("max_luminance")),
            max_cll=data.get("max_cll"),
            max_fall=data.get("max_fall"),
        )

    @property
    def has_mastering_display(self) -> bool:
        return self.primaries is not None and self.white_point is not None and self.max_luminance is not None

    def _params(
        self,
        mastering: str,
        light: str,
        xy: Callable[[Fraction], str],
        luminance: Callable[[Fraction], str],
    ) -> list[str]:
        """The encoder's mastering display (G, B, R, white point, L(max, min)) and light level options, each
        number written by the encoder's own format."""
        out = []
        if self.has_mastering_display:
            assert self.primaries and self.white_point and self.max_luminance is not None

            def point(p: tuple[Fraction, Fraction]) -> str:
                return f"({xy(p[0])},{xy(p[1])})"

            r, g, b = self.primaries
            lum = f"L({luminance(self.max_luminance)},{luminance(self.min_luminance or Fraction(0))})"
            out.append(f"{mastering}=G{point(g)}B{point(b)}R{point(r)}WP{point(self.white_point)}{lum}")
        if self.max_cll is not None or self.max_fall is not None:
            out.append(f"{light}={self.max_cll or 0},{self.max_fall or 0}")
        return out

    def x265_params(self) -> list[str]:
        """x265 `master-display` (G, B, R order; chromaticity in 1/50000, luminance in 1/10000 cd/m2), `max-cll`."""
        return self._params(
            "master-display", "max-cll", lambda v: str(round(v * 50000)), lambda v: str(round(v * 10000))
        )

    def svtav1_params(self) -> list[str]:
        """SVT-AV1 `mastering-display` (decimal chromaticities and cd/m2) and `content-light`."""
        return self._params(
            "mastering-display", "content-light", lambda v: f"{float(v):.5f}", lambda v: f"{float(v):.4f}"
        )


_MASTERING_BYTES = 88  # AVMasteringDisplayMetadata: 10 AVRationals, has_primaries, has_luminance
_LIGHT_BYTES = 8  # AVContentLightMetadata: MaxCLL, MaxFALL


def hdr10_from_frame(frame: av.VideoFrame) -> Hdr10 | None:
    """The HDR10 static metadata a decoded frame carries as side data (from SEI / OBUs / container), if any."""
    found: dict[str, Any] = {}
    for side_data in frame.side_data:
        kind = str(side_data.type)
        raw = bytes(side_data)
        if kind.endswith("MASTERING_DISPLAY_METADATA") and len(raw) == _MASTERING_BYTES:
            v = struct.unpack("<22i", raw)
            rationals = [Fraction(v[i], v[i + 1]) if v[i + 1] else Fraction(0) for i in range(0, 20, 2)]
            if v[20]:  # has_primaries
                found["primaries"] = (
                    (rationals[0], rationals[1]),
                    (rationals[2], rationals[3]),
                    (rationals[4], rationals[5]),
                )
                found["white_point"] = (rationals[6], rationals[7])
            if v[21]:  # has_luminance
                found["min_luminance"], found["max_luminance"] = rationals[8], rationals[9]
        elif kind.endswith("CONTENT_LIGHT_LEVEL") and len(raw) == _LIGHT_BYTES:
            found["max_cll"], found["max_fall"] = struct.unpack("<2I", raw)
    return Hdr10(**found) if found else None


def requested_codec(value: str | None, *, source: str = "--codec") -> str:
    """A requested delivery codec ('auto' when none); BadRequestError, with the accepted values, otherwise."""
    if value is None or value.strip() == "":
        return AUTO
    wanted = value.strip().lower()
    if wanted not in REQUESTABLE:
        raise BadRequestError(
            f"{source}={value!r} is not a delivery codec this service writes; use one of {', '.join(REQUESTABLE)} "
            "(or leave it out: auto is H.264 for 8-bit SDR sources and HEVC Main 10 for 10-bit or HDR ones)"
        )
    return wanted


def requested_codec_from_metadata(metadata: Mapping[str, str] | None) -> str:
    """The codec an upload asks for through its S3 user metadata `vsr-codec`."""
    value = {k.lower(): v for k, v in (metadata or {}).items()}.get(CODEC_METADATA_KEY)
    return requested_codec(value, source=f"the upload's metadata {CODEC_METADATA_KEY}")


def is_hdr(color_trc: int, hdr10: Hdr10 | None) -> bool:
    return int(color_trc) in HDR_TRANSFERS or hdr10 is not None


def choose_profile(
    requested: str,
    *,
    bit_depth: int,
    color_trc: int,
    hdr10: Hdr10 | None,
    width: int,
    height: int,
    codecs: Mapping[str, CodecSettings],
) -> DeliveryProfile:
    """The job's delivery profile for a source of this depth, transfer and output size (width x height)."""
    if requested not in REQUESTABLE:
        raise BadRequestError(f"unknown delivery codec {requested!r}; use one of {', '.join(REQUESTABLE)}")
    hdr = is_hdr(color_trc, hdr10)
    if requested == AUTO:
        if bit_depth > 8 or hdr:
            codec = "hevc"
            why = f"auto: the source is {'HDR' if hdr else f'{bit_depth}-bit'}, so HEVC Main 10 (H.264 High 10 plays almost nowhere)"
        else:
            codec, why = "h264", "auto: 8-bit SDR source, so H.264 (plays everywhere)"
    else:
        codec, why = requested, f"asked for {requested}"
    settings = codecs[codec]
    depth = settings.bit_depth or (10 if bit_depth > 8 else 8)
    if codec == "av1" and (width % 2 or height % 2):
        raise BadRequestError(
            f"an AV1 delivery needs an even output size; {width}x{height} is odd (SVT-AV1 codes 4:2:0 only): "
            "ask for another codec (vsr-codec=h264 or hevc keep odd sizes in 4:4:4)"
        )
    if hdr and depth <= 8:
        log.warning("delivery.hdr_in_8bit", codec=codec, reason="the asked codec codes 8 bits here")
    return DeliveryProfile(
        codec=codec,
        container=settings.container,
        bit_depth=depth,
        crf=settings.crf,
        preset=settings.preset,
        requested=requested,
        reason=why,
    )


@dataclass(frozen=True)
class EncoderSpec:
    """What to open: encoder name, its options, the pixel format fed to it and the codec tag to write."""

    name: str
    options: dict[str, str] = field(default_factory=dict)
    pix_fmt: str = "yuv420p"
    codec_tag: str | None = None
    hardware: bool = False
    profile: str | None = None  # AVCodecContext profile name (NVENC), when the options cannot say it

    def describe(self) -> dict[str, Any]:
        return {"encoder": self.name, "pix_fmt": self.pix_fmt, "options": dict(self.options), "hardware": self.hardware}


def _chroma(width: int, height: int) -> str:
    """4:2:0 cannot code an odd width or height (chroma in 2-pixel units); sizes stay exact in 4:4:4."""
    return "444" if width % 2 or height % 2 else "420"


def encoder_spec(
    profile: DeliveryProfile,
    codec: CodecSettings,
    width: int,
    height: int,
    *,
    hdr10: Hdr10 | None = None,
    nvenc: bool = False,
) -> EncoderSpec:
    """The encoder for `profile` at an output of width x height; NVENC's when `nvenc` (the codec must have one)."""
    deep = profile.bit_depth > 8
    chroma = _chroma(width, height)
    if nvenc:
        if not codec.nvenc:
            raise ValueError(f"{profile.codec} has no NVENC encoder")
        # NVENC takes semi-planar 10-bit (p010le) and codes 4:2:0 here; quality: constant-quality VBR
        options = {"preset": codec.nvenc_preset, "tune": "hq", "rc": "vbr", "cq": str(codec.nvenc_cq or 0), "b": "0"}
        if profile.codec == "hevc" and deep:
            options["profile"] = "main10"
        return EncoderSpec(
            name=codec.nvenc,
            options=options,
            pix_fmt="p010le" if deep else "yuv420p",
            codec_tag="hvc1" if profile.codec == "hevc" else None,
            hardware=True,
        )
    if profile.codec == "h264":
        options = {"crf": str(profile.crf), "preset": str(profile.preset)}
        return EncoderSpec("libx264", options, f"yuv{chroma}p" + ("10le" if deep else ""))
    if profile.codec == "hevc":
        params = ["log-level=error", "info=0"]  # no encoder-settings SEI in the delivery
        if hdr10 is not None:
            params += [*hdr10.x265_params(), "hdr10=1"]
        options = {"crf": str(profile.crf), "preset": str(profile.preset), "x265-params": ":".join(params)}
        return EncoderSpec(codec.encoder, options, f"yuv{chroma}p" + ("10le" if deep else ""), codec_tag="hvc1")
    if profile.codec == "av1":
        options = {"crf": str(profile.crf), "preset": str(profile.preset)}
        params = ["enable-hdr=1", *hdr10.svtav1_params()] if hdr10 is not None else []
        if params:
            options["svtav1-params"] = ":".join(params)
        return EncoderSpec(codec.encoder, options, "yuv420p10le" if deep else "yuv420p")
    if profile.codec == "prores":
        if chroma == "444":  # odd sizes: 4:4:4 is ProRes 4444's (profile 4), not 422 HQ's
            return EncoderSpec(codec.encoder, {"profile": "4", "vendor": "apl0"}, "yuv444p10le")
        return EncoderSpec(codec.encoder, {"profile": str(codec.profile or "3"), "vendor": "apl0"}, "yuv422p10le")
    raise ValueError(f"unknown delivery codec {profile.codec!r}")


NvencProbe = Callable[[str, int, int, str], bool]


_nvenc_cache: dict[tuple[str, int, int, str], bool] = {}


def nvenc_opens(name: str, width: int, height: int, pix_fmt: str) -> bool:
    """Whether the NVENC encoder `name` really opens here (driver, GPU and session limits); cached per process."""
    key = (name, width, height, pix_fmt)
    if key not in _nvenc_cache:
        try:
            ctx = av.CodecContext.create(name, "w")
            ctx.width, ctx.height, ctx.pix_fmt = width, height, pix_fmt
            ctx.time_base = Fraction(1, 25)
            ctx.open()
            _nvenc_cache[key] = True
        except (av.error.FFmpegError, ValueError, OSError) as exc:
            log.info("delivery.nvenc_unavailable", encoder=name, error=f"{type(exc).__name__}: {exc}")
            _nvenc_cache[key] = False
    return _nvenc_cache[key]


def choose_encoder(
    profile: DeliveryProfile,
    codec: CodecSettings,
    width: int,
    height: int,
    *,
    hdr10: Hdr10 | None = None,
    prefer_nvenc: bool = False,
    opens: NvencProbe = nvenc_opens,
) -> tuple[EncoderSpec, str | None]:
    """(the encoder to use, why NVENC was not used or None): NVENC when preferred and it opens, else software."""
    software = encoder_spec(profile, codec, width, height, hdr10=hdr10)
    if not prefer_nvenc:
        return software, None
    if not codec.nvenc:
        return software, f"{profile.codec} has no NVENC encoder"
    if _chroma(width, height) == "444":
        return software, "odd output size: NVENC codes 4:2:0 only here"
    if profile.codec == "h264" and profile.bit_depth > 8:
        return software, "10-bit H.264 is not coded by NVENC"
    if hdr10 is not None:
        return software, "HDR10 metadata is written by the software encoder only"
    hardware = encoder_spec(profile, codec, width, height, hdr10=hdr10, nvenc=True)
    if opens(hardware.name, width, height, hardware.pix_fmt):
        return hardware, None
    return software, f"{hardware.name} did not open (no NVIDIA driver or GPU here)"


@dataclass(frozen=True)
class Delivery:
    """What an encode path writes: the job's profile and the encoder chosen for it (NVENC or software, and
    why not NVENC when it was preferred)."""

    profile: DeliveryProfile
    spec: EncoderSpec
    nvenc_fallback: str | None = None


def choose_delivery(
    profile: DeliveryProfile,
    codec: CodecSettings,
    width: int,
    height: int,
    *,
    hdr10: Hdr10 | None = None,
    prefer_nvenc: bool = False,
    opens: NvencProbe = nvenc_opens,
) -> Delivery:
    """`choose_encoder` as one value for the encode paths (and the report)."""
    spec, fallback = choose_encoder(profile, codec, width, height, hdr10=hdr10, prefer_nvenc=prefer_nvenc, opens=opens)
    if fallback and prefer_nvenc:
        log.info("delivery.software_encoder", encoder=spec.name, reason=fallback)
    return Delivery(profile, spec, fallback if prefer_nvenc else None)


@dataclass(frozen=True)
class AudioChoice:
    """What the output does with one source audio stream: copy its packets, or encode with `encoder`."""

    copy: bool
    encoder: str | None = None
    sample_format: str | None = None  # encoder input format (pcm_s24le takes s32)
    reason: str = ""


def audio_choice(container: str, codec: str, bits: int) -> AudioChoice:
    """MP4: copied when MP4 carries the codec, else AAC. MOV (ProRes masters for editors): PCM, 24-bit when the
    source is deeper than 16 bits (`bits`: its bits per raw sample, 0 when lossy or unknown), else 16-bit."""
    if container == "mov":
        if codec in ("pcm_s16le", "pcm_s16be") or (codec.startswith("pcm_") and bits and bits <= 16):
            return AudioChoice(copy=True, reason="PCM already")
        if codec in ("pcm_s24le",):
            return AudioChoice(copy=True, reason="PCM already")
        if bits > 16:
            return AudioChoice(False, "pcm_s24le", "s32", f"{codec} is {bits}-bit: 24-bit PCM for editors")
        return AudioChoice(False, "pcm_s16le", "s16", f"{codec} becomes 16-bit PCM for editors")
    if codec in MP4_AUDIO:
        return AudioChoice(copy=True)
    return AudioChoice(False, "aac", None, f"MP4 cannot carry {codec}")


def encoder_layout(layout: Any, channels: int) -> str:
    """The channel layout to open an audio encoder with. AVI/WAV-style PCM often has an unspecified order
    ("2 channels"), which FFmpeg's AAC encoder refuses (EINVAL); such a stream gets FFmpeg's default layout
    for its channel count ("2c" -> stereo, "6c" -> 5.1), which is how every player treats it anyway."""
    name = str(getattr(layout, "name", "") or "")
    if name and not name.endswith("channels"):
        return name
    count = channels or int(getattr(layout, "nb_channels", 0) or 0) or 2
    return f"{count}c"


def add_video_stream(
    container: Any,
    spec: EncoderSpec,
    *,
    width: int,
    height: int,
    time_base: Fraction,
    rate: Fraction | None,
    sample_aspect_ratio: Fraction | None,
    colour: Mapping[str, int],
    threads: int | None = None,
) -> Any:
    """Add the encoder `spec` to an output `container` for frames of width x height whose pts are in
    `time_base`, tagged with the source's SAR and colour (`color_range`, `color_primaries`, `color_trc`,
    `colorspace`); returns the stream. Every encode path opens its video stream here."""
    stream = container.add_stream(spec.name, options=dict(spec.options))
    stream.width, stream.height, stream.pix_fmt = width, height, spec.pix_fmt
    stream.time_base = time_base
    ctx = stream.codec_context
    ctx.time_base = time_base
    if rate:
        ctx.framerate = rate  # rate control and level; timestamps still come from the frames
    if sample_aspect_ratio:
        ctx.sample_aspect_ratio = sample_aspect_ratio
    for key in ("color_range", "color_primaries", "color_trc", "colorspace"):
        setattr(ctx, key, int(colour[key]))
    if spec.codec_tag:
        ctx.codec_tag = spec.codec_tag
    ctx.thread_count = threads or 0
    return stream
