"""The page of `istpan serve` in a real headless Chromium (Debian's chromium + chromium-driver, through selenium):
upload a video and see its top classes and attention overlay, start a stream and watch its decisions arrive until
its end event. The server is the real one (a subprocess); the page talks to it as a user's browser would.
"""

from __future__ import annotations

import functools
import shutil
from pathlib import Path

import pytest

pytest.importorskip("fastapi")
pytest.importorskip("selenium")

from browser import headless_chromium, wait_for
from checkpoints import tiny_checkpoint
from serve_helpers import running_server
from videos import make_video

from istpan.inference.predictor import Predictor

REPO = Path(__file__).resolve().parents[1]


_wait = functools.partial(wait_for, timeout=60.0)  # seconds a page condition may take


@pytest.fixture
def browser():
    with headless_chromium() as driver:
        yield driver


@pytest.mark.slow
def test_page_upload_and_stream(tmp_path: Path, browser) -> None:
    media = tmp_path / "media"
    video = make_video(media / "walk.mp4", num_frames=40, size=(48, 64))
    checkpoint = tiny_checkpoint(tmp_path / "model.pt")[2]
    want = Predictor.from_checkpoint(checkpoint).predict(str(video), topk=4)["top"]
    with running_server(checkpoint, tmp_path, "--media-root", str(media)) as (url, _):
        browser.get(url + "/")
        assert _wait(browser, "return document.getElementById('model').textContent.includes('4 classes')")

        browser.find_element("id", "video").send_keys(str(video))
        browser.find_element("id", "predict").click()
        assert _wait(browser, "return document.body.dataset.predicted === '1'"), \
            browser.find_element("id", "predict-status").text
        rows = [r.text.split() for r in browser.find_elements("css selector", "#top tbody tr")]
        assert [r[0] for r in rows] == [t["class"] for t in want]  # what the Predictor says, in order
        assert [float(r[1]) for r in rows] == pytest.approx([t["score"] for t in want], abs=1e-3)
        assert _wait(browser, "const i = document.getElementById('overlay-grid'); return i.complete && "
                     "i.naturalWidth > 0")  # the attention overlay, fetched with the API's auth and shown
        assert _wait(browser, "return document.getElementById('overlay-video').readyState >= 2")

        browser.find_element("id", "source").send_keys("walk.mp4")
        browser.find_element("id", "start").click()
        assert _wait(browser, "return document.body.dataset.streamEnded === '1'")
        items = [li.text for li in browser.find_elements("css selector", "#decisions li")]
        assert items[0] == "ended: end of stream"  # newest first
        decisions = items[1:]
        assert len(decisions) == 40 - 3 + 1  # one decision per frame once K = 3 frames are in
        assert all(d.split()[2] in "abcd" for d in decisions)

        browser.find_element("id", "source").clear()
        browser.find_element("id", "source").send_keys("../model.pt")
        browser.find_element("id", "start").click()
        assert _wait(browser, "return document.getElementById('stream-status').textContent.includes('403')")

        errors = [e for e in browser.get_log("browser") if e["level"] == "SEVERE" and "403" not in e["message"]]
        assert errors == [], errors
        shot = tmp_path / "serve_page.png"
        browser.save_screenshot(str(shot))
        keep = REPO / "outputs" / "tests"
        keep.mkdir(parents=True, exist_ok=True)
        shutil.copy(shot, keep / "serve_page.png")
