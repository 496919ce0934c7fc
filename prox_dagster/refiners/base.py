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

    A refiner may also have ``observe_shard(documents: Sequence[str]) -> None``: the pipeline
    calls it with every document of the shard before it asks for that shard's programs at either
    level, so shard-level signals (a line repeated across many documents is boilerplate) do not
    depend on the prompt batch size. The ``classifier`` refiner uses it; LM refiners see only
    their prompts, as ProX's models do. One that has it may also have ``shard_metadata() ->
    dict``: what it concluded about the shard it was last shown (the chunk stage adds it to the
    shard's metadata). ``calls_model``: its programs come from a language model, whose
    batches are worth checkpointing (a killed step resumes; a setting changed back asks the
    model nothing).
    """

    version: str
    calls_model: bool
    dialect: str  # the program dialect it writes: "prox" or "refinex"
    backend: str
    model_id: str
    tokenizer: object | None
    max_doc_prompt_tokens: int | None

    def generate(self, prompts: Sequence[str], *, level: Level) -> list[str]: ...
