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


def _reference_args(operation: str) -> list[str] | None:
    """The reference's argument split: text between the first '(' and first ')', on ','."""
    start = operation.find("(")
    if start < 0:
        return None
    end = operation.find(")")
    return operation[start + 1:end].split(",")  # end == -1 drops the last character, as there


def _reference_merge(intervals: list[tuple[int, int]]) -> list[tuple[int, int]]:
    merged: list[tuple[int, int]] = []
    for start, end in sorted(intervals):
        if merged and start <= merged[-1][1] + 1:
            merged[-1] = (merged[-1][0], max(merged[-1][1], end))
        else:
            merged.append((start, end))
    return merged


def reference_execute(text: str, program: str, keep_ratio: float = 0.95,
                      error_op: int = 2) -> str:
    """The ProX reference chunk-level executor: string splitting, no parser.

    Returns the refined text, ``""`` for a dropped document, or ``text`` itself when the program
    holds ``error_op`` or more errors.
    """
    lines = text.split("\n")
    work = text
    remove: set[int] = set()
    intervals: list[tuple[int, int]] = []
    errors = 0
    for operation in program.strip(" ").split("\n"):
        if operation.startswith("remove_lines") and "all=True" not in operation:
            params = _reference_args(operation)
            if params is None or ")" not in operation:
                errors += 1
                if params is None:
                    continue
            try:
                start = int(params[0].split("=")[1])
                end = int(params[1].split("=")[1])
            except (IndexError, ValueError):
                errors += 1
                continue
            intervals.append((start, end))
            remove.update(range(start, end + 1))
        elif operation.startswith("normalize"):
            params = _reference_args(operation)
            if params is None or ")" not in operation:
                errors += 1
                if params is None:
                    continue
            if len(params) == 1:
                try:
                    source = params[0].split("=")[1].strip('"')
                except IndexError:
                    errors += 1
                    continue
                work = work.replace(source, "")
            elif len(params) == 2:
                try:
                    source = params[0].split("=")[1].strip('"')
                    target = params[1].split("=")[1].strip('"')
                except IndexError:
                    errors += 1
                    continue
                if source not in (" ", ""):
                    work = work.replace(source, target)
        elif operation.startswith("remove_lines"):
            remove = set(range(len(lines)))
    lines = work.split("\n")
    processed = "\n".join(line for i, line in enumerate(lines) if i not in remove)
    for start, end in _reference_merge(intervals):
        if start >= len(lines) or end >= len(lines):
            errors += 1
    words_out, words_in = len(processed.split()), len(text.split())
    if words_out / words_in <= 1 - keep_ratio and errors < error_op:
        return ""
    if words_out <= 10:
        return ""
    if errors < error_op:
        return processed
    return text


def reference_doc_keep(program: str) -> bool:
    """The ProX reference doc-level decision: drop when "drop" appears anywhere."""
    return "drop" not in program.strip(" ")
