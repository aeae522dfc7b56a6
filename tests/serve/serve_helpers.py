"""Helpers shared by the serve tests (a module of its own: importing from conftest is fragile)."""

import contextlib
import io
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np


def digit_png(index: int, size: int = 8) -> tuple[bytes, int]:
    """A scikit-learn digit as PNG bytes (white ink on black, as the model was trained) and its true label."""
    from PIL import Image
    from sklearn.datasets import load_digits

    digits = load_digits()
    image = Image.fromarray(np.uint8(np.clip(np.rint(digits.images[index] * 255 / 16), 0, 255)))
    if size != 8:
        image = image.resize((size, size), Image.NEAREST)
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue(), int(digits.target[index])


CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync"]
NO_CHROMIUM = "/usr/bin/chromium is not installed (apt-get install chromium; make setup-system)"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@contextlib.contextmanager
def served(app, settings=None) -> Iterator[str]:
    """The hardened uvicorn server (``serve.server``, with ``settings``) serving ``app`` in a thread on a free
    loopback port (a subprocess would pay for a second torch import); yields the base URL and stops the server on
    exit."""
    from modelforge.serve.server import ServerSettings, build_server

    port = free_port()
    server = build_server(app, "127.0.0.1", port, settings or ServerSettings(), log_level="warning", access_log=False)
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            raise RuntimeError("uvicorn did not start serving within 30 s")
        time.sleep(0.05)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(timeout=15)


@contextlib.contextmanager
def browser_page(url: str, first_model: str) -> Iterator[Any]:
    """Debian's Chromium, headless through Playwright (never a downloaded browser), on the page at ``url`` once
    its model list holds ``first_model``."""
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        try:
            page = browser.new_page()
            page.set_default_timeout(20_000)
            page.goto(url)
            page.wait_for_selector(f"#model option[value='{first_model}']", state="attached")
            yield page
        finally:
            browser.close()
