"""The web page in a real browser: Debian's Chromium driven headless by Playwright, against the server on a free
loopback port."""

import json

import httpx
import pytest
from serve_helpers import CHROMIUM, NO_CHROMIUM, browser_page, digit_png, served

pytestmark = pytest.mark.skipif(not CHROMIUM.exists(), reason=NO_CHROMIUM)


@pytest.fixture(scope="module")
def server(digits_run):
    from modelforge.serve.app import ServeSettings, create_app
    from modelforge.serve.batching import BatchSettings

    with served(create_app([digits_run.directory], ServeSettings(batch=BatchSettings(max_wait_ms=2)))) as url:
        yield url


@pytest.fixture(scope="module")
def page(server):
    with browser_page(server, "digits-cnn") as page:
        yield page


def test_upload_a_digit_shows_its_prediction(page, server, tmp_path):
    png, _ = digit_png(3)
    file = tmp_path / "digit.png"
    file.write_bytes(png)
    expected = httpx.post(f"{server}/models/digits-cnn/predict", files={"file": ("d.png", png)}).json()
    top = expected["predictions"][0]

    with page.expect_response("**/models/digits-cnn/predict"):
        page.set_input_files("#file", str(file))
    page.wait_for_selector("#result:not([hidden])")
    assert page.text_content("#label") == top["label"]
    rows = page.locator("#predictions tr")
    assert rows.count() == len(top["top"]) == 5
    assert rows.nth(0).locator("td").nth(0).text_content() == top["label"]
    assert rows.nth(0).locator("td").nth(2).text_content() == f"{100 * top['probability']:.1f}%"


def test_draw_a_digit_shows_the_servers_prediction(page, server):
    page.click("#clear")
    box = page.locator("#canvas").bounding_box()
    x0, y0 = box["x"], box["y"]
    # a "7": a bar across the top, then a diagonal down to the bottom left
    page.mouse.move(x0 + 70, y0 + 60)
    page.mouse.down()
    for x, y in [(140, 60), (210, 60), (180, 130), (150, 200), (130, 240)]:
        page.mouse.move(x0 + x, y0 + y, steps=6)
    page.mouse.up()

    with page.expect_request("**/models/digits-cnn/predict") as sent:
        page.click("#predict-drawing")
    payload = json.loads(sent.value.post_data)
    assert payload["inputs"][0].startswith("data:image/png;base64,")
    page.wait_for_selector("#result:not([hidden])")
    shown = page.text_content("#label")

    # the same drawing sent by hand gets the same answer: the page shows the server's prediction
    again = httpx.post(f"{server}/models/digits-cnn/predict", json=payload).json()["predictions"][0]
    assert shown == again["label"] and shown in [str(i) for i in range(10)]
    assert page.text_content("#status") == ""


def test_page_reports_errors_from_the_server(page, tmp_path):
    bad = tmp_path / "not-an-image.png"
    bad.write_bytes(b"this is not a PNG")
    page.set_input_files("#file", str(bad))
    page.wait_for_function("document.getElementById('status').textContent.includes('not a readable image')")
