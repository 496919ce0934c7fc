"""The stages of the shard pipeline as plain functions: DataFrame in, DataFrame out.

The Dagster assets read a shard, call one of these, write the result and report metadata.
Every function keeps every row it is given (a dropped document stays, flagged) so that each raw
id reaches ``clean_shard`` exactly once.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable, Sequence

import polars as pl

from .checkpoints import BatchCheckpoints
from .chunking import DEFAULT_MAX_TOKENS, chunk_documents, strip_numbers
from .execute import ExecutionPolicy, decide_document, execute_document
from .programs import parse_program
from .prompts import chunk_prompt, doc_prompt
from .refiners.base import Refiner
from .shards import SCHEMAS
from .tokenization import token_counts

Progress = Callable[[int, int], None]
DEFAULT_BATCH = 256


def _generate(refiner: Refiner, prompts: Sequence[str], level: str, batch_size: int,
              progress: Progress | None, checkpoints: BatchCheckpoints | None) -> list[str]:
    outputs: list[str] = []
    for i in range(0, len(prompts), batch_size):
        batch = prompts[i:i + batch_size]
        result = checkpoints.load(refiner.version, level, batch) if checkpoints else None
        if result is None:
            result = refiner.generate(batch, level=level)
            if len(result) != len(batch):
                raise RuntimeError(f"refiner {refiner.version} returned {len(result)} programs "
                                   f"for {len(batch)} {level} prompts")
            if checkpoints:
                checkpoints.save(refiner.version, level, batch, result)
        outputs.extend(result)
        if progress:
            progress(len(outputs), len(prompts))
    return outputs


def _observe_shard(refiner: Refiner, documents: Sequence[str]) -> None:
    # refiners that use shard-level signals (lines repeated across the shard's documents) see
    # every document of the shard first, whatever the batch size
    observe = getattr(refiner, "observe_shard", None)
    if observe is not None:
        observe(documents)


def refine_documents(raw: pl.DataFrame, refiner: Refiner, *, batch_size: int = DEFAULT_BATCH,
                     policy: ExecutionPolicy | None = None, progress: Progress | None = None,
                     checkpoints: BatchCheckpoints | None = None) -> pl.DataFrame:
    """``raw_shard`` -> ``doc_refined_shard``: a doc-level program and decision per document
    (each batch's programs checkpointed in ``checkpoints``, and taken from there if present)."""
    _observe_shard(refiner, raw["text"].to_list())
    prompts = [doc_prompt(text, refiner.tokenizer, refiner.max_doc_prompt_tokens)
               for text in raw["text"]]
    programs = _generate(refiner, prompts, "doc", batch_size, progress, checkpoints)
    decisions = [decide_document(p, policy) for p in programs]
    return raw.with_columns(
        pl.Series("doc_program", programs, dtype=pl.String),
        pl.Series("doc_parse_ok", [parsed.ok for _, parsed in decisions], dtype=pl.Boolean),
        pl.Series("doc_keep", [keep for keep, _ in decisions], dtype=pl.Boolean),
        pl.lit(refiner.version, dtype=pl.String).alias("refiner_version"),
    )


def chunk_shard(doc_refined: pl.DataFrame, tokenizer,
                max_tokens: int = DEFAULT_MAX_TOKENS) -> pl.DataFrame:
    """``doc_refined_shard`` -> ``chunked_shard``: numbered chunks of every kept document."""
    kept = doc_refined.filter(pl.col("doc_keep"))
    chunked = chunk_documents(kept["text"].to_list(), tokenizer, max_tokens)
    cols: dict[str, list] = {c: [] for c in SCHEMAS["chunked_shard"]}
    for doc_id, chunks in zip(kept["id"], chunked):
        for index, chunk in enumerate(chunks):
            cols["doc_id"].append(doc_id)
            cols["chunk_index"].append(index)
            cols["line_start"].append(chunk.line_start)
            cols["line_end"].append(chunk.line_end)
            cols["chunk_text"].append(chunk.text)
            cols["n_tokens"].append(chunk.n_tokens)
            cols["truncated"].append(chunk.truncated)
    return pl.DataFrame(cols, schema=SCHEMAS["chunked_shard"])


def refine_chunks(chunked: pl.DataFrame, refiner: Refiner, *, batch_size: int = DEFAULT_BATCH,
                  progress: Progress | None = None,
                  checkpoints: BatchCheckpoints | None = None) -> pl.DataFrame:
    """``chunked_shard`` -> ``chunk_refined_shard``: a chunk-level program per chunk (batches
    checkpointed as in :func:`refine_documents`)."""
    documents: dict[str, list[str]] = defaultdict(list)
    for doc_id, text in chunked.select("doc_id", "chunk_text").iter_rows():
        documents[doc_id].append(strip_numbers(text))
    _observe_shard(refiner, ["\n".join(parts) for parts in documents.values()])
    prompts = [chunk_prompt(text, refiner.tokenizer) for text in chunked["chunk_text"]]
    programs = _generate(refiner, prompts, "chunk", batch_size, progress, checkpoints)
    return chunked.with_columns(
        pl.Series("chunk_program", programs, dtype=pl.String),
        pl.Series("chunk_parse_ok",
                  [parse_program(p, "chunk", refiner.dialect).ok for p in programs],
                  dtype=pl.Boolean),
        pl.lit(refiner.dialect, dtype=pl.String).alias("program_dialect"),
        pl.lit(refiner.version, dtype=pl.String).alias("refiner_version"),
    )


def execute_shard(doc_refined: pl.DataFrame, chunk_refined: pl.DataFrame, tokenizer,
                  policy: ExecutionPolicy | None = None) -> pl.DataFrame:
    """Doc + chunk programs -> ``clean_shard``: the refined text and status of every document.
    Whether the programs belong together is the ``programs_match_documents`` check's to say."""
    dialects = set(chunk_refined["program_dialect"].unique()) if chunk_refined.height else set()
    dialect = dialects.pop() if len(dialects) == 1 else "prox"
    programs: dict[str, list[tuple[int, int, str]]] = defaultdict(list)
    for doc_id, _, start, end, program in chunk_refined.select(
            "doc_id", "chunk_index", "line_start", "line_end", "chunk_program"
    ).sort("doc_id", "chunk_index").iter_rows():
        programs[doc_id].append((start, end, program))
    texts, statuses, n_ops, n_errors = [], [], [], []
    for doc_id, text, doc_program in doc_refined.select("id", "text", "doc_program").iter_rows():
        result = execute_document(text, doc_program, programs.get(doc_id, ()), policy,
                                  dialect=dialect)
        texts.append(result.text)
        statuses.append(result.status)
        n_ops.append(result.n_ops)
        n_errors.append(result.n_errors)
    carried = [c for c in ("id", "url", "source", "meta", "refiner_version")
               if c in doc_refined.columns]
    return doc_refined.select(carried).with_columns(
        pl.Series("text", texts, dtype=pl.String),
        pl.Series("status", statuses, dtype=pl.String),
        pl.Series("n_ops", n_ops, dtype=pl.Int32),
        pl.Series("n_errors", n_errors, dtype=pl.Int32),
        pl.Series("tokens_in", token_counts(tokenizer, doc_refined["text"].to_list()),
                  dtype=pl.Int64),
        pl.Series("tokens_out", token_counts(tokenizer, texts), dtype=pl.Int64),
    )
