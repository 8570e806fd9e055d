"""A chat template's tool-call format: how it asks the model to write a call.

The runtime holds one description per format (web/src/text/tool_formats.js: how a call opens
and closes, how its arguments are named) and reads the name the build records in the
manifest's `tool_call_format`. The name is found here, once, from the markers the template
renders a past call with, as llama.cpp's chat-format detection reads a template rather than
assume one format:

- `[TOOL_CALLS]` then a JSON list: "mistral" (v3 tokenizers, Mistral-7B-v0.3 and Nemo). The
  later `[TOOL_CALLS]name[ARGS]{...}` (Mistral Small 3.2, Devstral) is another format, which
  the runtime does not know: null.
- `<|tool_call|>` or `<|tool|>`: "phi4_mini".
- `<tool_call>`: "hermes" (Qwen2.5, Qwen3, Hermes 2 Pro and 3).
- `<|python_tag|>` or the `ipython` role: "llama3_json" (Llama 3.1 to 3.3, whose custom tools
  are called with a bare `{"name": ..., "parameters": {...}}`).
- a template that takes `tools` with none of these: "hermes", the format chat templates most
  often ask for (and what the runtime did before this field).
- a template that never reads `tools` (SmolLM2, Phi-3, Gemma 3: none was trained with a tool
  format of its own; Google's function-calling guide for Gemma 3 has the app write its own
  prompt), or no template: null, and the runtime refuses tools unless an app gives a template
  that renders them.
"""

from __future__ import annotations

import re
from typing import Any


def template_text(chat_template: Any) -> str | None:
    """The template's text: tokenizer_config's `chat_template` is a string, or a list of named
    templates ({name, template}) of which the tool-use one is read with the others."""
    if isinstance(chat_template, str):
        return chat_template
    if isinstance(chat_template, list):
        texts = [t.get("template") for t in chat_template if isinstance(t, dict)]
        return "\n".join(t for t in texts if isinstance(t, str)) or None
    return None


def tool_call_format(chat_template: Any) -> str | None:
    """The tool-call format `chat_template` asks for (see the module's docstring), or None."""
    text = template_text(chat_template)
    if text is None or not re.search(r"\btools\b", text):
        return None
    if "[TOOL_CALLS]" in text:
        return None if "[ARGS]" in text else "mistral"
    if "<|tool_call|>" in text or "<|tool|>" in text:
        return "phi4_mini"
    if "<tool_call>" in text:
        return "hermes"
    if "<|python_tag|>" in text or "ipython" in text:
        return "llama3_json"
    return "hermes"
