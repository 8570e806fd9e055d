"""The chat page served by build-web answers in the browser, streaming its reply."""

from compiler.browser import serve_folder


def test_chat_page_answers(tiny_built, page):
    with serve_folder(tiny_built("q4f32")) as url:
        page.goto(f"{url}/")
        prompt = page.locator("#prompt")
        prompt.wait_for(state="visible")
        page.wait_for_function("!document.getElementById('prompt').disabled", timeout=60_000)
        assert "Loaded" in page.locator("#status").inner_text()
        prompt.fill("Hello there")
        page.click("#send")
        page.wait_for_function(
            "document.getElementById('status').textContent.includes('decode')", timeout=60_000
        )
        assert page.locator(".user").inner_text() == "You: Hello there"
        assert page.locator(".assistant").inner_text().strip() != ""
        assert page.locator(".error").count() == 0
