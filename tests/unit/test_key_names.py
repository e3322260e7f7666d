"""Names derived from any key S3 accepts (up to 1024 bytes of UTF-8, any character): output keys in S3, local
names in the outbox, and the key decoded from an S3 event. Pure logic, no AWS; properties drawn by Hypothesis."""

from __future__ import annotations

import json
import posixpath

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tests.support import events as fixtures
from vsr import keys
from vsr.local.names import DOWNLOAD_TEMP_BYTES, NAME_MAX, local_path, partial_name, printable
from vsr.pipeline import artifacts, events

# Pieces a hostile or merely unusual key is made of; text() adds the rest of unicode.
PIECES = ["/", "//", "..", ".", "../", "%", "%2F", "%25", "+", " ", "\x00", "\x01", "\x1b[31m", "\x7f", "\u0085",
          "é", "e\u0301", "日本", "😀", "\u202e", "\ufeff", "~", ".mp4", ".upscaled-x2", "a" * 300]  # fmt: skip
piece = st.one_of(st.sampled_from(PIECES), st.text(st.characters(exclude_categories=["Cs"]), max_size=40))
s3_keys = (
    st.lists(piece, min_size=1, max_size=40)
    .map("".join)
    .map(lambda key: keys.fit_utf8(key, keys.MAX_KEY_BYTES))
    .filter(bool)
)


def _bytes(text: str) -> int:
    return len(text.encode())


# --- output keys in S3 ------------------------------------------------------------------------------------
def test_output_keys_of_an_ordinary_key_are_unchanged() -> None:
    assert artifacts.output_keys("videos/clip.mov", 2) == (
        "videos/clip.upscaled-x2.mp4",
        "videos/clip.upscaled-x2.json",
    )
    assert artifacts.preview_key("videos/clip.upscaled-x2.mp4") == "videos/clip.upscaled-x2.preview.png"


@settings(max_examples=300, deadline=None)
@given(s3_keys, st.sampled_from([2, 3, 4]))
def test_output_keys_of_any_key_fit_in_s3(key: str, scale: int) -> None:
    video, report = artifacts.output_keys(key, scale)
    for derived in (video, report, artifacts.preview_key(video)):
        assert _bytes(derived) <= keys.MAX_KEY_BYTES
    assert video.endswith(f".upscaled-x{scale}.mp4") and report.endswith(f".upscaled-x{scale}.json")


def test_long_keys_get_distinct_output_keys_within_1024_bytes() -> None:
    shared = "long/" + "é" * 500  # 1005 bytes in common
    first, second = shared + "1.mp4", shared + "2.mp4"
    assert _bytes(first) <= keys.MAX_KEY_BYTES
    out_1, out_2 = artifacts.output_keys(first, 2)[0], artifacts.output_keys(second, 2)[0]
    assert out_1 != out_2 and out_1.startswith("long/éé")
    assert _bytes(artifacts.preview_key(out_1)) <= keys.MAX_KEY_BYTES
    assert artifacts.output_keys(first, 2) == artifacts.output_keys(first, 2)  # stable


# --- local names ------------------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("key", "expected"),
    [("a/b c é.mp4", "a/b c é.mp4"), ("drop/my clip (1) é.upscaled-x2.json", "drop/my clip (1) é.upscaled-x2.json")],
)
def test_ordinary_keys_keep_their_names(key: str, expected: str) -> None:
    assert local_path(key).as_posix() == expected


def test_traversal_keys_stay_inside_and_are_told_apart() -> None:
    family = ["x/evil.mp4", "../x/evil.mp4", "/x/evil.mp4", "x//evil.mp4", "x/./evil.mp4", "../../../x/evil.mp4",
              "x/evil\x00.mp4", "x/evil\x01.mp4", "x\x00/evil.mp4", "x/evil.mp4/", "x/evil.mp4/.."]  # fmt: skip
    paths = [local_path(key) for key in family]
    assert len(set(paths)) == len(family)
    for path in paths:
        assert not path.is_absolute() and ".." not in path.parts and path.parts[0] in ("x", "x_")
    assert paths[0].as_posix() == "x/evil.mp4"  # the one key that needs no change keeps its name
    assert paths[1].name.startswith("evil~") and paths[1].name.endswith(".mp4")


def test_a_300_byte_name_is_cut_and_its_download_names_fit_too() -> None:
    key = "drop/" + "n" * 300 + ".mp4"
    video, report = artifacts.output_keys(key, 2)
    names = [local_path(k).name for k in (video, report, artifacts.preview_key(video), key + ".error.json")]
    for name in names:
        assert _bytes(name) <= NAME_MAX and _bytes(partial_name(name)) + DOWNLOAD_TEMP_BYTES <= NAME_MAX
    assert names[0].endswith(".upscaled-x2.mp4") and names[2].endswith(".upscaled-x2.preview.png")
    # one job's video, report and preview share the tag
    assert len({name.split("~")[1].split(".")[0] for name in names[:3]}) == 1


def test_a_name_that_looks_tagged_is_tagged_again() -> None:
    tagged = local_path("../clip.mp4").name  # clip~<hash>.mp4
    assert local_path(tagged).name != tagged
    assert local_path(tagged) != local_path("../clip.mp4")


def test_printable_escapes_control_characters() -> None:
    assert printable("a\x1b[31mb\x00é") == "a\\x1b[31mb\\x00é"


@settings(max_examples=500, deadline=None)
@given(s3_keys)
def test_every_key_gets_a_local_path_that_fits_and_stays_inside(key: str) -> None:
    path = local_path(key)
    assert not path.is_absolute() and path.parts
    for part in path.parts:
        assert part not in ("", ".", "..") and "\x00" not in part and "/" not in part
        assert _bytes(part) <= NAME_MAX
    assert posixpath.normpath(path.as_posix()) == path.as_posix()
    assert local_path(key) == path  # stable


@settings(max_examples=500, deadline=None)
@given(s3_keys, st.sampled_from(PIECES), st.integers(min_value=0, max_value=2000))
def test_keys_that_differ_get_different_local_paths(key: str, extra: str, at: int) -> None:
    # the other key differs from `key` by one piece inserted anywhere: the cases that normalise alike
    at %= len(key) + 1
    other = keys.fit_utf8(key[:at] + extra + key[at:], keys.MAX_KEY_BYTES)
    if other != key:
        assert local_path(other) != local_path(key)


# --- the key in an S3 event ----------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("sent", "key"),
    [
        ("red+flower.jpg", "red flower.jpg"),  # the S3 user guide's example
        ("this+im+%2B+age+blah.txt", "this im + age blah.txt"),  # from real S3 (aws/aws-sdk-net#640)
        ("test%2F10%3A47%3A07.20151213-1450022300.log.bz2", "test/10:47:07.20151213-1450022300.log.bz2"),  # #837
        ("drop/my+clip+%281%29+%C3%A9.mp4", "drop/my clip (1) é.mp4"),  # '/' left as is (minio/minio#11665)
        ("100%25+real%2Bfake.mp4", "100% real+fake.mp4"),
    ],
)
def test_event_keys_as_real_s3_sends_them_are_decoded(sent: str, key: str) -> None:
    body = json.loads(fixtures.s3_notification("b", "placeholder", etag="e", size=1))
    body["Records"][0]["s3"]["object"]["key"] = sent
    (obj,) = events.s3_objects(json.dumps(body))
    assert obj.key == key


@settings(max_examples=300, deadline=None)
@given(s3_keys, st.booleans())
def test_any_key_survives_the_event_encoding(key: str, keep_slash: bool) -> None:
    body = fixtures.s3_notification("b", key, etag="e", size=1, keep_slash=keep_slash)
    (obj,) = events.s3_objects(body)
    assert obj.key == key


def test_a_key_ending_in_a_newline_keeps_a_name_of_its_own() -> None:
    # a regex `$` matches before a final newline: "\n" once became the path "." (found by Hypothesis)
    from vsr.local.names import local_path

    names = {str(local_path(key)) for key in ("\n", "a\n", "a", "\n.mp4")}
    assert len(names) == 4 and "." not in names and all(name.strip() for name in names)
