"""Reference implementations the benchmarks (and equivalence tests) compare against, written
from the ProX reference's semantics, not from our code."""

from __future__ import annotations


def reference_chunks(text: str, tokenizer, max_token: int) -> list[str]:
    """ProX ``trunc_text``: one ``tokenizer.encode`` call per ``[NNN]``-numbered line."""
    chunks, current, count = [], [], 0
    for i, line in enumerate(text.split("\n")):
        numbered = f"[{i:03d}]{line}"
        n = len(tokenizer.encode(numbered))
        if count + n <= max_token:
            current.append(numbered)
            count += n
        else:
            if current:
                chunks.append("\n".join(current))
            current, count = [numbered], n
            if n > max_token:
                chunks.append("\n".join(current))
                current, count = [], 0
    if current:
        chunks.append("\n".join(current))
    return chunks
