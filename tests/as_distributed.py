"""Checks shared by the tests of real models as distributed: our build in Chromium against
Hugging Face transformers running the same GGUF file in float32 (its own reader and `gguf`'s
dequantization, sharing nothing with our build)."""

from __future__ import annotations

import sys

import torch

NEAR_TIE = 0.02  # transformers' top-2 logit margin under which an argmax may flip on rounding
CONFIG_FIELDS = [
    "vocab_size",
    "hidden_size",
    "intermediate_size",
    "num_hidden_layers",
    "num_attention_heads",
    "num_key_value_heads",
    "max_position_embeddings",
    "tie_word_embeddings",
]


def transformers_from_preset(preset: str):
    """transformers' float32 model of the GGUF file a preset fetches (its own reader)."""
    from transformers import AutoModelForCausalLM

    from compiler.loader import preset_gguf

    path = preset_gguf(preset)
    model = AutoModelForCausalLM.from_pretrained(
        path.parent, gguf_file=path.name, dtype=torch.float32
    )
    return model.eval()


def assert_config_equal(ours, theirs) -> None:
    """Every number the network uses equals the config transformers reads from the file."""
    head_dim = getattr(theirs, "head_dim", None) or theirs.hidden_size // theirs.num_attention_heads
    rope = theirs.rope_parameters or {}
    rope = rope.get("full_attention", rope)  # per attention kind, where layers differ (Gemma 3)
    rope_theta = getattr(theirs, "rope_theta", None) or rope["rope_theta"]
    assert (ours.rope.theta, ours.rms_norm_eps) == (rope_theta, theirs.rms_norm_eps)
    for field in CONFIG_FIELDS:
        assert getattr(ours, field) == getattr(theirs, field), field
    assert ours.head_dim == head_dim


def transformers_greedy(model, prompt: list[int], eos: set[int], count: int):
    """Greedy tokens (up to `count`, stopping at an end token) and each step's top-2 margin."""
    ids = torch.tensor([prompt])
    tokens: list[int] = []
    margins: list[float] = []
    with torch.no_grad():
        cache = None
        for _ in range(count):
            out = model(ids if cache is None else ids[:, -1:], cache=cache, use_cache=True)
            cache = out.cache
            top = torch.topk(out.logits[0, -1], 2)
            margins.append(float(top.values[0] - top.values[1]))
            token = int(top.indices[0])
            if token in eos:
                break
            tokens.append(token)
            ids = torch.cat([ids, torch.tensor([[token]])], dim=1)
    return tokens, margins


def assert_greedy_equal(page, model, prompts: list[str], count: int, chat: bool = True) -> None:
    """Greedy replies in the page equal transformers' for `count` tokens, except after a step
    where transformers' own top two were nearly tied (those steps are printed). Prompts are
    user turns in the chat template, or with `chat=False` plain text as a raw prompt."""
    eos = set(page.evaluate("engine.manifest.eos_token_ids"))
    near_ties = []
    for text in prompts:
        template = "engine.tokenizer.applyChatTemplate([{role: 'user', content: t}])"
        encode = f"encode({template})" if chat else "encodePrompt(t)"
        prompt = page.evaluate(f"(t) => engine.tokenizer.{encode}", text)
        ours = page.evaluate(
            "async ([p, n]) => (await engine.generate(p, {temperature: 0, max_tokens: n})).tokens",
            [prompt, count],
        )
        theirs, margins = transformers_greedy(model, prompt, eos, count)
        same = 0
        while same < min(len(ours), len(theirs)) and ours[same] == theirs[same]:
            same += 1
        if same < max(len(ours), len(theirs)):
            # Parted ways: allowed only where transformers itself nearly tied.
            assert margins[same] < NEAR_TIE, (text, same, ours, theirs, margins[same])
            near_ties.append((text, same, round(margins[same], 4)))
    print("near ties:", near_ties, file=sys.stderr)
