"""Take the README's screenshot of the demo page (docs/demo.png) with a real model.

    python tools/demo_screenshot.py [--model DIR | --preset tiny] [--example synth-rec] [--out docs/demo.png]

Starts `python -m mome.demo` on a free port of 127.0.0.1 exactly as a user would (with no --model/--preset it
picks runs/tiny-synth/stage2/final if it exists, else the untrained tiny preset), clicks one of the synthetic
benchmark's examples in headless Chromium (Debian's ``chromium``, driven by Playwright), asks, waits for the answer
and both charts, saves the top of the page, and stops the server.
"""

from __future__ import annotations

import argparse
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _wait_for(url: str, server: subprocess.Popen, timeout: float = 180) -> None:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if server.poll() is not None:
            sys.exit(f"the demo server exited with status {server.returncode}")
        try:
            urllib.request.urlopen(url, timeout=2)
            return
        except OSError:
            time.sleep(0.5)
    sys.exit(f"the demo server did not answer at {url} within {timeout:.0f} s")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    source = parser.add_mutually_exclusive_group()
    source.add_argument("--model")
    source.add_argument("--preset")
    parser.add_argument("--example", default="synth-rec", help="the synthetic dataset whose example is asked")
    parser.add_argument("--out", default=str(ROOT / "docs" / "demo.png"))
    args = parser.parse_args()

    from playwright.sync_api import expect, sync_playwright

    from mome.data.synth import DATASETS

    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    if chromium is None:
        sys.exit("no Chromium: apt-get install -y chromium")
    port = _free_port()
    cmd = [sys.executable, "-m", "mome.demo", "--port", str(port)]
    cmd += ["--model", args.model] if args.model else ["--preset", args.preset] if args.preset else []
    server = subprocess.Popen(cmd, cwd=ROOT)
    try:
        url = f"http://127.0.0.1:{port}/"
        _wait_for(url, server)
        with sync_playwright() as p:
            browser = p.chromium.launch(executable_path=chromium, headless=True, args=["--no-sandbox"])
            try:
                page = browser.new_page(viewport={"width": 1280, "height": 1100})
                page.set_default_timeout(120_000)
                page.goto(url)
                page.locator("table tbody tr").nth(list(DATASETS).index(args.example)).click()
                expect(page.locator("#demo-image img").first).to_be_visible()
                page.locator("#demo-ask").click()
                expect(page.locator("#demo-answer textarea")).not_to_have_value("")
                for chart in ("#demo-vision-chart", "#demo-language-chart"):
                    expect(page.locator(f"{chart} img").first).to_be_visible()
                page.evaluate("window.scrollTo(0, 0)")  # clicking the example scrolled down to it
                page.wait_for_timeout(500)  # let the images finish fading in
                Path(args.out).parent.mkdir(parents=True, exist_ok=True)
                page.screenshot(path=args.out)
                print(f"answer: {page.locator('#demo-answer textarea').input_value()!r}")
            finally:
                browser.close()
    finally:
        server.terminate()
        try:
            server.wait(timeout=20)
        except subprocess.TimeoutExpired:
            server.kill()
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
