"""Running parsed programs on documents: the keep / drop / fallback policy.

The default follows the ProX reference (``chunk_utils.py``, ``doc_utils.py``) with its thresholds
as settings; each deliberate improvement (chunk-scoped, bounded ``normalize``; ``drop_doc()``
parsed, not substring-matched; CJK-aware word counts) is a setting whose default is the
improvement. :meth:`ExecutionPolicy.reference` returns the reference behaviour. The semantics,
step by step: ``docs/programs.md``.
"""

from __future__ import annotations

import functools
import hashlib
import json
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

import pydantic

from .programs import ParsedProgram, ProgramError, line_range, parse_program
from .words import WORD_UNITS, WordUnit, word_count

STATUSES = ("kept", "dropped_doc", "dropped_chunk", "fallback_raw")


_CHOICES = (("normalize_scope", ("chunk", "document")),
            ("remove_all_scope", ("chunk", "document")),
            ("doc_decision", ("parsed", "substring")), ("word_unit", WORD_UNITS))


class ExecutionPolicy(pydantic.BaseModel):
    """The keep / drop / fallback settings; the ``policy`` resource is one of these."""

    model_config = pydantic.ConfigDict(frozen=True, extra="forbid")

    drop_word_ratio: float = 0.05
    min_words: int = 10
    max_errors: int = 2
    normalize_scope: Literal["chunk", "document"] = "chunk"
    remove_all_scope: Literal["chunk", "document"] = "chunk"
    doc_decision: Literal["parsed", "substring"] = "parsed"
    word_unit: WordUnit = "cjk"

    @pydantic.model_validator(mode="before")
    @classmethod
    def _known_choices(cls, data):
        for name, allowed in _CHOICES:
            if isinstance(data, dict) and name in data and data[name] not in allowed:
                raise ValueError(f"execution policy {name}={data[name]!r} is not one of {allowed}")
        return data

    @pydantic.model_validator(mode="after")
    def _in_range(self):
        if not 0.0 <= self.drop_word_ratio <= 1.0 or self.min_words < 0 or self.max_errors < 1:
            raise ValueError(f"execution policy out of range: {self!r}")
        return self

    @property
    def version(self) -> str:
        """A short hash of every setting: part of the code version of the stages it shapes."""
        settings = json.dumps(self.model_dump(), sort_keys=True)
        return "policy@" + hashlib.sha256(settings.encode()).hexdigest()[:8]

    @classmethod
    def reference(cls, **overrides) -> "ExecutionPolicy":
        """The ProX reference behaviour (thresholds may still be overridden)."""
        base = dict(normalize_scope="document", remove_all_scope="document",
                    doc_decision="substring", word_unit="split")
        base.update(overrides)
        return cls(**base)


def growth_allowance(length: int) -> int:
    """How much longer ``normalize`` calls may make a text of ``length`` characters (a chunk's,
    or the document's with ``normalize_scope="document"``) than it was: 10% or 64 characters,
    whichever is more. A call after which it would be longer is an error and changes nothing."""
    return max(64, length // 10)


@dataclass(frozen=True, slots=True)  # slots: one per document executed
class DocumentResult:
    text: str
    status: str
    n_ops: int
    n_errors: int


def decide_document(doc_program: str | None, policy: ExecutionPolicy | None = None
                    ) -> tuple[bool, ParsedProgram]:
    """Whether a document is kept by its doc-level program, and the parsed program."""
    policy = policy or ExecutionPolicy()
    source = doc_program or ""
    parsed = _parse_doc_program(source) if len(source) <= 256 else parse_program(source, "doc")
    if policy.doc_decision == "substring":
        return "drop" not in (doc_program or ""), parsed
    return not any(call.name == "drop_doc" for call in parsed.calls), parsed


def execute_document(text: str, doc_program: str | None,
                     chunk_programs: Sequence[tuple[int, int, str | ParsedProgram]],
                     policy: ExecutionPolicy | None = None, *,
                     dialect: str = "prox") -> DocumentResult:
    """Apply a document's doc program and chunk programs; see the module doc for the policy.

    ``chunk_programs`` holds ``(line_start, line_end, program)`` with global, inclusive line
    numbers; ``program`` is the refiner's text (parsed in ``dialect``) or a parsed program.
    """
    policy = policy or ExecutionPolicy()
    keep, doc_parsed = decide_document(doc_program, policy)
    doc_errors = _counted_errors(doc_parsed.errors) if doc_parsed.errors else 0
    if not keep:
        return DocumentResult("", "dropped_doc", 1, doc_errors)

    errors = 0
    n_ops = 0
    normalizations: list[tuple[int, int, str, str]] = []
    deletions: list[tuple[int, str]] = []
    removals: list[tuple[int, int]] = []
    for line_start, line_end, program in chunk_programs:
        parsed = (program if isinstance(program, ParsedProgram)
                  else parse_program(program, "chunk", dialect))
        if parsed.errors:
            errors += _counted_errors(parsed.errors)
        for call in parsed.calls:
            if call.name == "normalize":
                normalizations.append((line_start, line_end, call.args["source_str"],
                                       call.args["target_str"]))
            elif call.name == "remove_str":
                deletions.append((call.args["line"], call.args["del_str"]))
            elif call.name == "remove_lines":
                if call.args.get("all"):
                    if policy.remove_all_scope == "document":
                        removals.append((0, text.count("\n")))
                    else:
                        removals.append((line_start, line_end))
                else:
                    args = call.args
                    removals.append((args["line_start"], args["line_end"])
                                    if "line_start" in args else line_range(args))
                n_ops += 1

    edited = False  # whether any line's text changed (else words are counted by subtraction)
    if policy.normalize_scope == "document" and normalizations:
        text_now = text
        room = growth_allowance(len(text))
        for _, _, source, target in normalizations:
            if source not in ("", " "):
                if source in text_now:
                    # bounded before the string is built: a program repeating a growing
                    # normalize would otherwise double the text with every call
                    growth = text_now.count(source) * (len(target) - len(source))
                    if growth > room:
                        errors += 1
                        continue
                    room -= growth
                    text_now = text_now.replace(source, target)
                    edited = True
                n_ops += 1
        lines = text_now.split("\n")
        normalizations = []
    else:
        lines = text.split("\n")
    rooms: dict[tuple[int, int], int] = {}  # what each chunk's text may still grow by
    for line_start, line_end, source, target in normalizations:
        if source in ("", " "):
            continue
        if "\n" in source or "\n" in target:
            errors += 1
            continue
        span = range(max(line_start, 0), min(line_end, len(lines) - 1) + 1)
        if len(target) != len(source):
            if (line_start, line_end) not in rooms:
                rooms[line_start, line_end] = growth_allowance(
                    sum(len(lines[i]) + 1 for i in span))
            growth = sum(lines[i].count(source) for i in span) * (len(target) - len(source))
            if growth > rooms[line_start, line_end]:
                errors += 1
                continue
            rooms[line_start, line_end] -= growth
        for i in span:
            if source in lines[i]:
                lines[i] = lines[i].replace(source, target)
                edited = True
        n_ops += 1

    for index, fragment in deletions:
        # RefineX: delete only an occurrence that is unique in its line; anything else is an error
        if index >= len(lines) or lines[index].count(fragment) != 1:
            errors += 1
            continue
        lines[index] = lines[index].replace(fragment, "", 1)
        edited = True
        n_ops += 1

    kept: list[str] = []
    removed: list[str] = []
    position = 0
    for start, end in _merge(removals):
        if start >= len(lines):
            errors += 1
            continue
        if end >= len(lines):
            errors += 1
            end = len(lines) - 1
        kept.extend(lines[position:start])
        removed.extend(lines[start:end + 1])
        position = end + 1
    kept.extend(lines[position:])
    processed = "\n".join(kept)

    unit = policy.word_unit
    if edited:
        words_in, words_out = word_count(text, unit), word_count(processed, unit)
    elif removed:  # words never span a line break: the words in are those kept plus removed
        words_out = word_count(processed, unit)
        words_in = words_out + word_count("\n".join(removed), unit)
    else:
        # nothing removed or rewritten: the words out are the words in, and all that matters
        # is whether they are more than min_words (a split that stops there tells)
        words_in = words_out = len(text.split(None, policy.min_words))
        if words_out <= policy.min_words:
            words_in = words_out = word_count(text, unit)
    ratio = words_out / words_in if words_in else 0.0
    total_errors = errors + doc_errors
    if ratio <= policy.drop_word_ratio and errors < policy.max_errors:
        return DocumentResult("", "dropped_chunk", n_ops, total_errors)
    if words_out <= policy.min_words:
        return DocumentResult("", "dropped_chunk", n_ops, total_errors)
    if errors < policy.max_errors:
        return DocumentResult(processed, "kept", n_ops, total_errors)
    return DocumentResult(text, "fallback_raw", n_ops, total_errors)


@functools.lru_cache(maxsize=4096)
def _parse_doc_program(source: str) -> ParsedProgram:
    # doc programs repeat (nearly all are "keep_doc()" or "drop_doc()"); callers only read it.
    # Only short ones are cached, so the cache stays small whatever the model writes.
    return parse_program(source, "doc")


def _counted_errors(errors: list[ProgramError]) -> int:
    return sum(1 for e in errors if e.code != "empty")


def _merge(ranges: list[tuple[int, int]]) -> list[tuple[int, int]]:
    merged: list[tuple[int, int]] = []
    for start, end in sorted(ranges):
        if merged and start <= merged[-1][1] + 1:
            merged[-1] = (merged[-1][0], max(merged[-1][1], end))
        else:
            merged.append((start, end))
    return merged


def kept_lines(original: str, refined: str) -> list[bool]:
    """Which lines of ``original`` survive into ``refined``.

    Execution removes whole lines and rewrites text inside lines (``normalize``), never reorders.
    Lines are matched in order: an original line equal to the next refined line is kept; a
    refined line that equals no later original line is a rewritten one, and keeps the original
    line it stands at when the two share most of their words. Linear in the two texts.
    """
    lines = original.split("\n")
    if refined == original:
        return [True] * len(lines)
    if not refined:
        return [False] * len(lines)
    out = refined.split("\n")
    remaining: dict[str, int] = {}
    for line in lines:
        remaining[line] = remaining.get(line, 0) + 1
    kept = [False] * len(lines)
    j = 0
    for i, line in enumerate(lines):
        remaining[line] -= 1
        if j >= len(out):
            continue
        if out[j] == line:
            kept[i] = True
            j += 1
        elif remaining.get(out[j], 0) == 0 and _rewritten(line, out[j]):
            kept[i] = True
            j += 1
    return kept


def _rewritten(before: str, after: str) -> bool:
    """Whether ``after`` is ``before`` with some text replaced (most words in common)."""
    a, b = set(before.split()), set(after.split())
    if not a or not b:
        return False
    return len(a & b) / max(len(a), len(b)) >= 0.5 or \
        (len(a) <= 2 and len(b) <= 2 and (before[:4] == after[:4] or before[-4:] == after[-4:]))
