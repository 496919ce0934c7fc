"""Prompt formats for the doc- and chunk-level refiners (versioned: part of the refiner version).

The Llama-2 chat format with the ProX system prompt, or the tokenizer's chat template when it
ships one; the chunk message is ``[doc]\n{numbered chunk}\n[/doc]``. A long document is cut so
the whole prompt fits (``doc_truncation="document"``); ``"prompt"`` restores the reference, which
cuts the templated prompt.
"""

from __future__ import annotations

from typing import Literal

PROMPT_FORMAT_VERSION = "prox-llama2-chat-v1"
SYSTEM_PROMPT = "You are a helpful, respectful and honest assistant."
DOC_MAX_PROMPT_TOKENS = 2000
MAX_NEW_TOKENS = {"doc": 2000, "chunk": 256}
_MARGIN_TOKENS = 64  # tokens past the cut that must be encoded too, so the cut is stable

_SYS_OPEN = "[INST] <<SYS>>\n"
_SYS_CLOSE = "\n<</SYS>>\n\n"
_INST_CLOSE = " [/INST]"


def chat(user: str, tokenizer=None) -> str:
    """The full prompt string for one user message."""
    template = getattr(tokenizer, "chat_template", None) if tokenizer is not None else None
    if template:
        text = tokenizer.apply_chat_template(
            [{"role": "system", "content": SYSTEM_PROMPT}, {"role": "user", "content": user}],
            add_generation_prompt=True, tokenize=False)
        bos = getattr(tokenizer, "bos_token", None)
        return text[len(bos):] if bos and text.startswith(bos) else text
    return f"{_SYS_OPEN}{SYSTEM_PROMPT}{_SYS_CLOSE}{user}{_INST_CLOSE}"


def chunk_prompt(chunk_text: str, tokenizer=None) -> str:
    return chat(f"[doc]\n{chunk_text}\n[/doc]", tokenizer)


def doc_prompt(text: str, tokenizer=None, max_prompt_tokens: int | None = DOC_MAX_PROMPT_TOKENS,
               truncation: Literal["document", "prompt"] = "document") -> str:
    """The doc-level prompt; with a tokenizer and a limit, truncated to fit ``max_prompt_tokens``."""
    if tokenizer is None or max_prompt_tokens is None:
        return chat(text, tokenizer)
    backend = getattr(tokenizer, "backend_tokenizer", tokenizer)
    if truncation == "prompt":
        return truncate_to_tokens(backend, chat(text, tokenizer), max_prompt_tokens,
                                  add_special_tokens=True)
    overhead = len(backend.encode(chat("", tokenizer), add_special_tokens=True).ids)
    budget = max(max_prompt_tokens - overhead, 0)
    return chat(truncate_to_tokens(backend, text, budget), tokenizer)


def truncate_to_tokens(backend, text: str, budget: int, *,
                       add_special_tokens: bool = False) -> str:
    """``text`` cut after its first ``budget`` tokens (all of it if it has no more). Only a
    prefix a few times the budget is encoded, never a whole long document; the prefix grows
    until it holds the budget and a margin, so the cut is where encoding the whole text puts
    it."""
    if budget <= 0:
        return ""
    size = budget * 8
    while True:
        encoding = backend.encode(text[:size], add_special_tokens=add_special_tokens)
        if size >= len(text):
            return text if len(encoding.ids) <= budget else \
                text[:encoding.offsets[budget - 1][1]]
        if len(encoding.ids) > budget + _MARGIN_TOKENS:
            return text[:encoding.offsets[budget - 1][1]]
        size *= 4


def user_message(prompt: str) -> str:
    """Invert :func:`chat` for prompts in the built-in format (used by the rules refiner)."""
    start = prompt.find(_SYS_CLOSE)
    start = 0 if start < 0 else start + len(_SYS_CLOSE)
    end = prompt.rfind(_INST_CLOSE)
    return prompt[start:end if end >= start else len(prompt)]


def document_of(prompt: str, level: str) -> str:
    """The document (doc level) or numbered chunk (chunk level) a prompt carries."""
    message = user_message(prompt)
    if level == "chunk" and message.startswith("[doc]\n"):
        message = message[len("[doc]\n"):]
        if message.endswith("\n[/doc]"):
            message = message[: -len("\n[/doc]")]
    return message
