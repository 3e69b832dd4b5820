"""End to end: the demo's server on 127.0.0.1, driven in headless Chromium by Playwright.

Debian's ``chromium`` is the browser (Playwright's own browser download needs a network this project does not
have); ``.ci/run`` installs it. The screenshot is a test artifact (``demo.png`` in the test's tmp dir); the README's
is taken by `tools/demo_screenshot.py` with a real model instead of this test's fixed answer.
"""

import io
import os
import re
import shutil
import socket

import pytest

pytest.importorskip("gradio", reason="the demo needs Gradio: pip install -e '.[demo]'")

CHROMIUM = next(filter(None, (shutil.which(n) for n in ("chromium", "chromium-browser", "google-chrome"))), None)
try:
    from playwright.sync_api import expect, sync_playwright
except ImportError:
    sync_playwright = None
MISSING = [what for what, missing in (("Chromium (Debian: apt-get install -y chromium)", CHROMIUM is None),
                                      ("Playwright (pip install -e '.[demo]')", sync_playwright is None)) if missing]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class BoxAnswers:
    """The real model, except that its answer is `text`: an untrained model never writes a box, and the page's
    overlay is what is under test here. The routing is the model's own."""

    def __init__(self, model, text):
        self._model, self._text = model, text

    def __getattr__(self, name):
        return getattr(self._model, name)

    def generate(self, *args, **kwargs):
        results = self._model.generate(*args, **kwargs)
        for r in results:
            r.text = self._text
        return results


@pytest.fixture
def server(tiny_demo, example_rows):
    os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")
    from mome.demo import Demo, build_page

    demo = Demo(BoxAnswers(tiny_demo.model, "the box is [0.250, 0.125, 0.750, 0.625]"), tiny_demo.label)
    page = build_page(demo, example_rows)
    page.queue(default_concurrency_limit=1)
    port = _free_port()
    page.launch(server_name="127.0.0.1", server_port=port, prevent_thread_lock=True, quiet=True,
                allowed_paths=[os.path.commonpath([r[0] for r in example_rows])])
    try:
        yield f"http://127.0.0.1:{port}/"
    finally:
        page.close()


@pytest.mark.skipif(bool(MISSING), reason="the browser test needs " + " and ".join(MISSING))
def test_page_in_a_browser(server, example_rows, tmp_path):
    from PIL import Image

    from mome.demo import BOX_COLOR

    image, prompt = next(r for r in example_rows if "synth-rec" in r[0])
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, headless=True, args=["--no-sandbox"])
        try:
            page = browser.new_page(viewport={"width": 1280, "height": 1000})
            page.set_default_timeout(30_000)
            page.goto(server)
            expect(page.locator("#demo-status")).to_contain_text("tiny")

            # a file that is not an image: a message on the page, no stack trace
            bad = tmp_path / "notes.png"
            bad.write_text("not an image")
            page.locator("#demo-image input[type=file]").set_input_files(str(bad))
            page.locator("#demo-prompt textarea").fill(prompt)
            page.locator("#demo-ask").click()
            expect(page.locator("#demo-message")).to_contain_text("not an image")
            expect(page.locator("#demo-answer textarea")).to_have_value("")

            page.locator("#demo-image button[aria-label='Remove Image']").first.click()
            page.locator("#demo-image input[type=file]").set_input_files(image)
            expect(page.locator("#demo-image img").first).to_be_visible()
            page.locator("#demo-ask").click()
            expect(page.locator("#demo-answer textarea")).to_have_value(re.compile(r"\[0\.250, 0\.125"))
            for chart in ("#demo-overlay", "#demo-vision-chart", "#demo-language-chart"):
                expect(page.locator(f"{chart} img").first).to_be_visible()
            expect(page.locator("#demo-message")).not_to_contain_text("not an image")

            overlay = Image.open(io.BytesIO(page.locator("#demo-overlay img").first.screenshot())).convert("RGB")
            box_pixels = sum(1 for px in overlay.getdata() if all(abs(a - b) < 40 for a, b in zip(px, BOX_COLOR)))
            assert box_pixels > 100, "the predicted box is not drawn on the image"

            page.screenshot(path=str(tmp_path / "demo.png"), full_page=True)
            print(f"screenshot: {tmp_path / 'demo.png'}")

            # the examples are one click away
            page.get_by_text("What is the value of bar").first.click()
            expect(page.locator("#demo-prompt textarea")).to_have_value(re.compile("What is the value of bar"))

            # a model folder that does not load: a message, and the model stays
            page.get_by_text("Load another model").click()
            page.locator("#demo-folder").get_by_role("textbox").fill(str(tmp_path / "no-model"))
            page.locator("#demo-load").click()
            expect(page.locator("#demo-message")).to_contain_text("is not a folder")
            expect(page.locator("#demo-status")).to_contain_text("tiny")
        finally:
            browser.close()
