"""Delivery profiles (vsr.media.profiles) and their admission: pure logic, settings values, no media, no AWS."""

from __future__ import annotations

import dataclasses
from fractions import Fraction

import pytest

from tests.unit.test_tier_choice import MODEL, video
from vsr.admission import check_delivery, delivery_for, plan_for
from vsr.errors import BadRequestError, LimitExceededError
from vsr.media.profiles import (
    AUTO,
    DeliveryProfile,
    Hdr10,
    audio_choice,
    choose_delivery,
    choose_encoder,
    choose_profile,
    delivery_codec,
    encoder_spec,
    job_profile,
    nvenc_opens,
    requested_codec,
    requested_codec_from_metadata,
)
from vsr.settings import Settings, deep_merge, get_settings

CODECS = get_settings().delivery_codecs
HDR10 = Hdr10(
    primaries=(
        (Fraction(34000, 50000), Fraction(16000, 50000)),
        (Fraction(13250, 50000), Fraction(34500, 50000)),
        (Fraction(7500, 50000), Fraction(3000, 50000)),
    ),
    white_point=(Fraction(15635, 50000), Fraction(16450, 50000)),
    min_luminance=Fraction(1, 10000),
    max_luminance=Fraction(1000),
    max_cll=1000,
    max_fall=400,
)


def profile(requested: str, *, depth: int = 8, trc: int = 1, hdr10: Hdr10 | None = None, size=(1280, 720)):
    return choose_profile(
        requested, bit_depth=depth, color_trc=trc, hdr10=hdr10, width=size[0], height=size[1], codecs=CODECS
    )


@pytest.mark.parametrize(
    ("value", "expected"),
    [(None, AUTO), ("", AUTO), ("  ", AUTO), ("HEVC", "hevc"), (" av1 ", "av1"), ("prores", "prores"), ("auto", AUTO)],
)
def test_requested_codec_accepts_the_codecs_and_auto(value: str | None, expected: str) -> None:
    assert requested_codec(value) == expected


@pytest.mark.parametrize("value", ["h265", "vp9", "x264", "prores4444", "mkv"])
def test_a_codec_the_service_does_not_write_is_a_bad_request_naming_the_accepted_ones(value: str) -> None:
    with pytest.raises(BadRequestError) as caught:
        requested_codec_from_metadata({"VSR-Codec": value})  # S3 lower-cases names; any case is read
    assert f"vsr-codec={value!r}" in caught.value.reason
    assert "h264, hevc, av1, prores, auto" in caught.value.reason


def test_no_metadata_means_auto() -> None:
    assert requested_codec_from_metadata(None) == AUTO
    assert requested_codec_from_metadata({"vsr-plan": "cost"}) == AUTO


def test_auto_keeps_h264_for_8_bit_sdr_and_picks_hevc_main_10_for_10_bit_or_hdr() -> None:
    sdr = profile(AUTO)
    assert (sdr.codec, sdr.container, sdr.bit_depth, sdr.extension) == ("h264", "mp4", 8, ".mp4")
    for deep in (profile(AUTO, depth=10), profile(AUTO, trc=16), profile(AUTO, trc=18), profile(AUTO, hdr10=HDR10)):
        assert (deep.codec, deep.container, deep.bit_depth) == ("hevc", "mp4", 10)
        assert deep.requested == AUTO and "HEVC Main 10" in deep.reason


def test_containers_depths_and_settings_per_codec() -> None:
    assert profile("prores").container == "mov" and profile("prores").extension == ".mov"
    assert profile("prores").content_type == "video/quicktime" and profile("prores").bit_depth == 10
    assert profile("hevc").bit_depth == 10  # Main 10 even from an 8-bit source
    assert profile("av1").bit_depth == 8 and profile("av1", depth=10).bit_depth == 10
    assert profile("h264", depth=10).bit_depth == 10  # asked for: High 10, as before profiles
    assert profile("h264").crf == get_settings().encode_settings.crf  # one number for H.264's CRF
    assert profile("hevc").crf == CODECS["hevc"].crf and profile("av1").preset == CODECS["av1"].preset


def test_the_profile_rides_in_the_job_request_as_a_dict() -> None:
    chosen = profile(AUTO, depth=10)
    model = {"name": "m", "scale": 2, "delivery": chosen.to_dict()}
    assert job_profile(model) == chosen and delivery_codec(model) == "hevc"
    assert job_profile({"name": "m"}) is None and delivery_codec({"name": "m"}) == "h264"  # jobs from before


def test_av1_refuses_an_odd_output_size_with_a_reason() -> None:
    with pytest.raises(BadRequestError, match="even output size"):
        profile("av1", size=(483, 291))


def test_encoder_specs() -> None:
    hevc = encoder_spec(profile("hevc"), CODECS["hevc"], 1280, 720)
    assert (hevc.name, hevc.pix_fmt, hevc.codec_tag) == ("libx265", "yuv420p10le", "hvc1")
    assert "master-display" not in hevc.options["x265-params"]
    odd = encoder_spec(profile("hevc"), CODECS["hevc"], 483, 291)
    assert odd.pix_fmt == "yuv444p10le"  # sizes stay exact: 4:4:4 for odd sizes, as H.264 does
    prores = encoder_spec(profile("prores"), CODECS["prores"], 1280, 720)
    assert (prores.name, prores.pix_fmt, prores.options["profile"]) == ("prores_ks", "yuv422p10le", "3")
    av1 = encoder_spec(profile("av1", depth=10), CODECS["av1"], 1280, 720)
    assert (av1.name, av1.pix_fmt, av1.codec_tag) == ("libsvtav1", "yuv420p10le", None)
    h264 = encoder_spec(profile("h264"), CODECS["h264"], 1280, 720)
    assert (h264.name, h264.pix_fmt, h264.options["crf"]) == ("libx264", "yuv420p", str(CODECS["h264"].crf))


def test_hdr10_metadata_goes_into_the_hevc_and_av1_bitstreams() -> None:
    hevc = encoder_spec(profile(AUTO, hdr10=HDR10), CODECS["hevc"], 1280, 720, hdr10=HDR10)
    params = hevc.options["x265-params"].split(":")
    # x265 wants G, B, R order, chromaticities in 1/50000, luminance in 1/10000 cd/m2
    assert "master-display=G(13250,34500)B(7500,3000)R(34000,16000)WP(15635,16450)L(10000000,1)" in params
    assert "max-cll=1000,400" in params and "hdr10=1" in params
    av1 = encoder_spec(profile("av1", depth=10, hdr10=HDR10), CODECS["av1"], 1280, 720, hdr10=HDR10)
    svt = av1.options["svtav1-params"]
    assert "mastering-display=G(0.26500,0.69000)B(0.15000,0.06000)R(0.68000,0.32000)WP(0.31270,0.32900)" in svt
    assert "L(1000.0000,0.0001)" in svt and "content-light=1000,400" in svt


def test_hdr10_survives_the_probe_json_round_trip() -> None:
    assert Hdr10.from_dict(HDR10.to_dict()) == HDR10
    assert Hdr10.from_dict(None) is None
    light_only = Hdr10(max_cll=500, max_fall=200)
    assert Hdr10.from_dict(light_only.to_dict()) == light_only
    assert light_only.x265_params() == ["max-cll=500,200"]


def test_nvenc_when_it_opens_with_matching_settings() -> None:
    opened: list[tuple[str, str]] = []

    def opens(name: str, width: int, height: int, pix_fmt: str) -> bool:
        opened.append((name, pix_fmt))
        return True

    spec, why_not = choose_encoder(profile("hevc"), CODECS["hevc"], 1920, 1080, prefer_nvenc=True, opens=opens)
    assert why_not is None and spec.hardware and opened == [("hevc_nvenc", "p010le")]
    assert (spec.name, spec.codec_tag, spec.options["profile"]) == ("hevc_nvenc", "hvc1", "main10")
    assert spec.options["cq"] == str(CODECS["hevc"].nvenc_cq) and spec.options["rc"] == "vbr"
    h264, _ = choose_encoder(profile("h264"), CODECS["h264"], 1920, 1080, prefer_nvenc=True, opens=opens)
    assert (h264.name, h264.pix_fmt) == ("h264_nvenc", "yuv420p")


def test_software_when_nvenc_does_not_open_and_the_reason_names_the_encoder() -> None:
    delivery = choose_delivery(
        profile("hevc"), CODECS["hevc"], 1920, 1080, prefer_nvenc=True, opens=lambda *args: False
    )
    assert delivery.spec.name == "libx265" and not delivery.spec.hardware
    assert delivery.nvenc_fallback is not None and "hevc_nvenc did not open" in delivery.nvenc_fallback
    # no NVENC asked for: no reason to report
    assert choose_delivery(profile("hevc"), CODECS["hevc"], 1920, 1080).nvenc_fallback is None


def test_nvenc_is_not_tried_where_it_cannot_match_the_software_output() -> None:
    def never(*args: object) -> bool:
        raise AssertionError("NVENC must not be opened here")

    cases = [
        (profile("prores"), 1920, 1080, None, "no NVENC encoder"),
        (profile("hevc"), 483, 291, None, "4:2:0 only"),
        (profile("h264", depth=10), 1920, 1080, None, "10-bit H.264"),
        (profile(AUTO, hdr10=HDR10), 1920, 1080, HDR10, "HDR10"),
    ]
    for chosen, width, height, hdr10, reason in cases:
        codec = CODECS[chosen.codec]
        spec, why_not = choose_encoder(chosen, codec, width, height, hdr10=hdr10, prefer_nvenc=True, opens=never)
        assert not spec.hardware and why_not is not None and reason in why_not


def test_the_real_nvenc_probe_answers_without_raising() -> None:
    # No GPU on the build machines: False there. Where a driver and GPU exist it may be True; either is an answer.
    assert nvenc_opens("hevc_nvenc", 256, 256, "yuv420p") in (True, False)


@pytest.mark.parametrize(
    ("container", "codec", "bits", "expected"),
    [
        ("mp4", "aac", 0, (True, None)),
        ("mp4", "opus", 0, (True, None)),
        ("mp4", "mp2", 0, (False, "aac")),
        ("mp4", "vorbis", 0, (False, "aac")),
        ("mov", "aac", 0, (False, "pcm_s16le")),  # ProRes masters: PCM for editors
        ("mov", "flac", 16, (False, "pcm_s16le")),
        ("mov", "flac", 32, (False, "pcm_s24le")),  # deeper than 16 bits: 24-bit PCM
        ("mov", "pcm_s24le", 32, (True, None)),
        ("mov", "pcm_s16le", 16, (True, None)),
    ],
)
def test_audio_per_container(container: str, codec: str, bits: int, expected: tuple[bool, str | None]) -> None:
    choice = audio_choice(container, codec, bits)
    assert (choice.copy, choice.encoder) == expected


def settings_with(**delivery: object) -> Settings:
    return Settings(raw=deep_merge(get_settings().raw, {"delivery": {"codecs": delivery}}))


def test_the_planner_prices_the_delivery_encoder() -> None:
    settings = get_settings()
    info = video(640, 360, 60)
    h264 = plan_for(info, MODEL, settings, codec="h264").chosen
    hevc = plan_for(info, MODEL, settings, codec="hevc").chosen
    # the same segments; the assembler's one encode takes longer at HEVC's measured speed
    assert hevc.segments == h264.segments
    assert (
        settings.delivery_codec("hevc").encode_mpix_per_vcpu_s < settings.delivery_codec("h264").encode_mpix_per_vcpu_s
    )
    assert hevc.predicted_wall_s > h264.predicted_wall_s and hevc.predicted_cost_usd > h264.predicted_cost_usd
    slower = settings_with(hevc={"encode_mpix_per_vcpu_s": settings.delivery_codec("hevc").encode_mpix_per_vcpu_s / 2})
    assert plan_for(info, MODEL, slower, codec="hevc").chosen.predicted_wall_s > hevc.predicted_wall_s
    assert settings.reencode_max_megapixels("hevc") < settings.reencode_max_megapixels("h264")


def test_admission_refuses_a_delivery_the_assembler_cannot_encode_in_time() -> None:
    settings = get_settings()
    limit = settings.reencode_max_megapixels("av1")
    seconds = 1.2 * limit * 1e6 / (1280 * 720 * 4) / 25  # just over the AV1 limit at 1280x720 -> x2
    info = video(1280, 720, seconds)
    chosen = delivery_for(info, 2, "av1", settings)
    with pytest.raises(LimitExceededError, match="does not fit the assembler's one encode"):
        check_delivery(info, 2, chosen, settings)
    check_delivery(info, 2, delivery_for(info, 2, "h264", settings), settings)  # H.264 remuxes beyond its limit
    check_delivery(video(1280, 720, seconds / 2), 2, chosen, settings)


def test_admission_refuses_an_output_that_does_not_fit_the_assembler_tmp() -> None:
    settings = settings_with(prores={"bytes_per_output_mpix": 5e6, "encode_mpix_per_vcpu_s": 1e6})
    info = video(1920, 1080, 60)
    with pytest.raises(LimitExceededError, match="does not fit the assembler's /tmp"):
        check_delivery(info, 2, delivery_for(info, 2, "prores", settings), settings)


def test_settings_default_codec_applies_to_auto() -> None:
    settings = Settings(raw=deep_merge(get_settings().raw, {"delivery": {"default_codec": "av1"}}))
    assert delivery_for(video(640, 360, 1), 2, AUTO, settings).codec == "av1"
    assert delivery_for(video(640, 360, 1), 2, "h264", settings).codec == "h264"


def test_profile_dict_is_stable() -> None:
    chosen = profile("prores")
    assert DeliveryProfile.from_dict(chosen.to_dict()) == chosen
    assert set(chosen.to_dict()) == {f.name for f in dataclasses.fields(DeliveryProfile)}


def test_a_remux_deployment_delivers_h264_only() -> None:
    settings = Settings(raw=deep_merge(get_settings().raw, {"encode": {"join": "remux"}}))
    info = video(640, 360, 1)
    with pytest.raises(LimitExceededError, match=r"encode\.join"):
        check_delivery(info, 2, delivery_for(info, 2, "hevc", settings), settings)
    check_delivery(info, 2, delivery_for(info, 2, "h264", settings), settings)
