"""The refiner protocol: prompts in, program texts out."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal, Protocol, runtime_checkable

Level = Literal["doc", "chunk"]


@runtime_checkable
class Refiner(Protocol):
    """Writes one program per prompt.

    ``version`` is the lineage fingerprint (:mod:`prox_dagster.lineage`). ``tokenizer`` is the
    model's tokenizer (used to build and truncate prompts and to chunk documents), or None for
    refiners without a model. ``max_doc_prompt_tokens`` is the doc-level prompt budget (None: no
    truncation).
    """

    version: str
    dialect: str  # the program dialect it writes: "prox" or "refinex"
    backend: str
    model_id: str
    tokenizer: object | None
    max_doc_prompt_tokens: int | None

    def generate(self, prompts: Sequence[str], *, level: Level) -> list[str]: ...
