"""Checks that objects have exactly the shape of OpenAI's, by validating them with the types of
OpenAI's own Python library (strictly: no coercion, and no field those types do not define).

Two extensions are documented and allowed: `usage.extra` (speeds), and finish_reason "abort"
for a request ended by its AbortSignal or `interruptGenerate()`.
"""

from __future__ import annotations

import copy

from openai.types import Completion
from openai.types.chat import ChatCompletion, ChatCompletionChunk
from pydantic import BaseModel


def _extras(model: BaseModel, path: str) -> list[str]:
    found = [f"{path}.{k}" for k in (model.model_extra or {})]
    for name in type(model).model_fields:
        value = getattr(model, name)
        items = value if isinstance(value, list) else [value]
        for i, item in enumerate(items):
            if isinstance(item, BaseModel):
                sub = f"{path}.{name}[{i}]" if isinstance(value, list) else f"{path}.{name}"
                found += _extras(item, sub)
    return found


def _check(kind: type[BaseModel], obj: dict, pending_allowed: bool = False) -> BaseModel:
    obj = copy.deepcopy(obj)
    usage = obj.get("usage")
    if isinstance(usage, dict):
        assert isinstance(usage.pop("extra"), dict), "usage.extra holds the speeds"
    for choice in obj.get("choices", []):
        if choice.get("finish_reason") == "abort":
            choice["finish_reason"] = "stop"
        elif pending_allowed and choice.get("finish_reason") is None:
            choice["finish_reason"] = "stop"
    model = kind.model_validate(obj, strict=True)
    extras = _extras(model, kind.__name__)
    assert not extras, f"fields OpenAI does not define: {extras}"
    return model


def check_chat_completion(obj: dict) -> None:
    _check(ChatCompletion, obj)
    assert obj["object"] == "chat.completion"


def check_chunk(obj: dict) -> None:
    _check(ChatCompletionChunk, obj)
    assert obj["object"] == "chat.completion.chunk"


def check_completion(obj: dict, chunk: bool = False) -> None:
    """A text completion, or with `chunk` one streamed piece of it: OpenAI streams these as
    `Completion` objects whose finish_reason is null until the last."""
    _check(Completion, obj, pending_allowed=chunk)
    assert obj["object"] == "text_completion"
