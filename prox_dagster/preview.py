"""A few of a shard's refinements, for a person to judge the refiner by eye.

Dropped documents with the reason their doc program gives (its ``# comment``) or the execution
rule that dropped them, and removed lines with the program call that removed them, as a
truncated Markdown table (``clean_shard`` shows it per partition in the UI).
"""

from __future__ import annotations

from collections.abc import Mapping

import polars as pl

from .execute import kept_lines
from .programs import format_call, line_range, parse_program
from .untrusted import markdown_text

_DROP_REASONS = {
    "dropped_chunk": "too little text left once the chunk programs ran (execution policy)",
}


def _doc_reason(status: str, program: str) -> str:
    if status == "dropped_doc":
        comment = program.partition("#")[2].strip()
        return f"`drop_doc()`: {markdown_text(comment)}" if comment else "`drop_doc()`"
    return _DROP_REASONS.get(status, status)


class PreviewCollector:
    """Up to ``max_docs`` dropped documents and ``max_lines`` removed lines (at most
    ``lines_per_doc`` from one document, so one page cannot fill the table), gathered from a
    shard's batches until there are enough."""

    def __init__(self, max_docs: int = 5, max_lines: int = 12, lines_per_doc: int = 3):
        self.max_docs, self.max_lines, self.lines_per_doc = max_docs, max_lines, lines_per_doc
        self.dropped: list[tuple[str, str, str, str]] = []
        self.removed: list[tuple[str, int, str, str]] = []

    @property
    def full(self) -> bool:
        return len(self.dropped) >= self.max_docs and len(self.removed) >= self.max_lines

    def add(self, doc_refined: pl.DataFrame, chunk_programs: Mapping[str, list],
            clean: pl.DataFrame) -> None:
        """One batch: ``doc_refined`` rows and the ``clean`` rows made from them (in the same
        order), and each document's ``(line_start, line_end, program)`` chunk programs."""
        if self.full:
            return
        for (doc_id, original, program), (text, status) in zip(
                doc_refined.select("id", "text", "doc_program").iter_rows(),
                clean.select("text", "status").iter_rows()):
            if status in ("dropped_doc", "dropped_chunk"):
                if len(self.dropped) < self.max_docs:
                    self.dropped.append((doc_id, status, _doc_reason(status, program or ""),
                                         original or ""))
            elif status == "kept" and len(self.removed) < self.max_lines:
                self._removed_lines(doc_id, original or "", text or "",
                                    chunk_programs.get(doc_id, ()))
            if self.full:
                return

    def _removed_lines(self, doc_id: str, original: str, text: str, chunks) -> None:
        lines = original.split("\n")
        taken = 0
        for index, keep in enumerate(kept_lines(original, text)):
            if keep or not lines[index].strip():
                continue
            self.removed.append((doc_id, index, lines[index], _removing_call(chunks, index)))
            taken += 1
            if taken >= self.lines_per_doc or len(self.removed) >= self.max_lines:
                return

    def markdown(self) -> str:
        dropped, removed = self.dropped, self.removed
        parts = [f"**Dropped documents** ({len(dropped)} shown)", "",
                 "| document | status | reason | text |", "|---|---|---|---|"]
        parts += [f"| {markdown_text(d)} | {s} | {r} | {markdown_text(t)} |"
                  for d, s, r, t in dropped] or ["| - | - | none dropped | - |"]
        parts += ["", f"**Removed lines** ({len(removed)} shown)", "",
                  "| document | line | text | removed by |", "|---|---|---|---|"]
        parts += [f"| {markdown_text(d)} | {i} | {markdown_text(t)} | `{c}` |"
                  for d, i, t, c in removed] or ["| - | - | none removed | - |"]
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
