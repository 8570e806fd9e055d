"""The chat page also works from inside one model folder (no models.json): it offers that
model and answers with it."""

from tools.browser import serve_folder


def test_chat_page_in_a_model_folder_answers(tiny_built, page):
    with serve_folder(tiny_built("q4f32")) as url:
        page.goto(f"{url}/")
        page.wait_for_function("!document.getElementById('prompt').disabled", timeout=60_000)
        options = page.eval_on_selector_all("#model option", "os => os.map(o => o.value)")
        manifest = page.evaluate("fetch('manifest.json').then(r => r.json())")
        assert options == [manifest["model_id"]]
        # Beside the picker, checkModel's verdict: once loaded, the weights are all cached.
        shards = sum(s["bytes"] for s in manifest["shards"]) / 1e6
        page.wait_for_function(
            f"document.getElementById('fit').textContent.includes('{shards:.1f} MB cached')"
        )
        assert page.locator("#fit").inner_text().startswith("0.0 MB to download")
        assert "fits on the" in page.locator("#fit").inner_text()
        page.fill("#prompt", "Hello there")
        page.click("#send")
        page.wait_for_function(
            "document.getElementById('stats').textContent.includes('decode')", timeout=60_000
        )
        assert page.locator(".message.user .content").inner_text() == "Hello there"
        assert page.locator(".message.assistant .content").inner_text().strip() != ""
        assert page.locator(".message.error").count() == 0
