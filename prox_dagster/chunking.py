"""Line-numbered chunks under a token budget (the ProX chunk-level input).

Lines are numbered ``[000]``, ``[001]``, ... and packed greedily into chunks of at most
``max_tokens`` tokens, counted exactly as the ProX reference counts (special tokens included), in
batches through the Rust tokenizer. One departure: a single line over the budget is a chunk of
its own whose prompt text is cut to the budget, so a prompt never outgrows the context.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass

from .programs import MAX_LINE_NUMBER
from .prompts import truncate_to_tokens
from .tokenization import rust_tokenizer, token_counts

DEFAULT_MAX_TOKENS = 1500


@dataclass(frozen=True)
class Chunk:
    line_start: int
    line_end: int
    text: str
    n_tokens: int
    truncated: bool = False


def number_line(index: int, line: str) -> str:
    return f"[{index:03d}]{line}"


_NUMBERED = re.compile(r"^\[([0-9]{3,})\](.*)$")
_NUMBERS = re.compile(r"^\[[0-9]{3,}\]", re.M)


def split_numbered(chunk_text: str) -> tuple[list[int], list[str]] | None:
    """The line numbers and lines of a numbered chunk; None when a line lacks its number."""
    numbers: list[int] = []
    lines: list[str] = []
    for raw in chunk_text.split("\n"):
        match = _NUMBERED.match(raw)
        if match is None:
            return None
        numbers.append(int(match.group(1)))
        lines.append(match.group(2))
    return numbers, lines


def strip_numbers(chunk_text: str) -> str:
    """A numbered chunk's text without its ``[NNN]`` prefixes."""
    return _NUMBERS.sub("", chunk_text)


def chunk_lines(text: str, tokenizer, max_tokens: int = DEFAULT_MAX_TOKENS) -> list[Chunk]:
    """Chunks of one document."""
    return chunk_documents([text], tokenizer, max_tokens)[0]


def chunk_documents(texts: Sequence[str], tokenizer,
                    max_tokens: int = DEFAULT_MAX_TOKENS) -> list[list[Chunk]]:
    """Chunks of many documents, tokenizing every line of every document in batches."""
    if max_tokens < 1:
        raise ValueError(f"max_tokens must be positive, not {max_tokens}")
    numbered: list[str] = []
    bounds: list[tuple[int, int]] = []
    for index, text in enumerate(texts):
        lines = text.count("\n") + 1
        if lines > MAX_LINE_NUMBER + 1:  # the raw reader quarantines such documents
            raise ValueError(f"document {index} of the batch has {lines} lines; programs "
                             f"number lines 0..{MAX_LINE_NUMBER} only")
        start = len(numbered)
        numbered.extend(number_line(i, line) for i, line in enumerate(text.split("\n")))
        bounds.append((start, len(numbered)))
    counts = token_counts(tokenizer, numbered, add_special_tokens=True)
    return [_pack(numbered[a:b], counts[a:b], max_tokens, tokenizer) for a, b in bounds]


def _pack(lines: list[str], counts: list[int], max_tokens: int, tokenizer) -> list[Chunk]:
    chunks: list[Chunk] = []
    start = 0
    total = 0

    def close(end: int, n_tokens: int) -> None:
        chunks.append(Chunk(start, end - 1, "\n".join(lines[start:end]), n_tokens))

    for i, count in enumerate(counts):
        if i > start and total + count > max_tokens:
            close(i, total)
            start, total = i, 0
        total += count
        if total > max_tokens:  # a single line over budget stands alone, cut to the budget
            chunks.append(_truncated(i, lines[i], max_tokens, tokenizer))
            start, total = i + 1, 0
    if start < len(lines):
        close(len(lines), total)
    return chunks


def _truncated(index: int, line: str, max_tokens: int, tokenizer) -> Chunk:
    backend = rust_tokenizer(tokenizer)
    # the [NNN] prefix always survives, so the chunk stays a numbered chunk
    prefix = len(number_line(index, ""))
    text = line[:max(len(truncate_to_tokens(backend, line, max_tokens,
                                            add_special_tokens=True)), prefix)]
    n_tokens = len(backend.encode(text, add_special_tokens=True).ids)
    return Chunk(index, index, text, n_tokens, truncated=True)
