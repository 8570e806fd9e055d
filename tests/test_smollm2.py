"""The product's default model, SmolLM2-135M-Instruct (q4f32), end to end in Chromium."""

import json

import pytest
from reference import ReferenceModel
from tokenizers import Tokenizer

MESSAGES = [{"role": "user", "content": "Write a short poem about the sea."}]
TOKENS = 20


@pytest.fixture(scope="module")
def smollm2_page(smollm2_q4, browser):
    from compiler.browser import open_engine_page, serve_folder

    with serve_folder(smollm2_q4) as url:
        page = open_engine_page(browser, url)
        yield page
        page.close()


def test_tokenizer_matches_python_tokenizers(smollm2_q4, smollm2_page):
    python = Tokenizer.from_file(str(smollm2_q4 / "tokenizer.json"))
    texts = [
        "Hello world 12345",
        "<|im_start|>user\nWhat's 2+2? Ça va? 你好 🙂<|im_end|>\n",
        "def f(x):\n    return x  # comment\n\n\n",
        "   leading and trailing   ",
    ]
    ids = smollm2_page.evaluate("(ts) => ts.map((t) => engine.tokenizer.encode(t))", texts)
    assert ids == [python.encode(t, add_special_tokens=False).ids for t in texts]


def test_greedy_reply_matches_reference(smollm2_q4, smollm2_page):
    prompt = smollm2_page.evaluate(
        "(m) => engine.tokenizer.encode(engine.tokenizer.applyChatTemplate(m))", MESSAGES
    )
    expected = ReferenceModel(smollm2_q4).greedy(prompt, TOKENS)
    tokens = smollm2_page.evaluate(
        "async ([p, n]) => (await engine.generate(p, {temperature: 0, max_tokens: n})).tokens",
        [prompt, TOKENS],
    )
    assert tokens == expected[: len(tokens)] and len(tokens) >= 16
    tokenizer = Tokenizer.from_file(str(smollm2_q4 / "tokenizer.json"))
    request = {"messages": MESSAGES, "max_tokens": TOKENS, "temperature": 0}
    reply = smollm2_page.evaluate("async (r) => await engine.chat.completions.create(r)", request)
    text = reply["choices"][0]["message"]["content"]
    assert text == tokenizer.decode(tokens, skip_special_tokens=True)
    streamed = smollm2_page.evaluate(
        """async (r) => {
            let text = "";
            for await (const c of await engine.chat.completions.create({...r, stream: true}))
                text += c.choices[0].delta.content ?? "";
            return text;
        }""",
        request,
    )
    assert streamed == text
    # The follow-up turn reuses the cached prefix: only the new tokens are prefilled.
    follow_up = {
        "messages": MESSAGES + [{"role": "assistant", "content": text}],
        "max_tokens": 2,
        "temperature": 0,
    }
    follow_up["messages"].append({"role": "user", "content": "Thanks!"})
    second = smollm2_page.evaluate(
        "async (r) => await engine.chat.completions.create(r)", follow_up
    )
    assert second["usage"]["extra"]["prefill_tokens"] < second["usage"]["prompt_tokens"] / 2
    print(json.dumps(reply["usage"]))
