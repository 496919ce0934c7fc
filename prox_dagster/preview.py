"""A few of a shard's refinements, for a person to judge the refiner by eye.

Dropped documents with the reason their doc program gives (its ``# comment``) or the execution
rule that dropped them, and removed lines with the program call that removed them, as a
truncated Markdown table (``clean_shard`` shows it per partition in the UI).
"""

from __future__ import annotations

from collections import defaultdict

import polars as pl

from .evaluation import kept_lines
from .programs import format_call, line_range, parse_program

MAX_CELL = 100
_DROP_REASONS = {
    "dropped_chunk": "too little text left once the chunk programs ran (execution policy)",
}


def _cell(text: str, limit: int = MAX_CELL) -> str:
    text = " ".join(text.split())
    if len(text) > limit:
        text = text[:limit - 1] + "…"
    return text.replace("|", "\\|").replace("`", "'") or "(empty)"


def _doc_reason(status: str, program: str) -> str:
    if status == "dropped_doc":
        comment = program.partition("#")[2].strip()
        return f"`drop_doc()`: {comment}" if comment else "`drop_doc()`"
    return _DROP_REASONS.get(status, status)


def refinement_preview(doc_refined: pl.DataFrame, chunk_refined: pl.DataFrame,
                       clean: pl.DataFrame, *, max_docs: int = 5, max_lines: int = 12,
                       lines_per_doc: int = 3) -> str:
    """Markdown: up to ``max_docs`` dropped documents and ``max_lines`` removed lines (at most
    ``lines_per_doc`` from one document, so one page cannot fill the table)."""
    originals = dict(doc_refined.select("id", "text").iter_rows())
    programs = dict(doc_refined.select("id", "doc_program").iter_rows())
    dropped, removed = [], []
    candidates = []
    for doc_id, text, status in clean.select("id", "text", "status").iter_rows():
        if status in ("dropped_doc", "dropped_chunk"):
            if len(dropped) < max_docs:
                dropped.append((doc_id, status, _doc_reason(status, programs.get(doc_id) or ""),
                                originals.get(doc_id) or ""))
        elif status == "kept" and len(candidates) < max_lines:
            candidates.append((doc_id, text))
    chunks = defaultdict(list)
    wanted = {doc_id for doc_id, _ in candidates}
    for doc_id, start, end, program in chunk_refined.select(
            "doc_id", "line_start", "line_end", "chunk_program").iter_rows():
        if doc_id in wanted:
            chunks[doc_id].append((start, end, program))
    for doc_id, text in candidates:
        original = originals.get(doc_id) or ""
        lines = original.split("\n")
        taken = 0
        for index, keep in enumerate(kept_lines(original, text or "")):
            if keep or not lines[index].strip():
                continue
            removed.append((doc_id, index, lines[index], _removing_call(chunks[doc_id], index)))
            taken += 1
            if taken >= lines_per_doc or len(removed) >= max_lines:
                break
        if len(removed) >= max_lines:
            break
    parts = [f"**Dropped documents** ({len(dropped)} shown)", "",
             "| document | status | reason | text |", "|---|---|---|---|"]
    parts += [f"| {_cell(d)} | {s} | {r} | {_cell(t)} |" for d, s, r, t in dropped] or \
        ["| - | - | none dropped | - |"]
    parts += ["", f"**Removed lines** ({len(removed)} shown)", "",
              "| document | line | text | removed by |", "|---|---|---|---|"]
    parts += [f"| {_cell(d)} | {i} | {_cell(t)} | `{c}` |" for d, i, t, c in removed] or \
        ["| - | - | none removed | - |"]
    return "\n".join(parts)


def _removing_call(chunks: list[tuple[int, int, str]], index: int) -> str:
    for start, end, program in chunks:
        if not start <= index <= end:
            continue
        for call in parse_program(program or "", "chunk").calls:
            if call.name == "remove_lines":
                first, last = (start, end) if call.args.get("all") else line_range(call.args)
                if first <= index <= last:
                    return format_call("remove_lines", **call.args)
        return "(rewritten by normalize)"
    return "(no chunk program)"
