"""The upload page end to end in a real browser: Debian's chromium, headless, driven by selenium (no browser is
downloaded). `vsr serve --web-port 0` runs the whole local pipeline; the page is opened, a real clip (six frames
of carphone) is chosen in its file input, the browser PUTs it to the presigned URL on the local S3 endpoint, and
the page follows the job to COMPLETE: the preview image is shown and loaded, the key figures are filled in, and
the download link returns a video with every source frame at its source time, at twice the size. Screenshots of
the finished page (wide and narrow) are written to the test's output directory.

Chromium and its driver come from apt (`apt-get install -y chromium chromium-driver`; .ci/run installs them).
Without them this test fails and says so: it never skips.
"""

from __future__ import annotations

import os
import re
import shutil
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.clips import trim
from tests.local.conftest import carphone, overrides
from tests.local.media_checks import video_size, video_times
from tests.support.serve import Served, serve

pytestmark = [pytest.mark.slow, pytest.mark.timeout(600)]

CHROMIUM = Path(os.environ.get("VSR_CHROMIUM", "/usr/bin/chromium"))
CHROMEDRIVER = Path(os.environ.get("VSR_CHROMEDRIVER", "/usr/bin/chromedriver"))
JOB_TIMEOUT_S = 300  # a generous bound for a six-frame job on a loaded 2-core machine; the job takes seconds
CLIP_FRAMES = 6


@pytest.fixture(scope="module")
def browser() -> Iterator[object]:
    missing = [str(path) for path in (CHROMIUM, CHROMEDRIVER) if not path.is_file()]
    if missing:
        pytest.fail(
            f"the page test needs a real browser: {', '.join(missing)} missing. Install Debian's chromium and its "
            "driver (`apt-get update && apt-get install -y chromium chromium-driver`; .ci/run does this), or point "
            "VSR_CHROMIUM / VSR_CHROMEDRIVER at them."
        )
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = str(CHROMIUM)
    for argument in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--window-size=1100,1300"):
        options.add_argument(argument)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    driver = webdriver.Chrome(service=Service(str(CHROMEDRIVER)), options=options)
    try:
        yield driver
    finally:
        driver.quit()


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Served, str]]:
    work = tmp_path_factory.mktemp("web-served")
    with serve(work, "--workers", "1", "--web-port", "0", overrides=overrides()) as stack:
        line = stack.wait_for_line("web page:", 10)
        match = re.search(r"(http://127\.0\.0\.1:\d+/)", line)
        assert match, line
        yield stack, match.group(1)


def test_upload_from_the_page_and_follow_the_job_to_the_result(
    browser: object, served: tuple[Served, str], tmp_path: Path
) -> None:
    from selenium.webdriver.common.by import By
    from selenium.webdriver.remote.webdriver import WebDriver
    from selenium.webdriver.support.ui import WebDriverWait

    driver: WebDriver = browser  # type: ignore[assignment]
    stack, url = served
    clip = trim(carphone(), tmp_path / "car phone é.mp4", CLIP_FRAMES)
    driver.get(url)
    WebDriverWait(driver, 30).until(lambda d: d.find_element(By.ID, "who").text.startswith("Local"))
    assert driver.find_element(By.ID, "empty").is_displayed()

    driver.find_element(By.ID, "file").send_keys(str(clip))  # the browser PUTs it to the local S3 endpoint
    upload_id = WebDriverWait(driver, 60).until(lambda d: d.find_element(By.ID, "upload").get_attribute("data-done"))
    assert driver.find_element(By.ID, "upload-progress").get_attribute("value") == "100"
    assert not driver.find_element(By.ID, "message").is_displayed()
    card = f'li.job[data-upload-id="{upload_id}"]'

    def status(d: WebDriver) -> str | None:
        found = d.find_elements(By.CSS_SELECTOR, card)
        return found[0].get_attribute("data-status") if found else None

    seen: set[str] = set()

    def finished(d: WebDriver) -> bool:
        current = status(d)
        if current:
            seen.add(current)
        return current in ("COMPLETE", "FAILED")

    WebDriverWait(driver, JOB_TIMEOUT_S, poll_frequency=0.2).until(finished)
    assert status(driver) == "COMPLETE", driver.find_element(By.CSS_SELECTOR, f"{card} .reason").text
    assert driver.find_element(By.CSS_SELECTOR, f"{card} .name").text == clip.name
    assert driver.find_element(By.CSS_SELECTOR, f"{card} progress").get_attribute("value") == "100"
    assert not driver.find_element(By.ID, "more").is_displayed()  # one upload: no older page
    assert not driver.find_element(By.ID, "empty").is_displayed()

    # the quality check runs after COMPLETE: then the preview and the flicker figure appear
    def preview_loaded(d: WebDriver) -> bool:
        images = d.find_elements(By.CSS_SELECTOR, f"{card} img.preview")
        return bool(images) and bool(
            d.execute_script("return arguments[0].complete && arguments[0].naturalWidth", images[0])
        )

    WebDriverWait(driver, JOB_TIMEOUT_S).until(preview_loaded)
    WebDriverWait(driver, JOB_TIMEOUT_S).until(
        lambda d: d.find_element(By.CSS_SELECTOR, f"{card} dl.figures").get_attribute("data-quality") == "measured"
    )
    preview = driver.find_element(By.CSS_SELECTOR, f"{card} img.preview")
    assert preview.is_displayed() and int(driver.execute_script("return arguments[0].naturalWidth", preview)) > 176
    terms = [e.text for e in driver.find_elements(By.CSS_SELECTOR, f"{card} dl.figures dt")]
    values = dict(
        zip(terms, (e.text for e in driver.find_elements(By.CSS_SELECTOR, f"{card} dl.figures dd")), strict=True)
    )
    assert values["Segments"] == "1" and values["Frames"] == str(CLIP_FRAMES)
    assert re.fullmatch(r"[\d.]+ s", values["Wall time"]), values
    assert re.fullmatch(r"\$\d+\.\d{4}", values["Cost (predicted)"]), values
    assert re.fullmatch(r"\d+\.\d{3}", values["Flicker ratio"]), values

    # the download link: a presigned GET on the local S3 endpoint, returning the frame-exact upscaled video
    link = driver.find_element(By.CSS_SELECTOR, f"{card} a.download")
    assert link.is_displayed() and link.get_attribute("download") == "car phone é.upscaled-x2.mp4"
    href = link.get_attribute("href")
    assert href and href.startswith(stack.endpoint + "/")
    output = tmp_path / "downloaded.mp4"
    with urllib.request.urlopen(href, timeout=60) as response, output.open("wb") as handle:
        shutil.copyfileobj(response, handle)
    assert video_times(output) == video_times(clip)  # every frame, at exactly its source time
    assert video_size(output)[:2] == (2 * 176, 2 * 144)

    shot = tmp_path / "web-page.png"
    assert driver.save_screenshot(str(shot)) and shot.stat().st_size > 10_000
    # a narrow screen: one column, nothing wider than the viewport
    driver.set_window_size(390, 1300)
    WebDriverWait(driver, 10).until(lambda d: d.execute_script("return window.innerWidth") <= 400)
    overflow = driver.execute_script(
        "return document.documentElement.scrollWidth - document.documentElement.clientWidth"
    )
    assert overflow <= 0, f"the page is {overflow} px wider than a narrow screen"
    assert driver.save_screenshot(str(tmp_path / "web-page-narrow.png"))
    print(f"screenshots: {shot} and {tmp_path / 'web-page-narrow.png'}")
    severe = [e for e in driver.get_log("browser") if e["level"] == "SEVERE"]  # type: ignore[attr-defined]
    assert not severe, severe


def test_a_file_that_is_not_a_video_gets_the_apis_reason_on_the_page(
    browser: object, served: tuple[Served, str], tmp_path: Path
) -> None:
    from selenium.webdriver.common.by import By
    from selenium.webdriver.remote.webdriver import WebDriver
    from selenium.webdriver.support.ui import WebDriverWait

    driver: WebDriver = browser  # type: ignore[assignment]
    _stack, url = served
    notes = tmp_path / "notes.txt"
    notes.write_text("not a video\n")
    driver.get(url)
    WebDriverWait(driver, 30).until(lambda d: d.find_element(By.ID, "who").text.startswith("Local"))
    driver.find_element(By.ID, "file").send_keys(str(notes))
    message = WebDriverWait(driver, 30).until(
        lambda d: d.find_element(By.ID, "message").text if d.find_element(By.ID, "message").is_displayed() else None
    )
    assert "does not look like a video file" in message and "notes.txt" in message
