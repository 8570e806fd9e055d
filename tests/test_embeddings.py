"""engine.embeddings.create on BERT encoders, in Chromium on both backends: a tiny random BERT
against transformers (BertModel, then sentence-transformers' mean pooling over the attention
mask and normalization, computed here in torch), batches against one input at a time,
base64 against floats, and the request's errors."""

from __future__ import annotations

import base64
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from compare import BACKENDS
from openai.types import CreateEmbeddingResponse
from tiny_bert import make_bert
from tokenizers import Tokenizer
from transformers import BertModel

from compiler.build import build
from compiler.resources import cache_dir
from tools.browser import serve_folder

TEXTS = [
    "The quick brown fox jumps over the lazy dog.",
    "fox",
    "Über Café naïve façade",
    "数据 模型 浏览器",
    "Привет мир",
    "def main(): print('hello world') and numbers 0123456789 appear too",
    "emoji 🙂 and tabs\tend",
]


@pytest.fixture(scope="module")
def tiny_bert(tmp_path_factory):
    folder = make_bert(tmp_path_factory.mktemp("bert") / "hf", seed=5)
    built = build(str(folder), None, tmp_path_factory.mktemp("built") / "tiny-bert")
    return folder, built


def reference(folder, texts: list[str]) -> tuple[np.ndarray, list[list[int]]]:
    """sentence-transformers' computation: token states, their mean over the attention mask,
    divided by its length; the tokenizer without the file's padding and truncation."""
    tokenizer = Tokenizer.from_file(str(folder / "tokenizer.json"))
    tokenizer.no_padding()
    tokenizer.no_truncation()
    ids = [tokenizer.encode(t).ids for t in texts]
    model = BertModel.from_pretrained(folder, dtype=torch.float32).eval()
    out = []
    with torch.no_grad():
        for row in ids:
            states = model(torch.tensor([row])).last_hidden_state[0]
            mean = states.mean(0)
            out.append((mean / mean.norm().clamp_min(1e-12)).numpy())
    return np.stack(out), ids


def cosines(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return (a * b).sum(1) / np.linalg.norm(a, axis=1) / np.linalg.norm(b, axis=1)


def embed(page, request: dict) -> dict:
    return page.evaluate("(r) => engine.embeddings.create(r)", request)


@pytest.mark.parametrize("backend", BACKENDS)
def test_tiny_bert_matches_transformers(tiny_bert, engine_page, backend):
    folder, built = tiny_bert
    expected, ids = reference(folder, TEXTS)
    assert max(len(row) for row in ids) > 16  # past the tokenizer file's padding length
    with engine_page(built, backend=backend) as page:
        stats = page.evaluate("async () => await engine.runtimeStats()")
        assert stats["backend"] == backend and stats["task"] == "embedding"
        model = stats["model_id"]
        response = embed(page, {"model": model, "input": TEXTS})
        one_by_one = [embed(page, {"input": text})["data"][0]["embedding"] for text in TEXTS]
        coded = embed(page, {"input": TEXTS[:2], "encoding_format": "base64"})
        by_ids = embed(page, {"input": ids[0]})
    CreateEmbeddingResponse.model_validate(response, strict=True)
    assert response["usage"] == {
        "prompt_tokens": sum(map(len, ids)),
        "total_tokens": sum(map(len, ids)),
    }
    got = np.array([d["embedding"] for d in response["data"]], dtype=np.float32)
    assert [d["index"] for d in response["data"]] == list(range(len(TEXTS)))
    error = np.abs(got - expected).max() / np.abs(expected).max()
    assert error < 1e-3, f"relative error {error}"
    # Batched inputs (padded to the longest, masked) give what each alone gives.
    np.testing.assert_allclose(np.array(one_by_one), got, rtol=0, atol=1e-5)
    for item, row in zip(coded["data"], got[:2], strict=True):
        decoded = np.frombuffer(base64.b64decode(item["embedding"]), dtype="<f4")
        np.testing.assert_array_equal(decoded, row)
    np.testing.assert_array_equal(
        np.array(by_ids["data"][0]["embedding"], dtype=np.float32), got[0]
    )


# ---------------------------------------------------------------------------------------------
# all-MiniLM-L6-v2, the preset (its folder from a PyPI wheel)

WORDS = {
    "latin": "the model runs in your browser and keeps every note private on this device".split(),
    "accents": "déjà vu über straße façade naïve coöperate señor".split(),
    "cyrillic": "модель работает в браузере и хранит заметки".split(),
    "greek": "το μοντέλο τρέχει στον περιηγητή".split(),
    "cjk": "模型 在 浏览器 中 运行 数据 保存 在 本地".split(),
    "arabic": "النموذج يعمل في المتصفح".split(),
    "code": "def f(x): return x ** 2 + 1 # comment {} [] ;".split(),
    "emoji": "🙂 🚀 ✨ 🎉 ok".split(),
}


def varied_sentences(tokenizer: Tokenizer, count: int, longest: int) -> list[str]:
    """`count` texts in several scripts, from one word to exactly `longest` tokens (special
    tokens included), with lengths spread over the range."""
    rng = np.random.default_rng(7)
    scripts = list(WORDS)
    texts = []
    for i in range(count):
        words = WORDS[scripts[i % len(scripts)]] + WORDS[scripts[(i * 3 + 1) % len(scripts)]]
        target = 1 + int((longest - 1) * (i / (count - 1)) ** 2)  # many short, some long
        text = ""
        while True:
            candidate = (text + " " + str(rng.choice(words))).strip()
            if len(tokenizer.encode(candidate).ids) > target:
                break
            text = candidate
        texts.append(text or str(rng.choice(words)))
    return texts


@pytest.fixture(scope="module")
def minilm(tmp_path_factory):
    built = build("all-minilm-l6-v2", None, tmp_path_factory.mktemp("built") / "minilm")
    return cache_dir("models") / "all-minilm-l6-v2", built


def test_minilm_matches_transformers_on_100_sentences(minilm, engine_page):
    folder, built = minilm
    tokenizer = Tokenizer.from_file(str(folder / "tokenizer.json"))
    tokenizer.no_padding()
    tokenizer.no_truncation()
    longest = json.loads((built / "manifest.json").read_text())["context_window"]
    assert longest == 256  # sentence_bert_config.json's max_seq_length, not the file's 128
    texts = varied_sentences(tokenizer, 100, longest)
    expected, ids = reference(folder, texts)
    assert max(map(len, ids)) == longest and min(map(len, ids)) <= 3
    with engine_page(built, backend="wasm") as page:
        response = embed(page, {"input": texts})
        too_long = page.evaluate(
            """(input) => engine.embeddings.create({input}).then(() => null,
                 (e) => ({name: e.name, param: e.param, message: e.message}))""",
            [texts[0], texts[-1] + " ok ok"],
        )
    got = np.array([d["embedding"] for d in response["data"]], dtype=np.float32)
    cosine = (
        (got * expected).sum(1) / np.linalg.norm(got, axis=1) / np.linalg.norm(expected, axis=1)
    )
    assert cosine.min() >= 0.9999, f"lowest cosine {cosine.min()} (text {cosine.argmin()})"
    assert too_long["name"] == "InvalidRequestError" and too_long["param"] == "input[1]"
    assert "at most 256" in too_long["message"]


def test_minilm_on_webgpu(minilm, engine_page):
    folder, built = minilm
    texts = TEXTS + ["A longer note: " + " ".join(WORDS["latin"] * 4)]
    expected, _ = reference(folder, texts)
    with engine_page(built, backend="webgpu") as page:
        response = embed(page, {"input": texts})
    got = np.array([d["embedding"] for d in response["data"]], dtype=np.float32)
    cosine = (
        (got * expected).sum(1) / np.linalg.norm(got, axis=1) / np.linalg.norm(expected, axis=1)
    )
    assert cosine.min() >= 0.9999, f"lowest cosine {cosine.min()}"


def test_a_chat_model_and_an_embedding_model_in_one_engine(
    browser, tiny_built, tiny_bert, tmp_path
):
    # A folder of their own (the tiny builds' folder is other tests' chat site).
    chat = Path(shutil.copytree(tiny_built("q0f32"), tmp_path / "q0f32"))
    bert = build(str(tiny_bert[0]), None, tmp_path / "bert")
    chat_id = json.loads((chat / "manifest.json").read_text())["model_id"]
    bert_id = json.loads((bert / "manifest.json").read_text())["model_id"]
    with serve_folder(chat.parent) as url:
        page = browser.new_page()
        page.goto(f"{url}/q0f32/manifest.json")
        result = page.evaluate(
            """async ([base, chatId, bertId]) => {
                const kiln = await import(base + "q0f32/kiln.js");
                const urls = [base + "q0f32/", base + "bert/"];
                const outcome = (promise) => promise.then(
                    (r) => r.model, (e) => ({name: e.name, param: e.param}));
                const ask = (engine) => ({
                    chat: outcome(engine.chat.completions.create(
                        {messages: [{role: "user", content: "Hi"}], max_tokens: 2})),
                    embed: outcome(engine.embeddings.create({input: "fox"})),
                    wrongChat: outcome(engine.chat.completions.create(
                        {model: bertId, messages: [{role: "user", content: "Hi"}]})),
                    wrongEmbed: outcome(engine.embeddings.create({model: chatId, input: "fox"})),
                });
                const settle = async (o) => Object.fromEntries(await Promise.all(
                    Object.entries(o).map(async ([k, v]) => [k, await v])));
                const page = await kiln.CreateEngine(urls);
                const inPage = await settle(ask(page));
                const vector = (await page.embeddings.create({input: "fox"})).data[0].embedding;
                await page.unload();
                const worker = await kiln.CreateWebWorkerEngine(
                    new Worker(base + "q0f32/kiln-worker.js", {type: "module"}), urls);
                const inWorker = await settle(ask(worker));
                const again = await worker.embeddings.create({input: "fox"});
                const fromWorker = again.data[0].embedding;
                return {loaded: worker.loadedModels, inPage, inWorker, same: vector.every(
                    (x, i) => x === fromWorker[i])};
            }""",
            [f"{url}/", chat_id, bert_id],
        )
        page.close()
    assert result["loaded"] == [chat_id, bert_id]
    wrong = {"name": "InvalidRequestError", "param": "model"}
    for where in ("inPage", "inWorker"):
        assert result[where]["chat"] == chat_id and result[where]["embed"] == bert_id
        assert result[where]["wrongChat"] == wrong and result[where]["wrongEmbed"] == wrong
    assert result["same"]


def test_search_page_finds_the_note_a_question_is_about(minilm, browser):
    _, built = minilm
    notes = [
        "Buy milk, eggs and bread on the way home",
        "Dentist appointment on Tuesday at 3pm",
        "The train to Paris leaves at 9:40 from platform 4",
        "Call the plumber about the leaking kitchen sink",
        "Birthday gift ideas for Anna: a scarf or a book",
    ]
    with serve_folder(built.parent) as url:
        page = browser.new_page()
        page.goto(f"{url}/search.html?backend=wasm")
        page.wait_for_function("!document.getElementById('query').disabled", timeout=120_000)
        page.fill("#notes", "\n".join(notes))
        answers = {}
        for question in ("When does my trip leave?", "What should I get at the grocery store?"):
            page.fill("#query", question)
            page.click("#search")
            page.wait_for_function(
                "(q) => document.getElementById('results').dataset.query === q", arg=question
            )
            answers[question] = page.locator("#results li").all_inner_texts()
        page.close()
    assert answers["When does my trip leave?"][0].startswith(notes[2])
    assert answers["What should I get at the grocery store?"][0].startswith(notes[0])
    assert all(len(found) == 3 for found in answers.values())
