"""The chat site build-web writes next to its model folders, driven like a user would in
Chromium: picker, progress, streamed Markdown replies, stop, new chat, cached weights, and
a screenshot read back with OCR."""

from __future__ import annotations

import json
import logging
import re
import subprocess

import pytest
from aiohttp import web

from tools.browser import RECORD_DEVICES, serve_folder

# Records what the page shows while it works: progress texts, and each change of the reply.
WATCH = """
window.__seen = {progress: [], replyUpdates: 0};
let lastReply = "";
new MutationObserver(() => {
    const progress = document.getElementById("progress-text");
    if (progress && progress.textContent) window.__seen.progress.push(progress.textContent);
    const reply = document.querySelector(".message.assistant:last-child .content");
    if (reply && reply.textContent && reply.textContent !== lastReply) {
        lastReply = reply.textContent;
        window.__seen.replyUpdates++;
    }
}).observe(document, {subtree: true, childList: true, characterData: true, attributes: true});
"""


class RequestLog(logging.Handler):
    """The server's own log of requests (logger kiln.serve)."""

    def __init__(self):
        super().__init__()
        self.paths: list[str] = []

    def emit(self, record):
        self.paths.append(record.getMessage())


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(len(ordered) * q / 100))]


@pytest.fixture
def request_log():
    handler = RequestLog()
    logger = logging.getLogger("kiln.serve")
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    yield handler
    logger.removeHandler(handler)


def wait_ready(page, timeout=60_000):
    page.wait_for_function("!document.getElementById('prompt').disabled", timeout=timeout)


def setting(page, field, value):
    if page.get_attribute("#settings", "open") is None:
        page.click("#settings summary")
    page.fill(f"#{field}", value)


def ask(page, text):
    page.fill("#prompt", text)
    page.click("#send")


def test_site_chats_with_streaming_stop_and_cached_reload(tiny_built, browser, request_log):
    q4 = tiny_built("q4f32")
    tiny_built("q0f32")  # a second model in the same folder, for the picker
    site = q4.parent
    listing = json.loads((site / "models.json").read_text())["models"]
    assert {m["path"] for m in listing} >= {"q4f32/", "q0f32/"}
    shards = [s["file"] for s in json.loads((q4 / "manifest.json").read_text())["shards"]]
    with serve_folder(site) as url:
        context = browser.new_context(viewport={"width": 900, "height": 900})
        context.add_init_script(WATCH)
        page = context.new_page()
        # On WebGPU: the tiny model on the CPU backend answers faster than Stop can be clicked.
        model_id = json.loads((q4 / "manifest.json").read_text())["model_id"]
        page.goto(f"{url}/?model={model_id}&backend=webgpu")
        wait_ready(page)
        options = page.eval_on_selector_all("#model option", "os => os.map(o => o.value)")
        assert len(options) == len(listing)
        progress = page.evaluate("window.__seen.progress")
        assert any(re.search(r"\d+% · [\d.]+ / [\d.]+ MB", p) for p in progress), progress
        assert page.locator("#problem").is_hidden()

        # A streamed reply, with the speeds shown after it; the page keeps painting meanwhile:
        # a 20 ms timer fires about as often while it generates as while it is idle (a ratio,
        # which a busy machine slows alike).
        setting(page, "max-tokens", "24")
        start_timer = """() => { window.__gaps = []; let last = performance.now();
            window.__timer = setInterval(() => { const t = performance.now();
                window.__gaps.push(t - last); last = t; }, 20); }"""
        stop_timer = "() => { clearInterval(window.__timer); return window.__gaps; }"
        page.evaluate(start_timer)
        page.wait_for_timeout(1500)
        idle = page.evaluate(stop_timer)
        page.evaluate(start_timer)
        ask(page, "Hello there")
        page.wait_for_function("document.getElementById('stats').textContent.includes('decode')")
        busy = page.evaluate(stop_timer)
        assert percentile(busy, 90) <= 5 * percentile(idle, 90), (idle, busy)
        assert page.locator(".message.user .content").inner_text() == "Hello there"
        assert page.evaluate("window.__seen.replyUpdates") >= 2
        assert page.locator(".message.assistant .content").inner_text().strip() != ""
        # The reply went through the Markdown renderer (paragraphs as elements).
        assert page.locator(".message.assistant .content p").count() >= 1
        assert re.search(r"prefill [\d.]+ tok/s · decode [\d.]+ tok/s", page.inner_text("#stats"))

        # Stop, clicked once the reply's first words are on the page, ends it early and marks it.
        page.click("#new-chat")
        setting(page, "max-tokens", "100")
        ask(page, "Tell me more")
        page.wait_for_function(
            "document.querySelector('.message.assistant:last-child .content')"
            "?.textContent.trim().length > 0"
        )
        page.click("#stop")
        page.wait_for_function("!document.getElementById('send').disabled")
        assert "stopped" in page.get_attribute(".message.assistant:last-child", "class")
        page.wait_for_function("document.getElementById('stats').textContent.includes('tokens')")
        assert int(re.search(r"(\d+) tokens", page.inner_text("#stats"))[1]) < 100

        page.click("#new-chat")
        assert page.locator(".message").count() == 0

        # A reload loads the weights from the browser's cache: no shard request reaches the server.
        request_log.paths.clear()
        page.reload()
        wait_ready(page)
        assert not [p for p in request_log.paths if any(s in p for s in shards)]
        assert any("manifest.json" in p for p in request_log.paths)

        # "Clear cache" empties the store; the next load fills it again. (The shards may still
        # come from the browser's HTTP cache: their names carry their hash, so they are immutable.)
        cached = "async () => (await (await caches.open('kiln-weights-v1')).keys()).length"
        assert page.evaluate(cached) == len(shards)
        page.click("#clear-cache")
        page.wait_for_function("document.getElementById('status').textContent.includes('cleared')")
        assert page.evaluate(cached) == 0
        page.reload()
        wait_ready(page)
        assert page.evaluate(cached) == len(shards)
        context.close()


# Appended to kiln-worker.js as served: the worker keeps its GPU devices and destroys the last
# one when the page says so on a BroadcastChannel (what a GPU reset looks like to it); the
# runtime has no such hook.
LOSABLE = f"""
{RECORD_DEVICES}
new BroadcastChannel("kiln-test").onmessage = (event) => {{
  if (event.data === "lose-device") globalThis.__devices.at(-1)?.destroy();
}};
"""


def test_site_shows_a_lost_device_and_reloads_the_model(tiny_built, browser):
    """The GPU device of the page's worker is lost between two requests: the next request
    fails, the page shows the device-lost panel, and its Reload button brings the chat back."""
    site = tiny_built("q4f32").parent

    async def losable_worker(request: web.Request, handler):
        if request.path != "/kiln-worker.js":
            return await handler(request)
        script = (site / "kiln-worker.js").read_text() + LOSABLE
        return web.Response(text=script, content_type="text/javascript")

    with serve_folder(site, middlewares=(losable_worker,)) as url:
        context = browser.new_context()
        page = context.new_page()
        uncaught: list[str] = []
        page.on("pageerror", lambda err: uncaught.append(str(err)))
        model_id = json.loads((tiny_built("q4f32") / "manifest.json").read_text())["model_id"]
        page.goto(f"{url}/?model={model_id}&backend=webgpu")
        wait_ready(page)
        setting(page, "max-tokens", "4")
        setting(page, "temperature", "0")  # greedy: the same reply after the reload
        ask(page, "Hello")
        page.wait_for_function("document.getElementById('stats').textContent.includes('GPU')")
        first = page.locator(".message.assistant .content").inner_text()

        page.evaluate('new BroadcastChannel("kiln-test").postMessage("lose-device")')
        page.wait_for_timeout(200)
        ask(page, "Hello")
        page.wait_for_selector("#problem:not([hidden])")
        assert page.inner_text("#problem-title") == "The GPU device was lost"
        assert page.locator("#problem-action").is_visible()
        assert page.locator(".message.error").count() == 1
        assert page.locator("#prompt").is_disabled()

        page.click("#problem-action")
        wait_ready(page)
        assert page.locator("#problem").is_hidden()
        ask(page, "Hello")
        page.wait_for_function("document.getElementById('stats').textContent.includes('GPU')")
        assert page.locator(".message.assistant .content").inner_text() == first
        assert uncaught == []
        context.close()


def test_site_chats_on_the_cpu_without_webgpu(playwright, tiny_built):
    """With WebGPU turned off the page loads the model on the CPU backend and says so."""
    from tools.browser import CHROMIUM, CHROMIUM_ARGS

    args = [a for a in CHROMIUM_ARGS if a != "--enable-unsafe-webgpu"] + ["--disable-webgpu"]
    browser = playwright.chromium.launch(executable_path=CHROMIUM, args=args)
    try:
        with serve_folder(tiny_built("q4f32").parent) as url:
            page = browser.new_page()
            page.goto(f"{url}/")
            wait_ready(page)
            assert page.locator("#problem").is_hidden()
            setting(page, "max-tokens", "6")
            ask(page, "Hello")
            page.wait_for_function("document.getElementById('stats').textContent.includes('tok/s')")
            assert "on the CPU (WebAssembly)" in page.inner_text("#stats")
    finally:
        browser.close()


def test_screenshot_of_a_reply_shows_its_text(smollm2_q4, browser, tmp_path):
    """SmolLM2 answers on the page; OCR of a screenshot finds the reply's words."""
    with serve_folder(smollm2_q4.parent) as url:
        page = browser.new_page(viewport={"width": 1000, "height": 800})
        page.goto(
            f"{url}/?model={json.loads((smollm2_q4 / 'manifest.json').read_text())['model_id']}"
        )
        wait_ready(page, timeout=180_000)
        setting(page, "temperature", "0")
        setting(page, "max-tokens", "16")
        ask(page, "What is the capital of France?")
        page.wait_for_function(
            "document.getElementById('stats').textContent.includes('decode')", timeout=180_000
        )
        reply = page.locator(".message.assistant .content").inner_text()
        shot = tmp_path / "reply.png"
        page.locator("#log").screenshot(path=str(shot))
        page.close()
    seen = subprocess.run(
        ["tesseract", str(shot), "-", "--psm", "6"], capture_output=True, text=True, check=True
    ).stdout
    words = [w for w in re.findall(r"[A-Za-z]{3,}", reply)]
    assert len(words) >= 3, reply
    found = [w for w in words if w.lower() in seen.lower()]
    assert len(found) >= 0.8 * len(words), (reply, seen)
