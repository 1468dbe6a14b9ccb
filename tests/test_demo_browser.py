"""The demo in a real browser: headless Chromium (Debian's package) driven by Playwright."""

import os
import shutil
import time

import pytest

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
ARGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking",
        "--disable-component-update", "--disable-sync"]


@pytest.mark.slow
@pytest.mark.skipif(not os.path.exists(CHROMIUM) and os.geteuid() != 0,
                    reason="Debian's chromium is not installed and this user cannot install it "
                           "(make setup installs it where it runs as root, as in CI)")
def test_demo_in_headless_chromium(demo_url, tmp_path):
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=ARGS)
        page = browser.new_page(viewport={"width": 1000, "height": 900})
        page.goto(demo_url)
        notice = page.get_by_text("Not medical advice")
        notice.wait_for(timeout=60_000)  # Gradio renders in the browser after load
        assert notice.is_visible()
        # a preset by name sets thinking and the sliders; instruct turns thinking off
        page.locator("#preset").get_by_text("instruct", exact=True).click()
        page.wait_for_function("!document.querySelector('#thinking input').checked", timeout=10_000)
        page.locator("#preset").get_by_text("thinking-precise", exact=True).click()
        page.wait_for_function("document.querySelector('#thinking input').checked", timeout=10_000)
        page.get_by_text("Advanced").click()
        assert page.get_by_label("temperature").first.input_value() == "0.6"
        page.locator("#question textarea").fill("What is the antidote for opioid overdose?")
        page.locator("#send").click()
        page.get_by_text("Thinking").first.wait_for(timeout=120_000)
        chat = page.locator("#chat")
        last, deadline = None, time.time() + 120
        while time.time() < deadline:  # the stream is finished when the chat stops changing
            text = chat.inner_text()
            if text == last:
                break
            last = text
            time.sleep(2)
        page.screenshot(path=str(tmp_path / "demo.png"), full_page=True)
        browser.close()
    assert (tmp_path / "demo.png").stat().st_size > 10_000
    after_thinking = last.split("Thinking", 1)[1].strip()
    assert after_thinking, "no answer below the Thinking block"
    assert "backend failed" not in last


@pytest.mark.skipif(not os.path.exists(CHROMIUM) and os.geteuid() != 0,
                    reason="Debian's chromium is not installed and this user cannot install it")
def test_chinese_examples_render_as_glyphs_not_boxes():
    """Without a CJK font every Chinese character is drawn as the same missing-glyph box, so two
    different characters render to identical pixels."""
    from playwright.sync_api import sync_playwright

    from kit.demo import EXAMPLES

    chinese = next(e for e in EXAMPLES if "\u4e00" <= e[0] <= "\u9fff")
    a, b = chinese[0], chinese[1]
    assert a != b
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=ARGS)
        page = browser.new_page()
        shots = []
        for char in (a, b):  # each alone at the same place, so only the glyph can differ
            page.set_content(f'<span id="c" style="font-size:48px">{char}</span>')
            shots.append(page.locator("#c").screenshot())
        browser.close()
    shot_a, shot_b = shots
    assert shot_a != shot_b, "Chinese renders as boxes: install a CJK font (Debian: fonts-noto-cjk; `make setup` does)"
