"""Without WebGPU the runtime says so clearly instead of failing somewhere inside."""

from compiler.browser import CHROMIUM, CHROMIUM_ARGS, serve_folder


def test_engine_reports_missing_webgpu(playwright, tiny_built):
    args = [a for a in CHROMIUM_ARGS if a != "--enable-unsafe-webgpu"] + ["--disable-webgpu"]
    browser = playwright.chromium.launch(executable_path=CHROMIUM, args=args)
    try:
        with serve_folder(tiny_built("q0f32")) as url:
            page = browser.new_page()
            page.goto(f"{url}/manifest.json")
            error = page.evaluate(
                """async (url) => {
                    const kiln = await import(url + "/kiln.js");
                    try { await kiln.CreateEngine(url); return null; }
                    catch (e) { return {name: e.name, message: e.message}; }
                }""",
                url,
            )
    finally:
        browser.close()
    assert error["name"] == "WebGPUUnavailableError"
    assert "WebGPU is not available" in error["message"]
