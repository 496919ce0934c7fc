"""The ``rules`` refiner: writes ProX programs from rule-based signals, on the CPU.

It answers the same prompts an LM refiner gets and writes programs in the same language, so the
whole pipeline (parsing, execution, checks, lineage) runs identically with it. It is the CPU
default of the embedded demo and the rules baseline ProX is compared against.

Doc level: ``drop_doc()`` with a ``# reason`` comment when a Gopher/C4/FineWeb rule fires, else
``keep_doc()``. Chunk level: one ``remove_lines`` per run of boilerplate lines, one ``normalize``
per distinct mojibake sequence, or ``keep_chunk()``.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence

from ..chunking import split_numbered
from ..lineage import refiner_fingerprint
from ..programs import format_call
from ..prompts import PROMPT_FORMAT_VERSION, document_of
from .signals import RulesConfig, boilerplate_ranges, document_reason, line_reasons, mojibake_fixes

RULES_VERSION = "rules-v3"


class RulesRefiner:
    backend = "rules"
    calls_model = False
    dialect = "prox"
    model_id = RULES_VERSION
    tokenizer = None
    max_doc_prompt_tokens = None

    def __init__(self, config: RulesConfig | None = None):
        self.config = config or RulesConfig()
        self.version = refiner_fingerprint(
            self.backend, self.model_id,
            {"prompt": PROMPT_FORMAT_VERSION, "dialect": self.dialect,
             "thresholds": dataclasses.asdict(self.config)})

    def generate(self, prompts: Sequence[str], *, level: str) -> list[str]:
        if level == "doc":
            return [self.doc_program(document_of(p, "doc")) for p in prompts]
        if level == "chunk":
            return [self.chunk_program(document_of(p, "chunk")) for p in prompts]
        raise ValueError(f"level must be 'doc' or 'chunk', not {level!r}")

    def doc_program(self, text: str) -> str:
        reason = document_reason(text, config=self.config)
        return "keep_doc()" if reason is None else f"drop_doc()  # {reason}"

    def chunk_program(self, numbered_chunk: str) -> str:
        split = split_numbered(numbered_chunk)
        if split is None:  # not our numbering: the chunk is left alone
            return "keep_chunk()"
        numbers, lines = split
        reasons = line_reasons(lines, self.config)
        blank = [not line.strip() for line in lines]
        calls = []
        for bad, good in mojibake_fixes("\n".join(
                line for line, r in zip(lines, reasons) if r is None)).items():
            calls.append(format_call("normalize", source_str=bad, target_str=good))
        for start, end in boilerplate_ranges(reasons, blank=blank):
            calls.append(format_call("remove_lines", line_start=numbers[start],
                                     line_end=numbers[end]))
        return "\n".join(calls) if calls else "keep_chunk()"
