"""Stage 3: line-numbered chunks of every kept document."""

import time

import dagster as dg

from prox_dagster.pipeline import chunk_shard
from resources import ShardStorage, TokenizerResource

from .common import shard_result
from .partitions import shards_partitions_def


@dg.asset(
    partitions_def=shards_partitions_def,
    deps=["doc_refined_shard"],
    group_name="refine",
    kinds={"polars", "parquet"},
)
def chunked_shard(context: dg.AssetExecutionContext, storage: ShardStorage,
                  tokenizer: TokenizerResource) -> dg.MaterializeResult:
    """One row per chunk of a kept document: `doc_id`, `chunk_index`, `line_start`, `line_end`
    (global, inclusive), `chunk_text` (lines prefixed `[NNN]`) and `n_tokens`, packed under
    `max_chunk_tokens` tokens."""
    shard = context.partition_key
    started = time.perf_counter()
    docs = storage.read("doc_refined_shard", shard)
    chunks = chunk_shard(docs, tokenizer.get(), tokenizer.max_chunk_tokens)
    path = storage.write(chunks, "chunked_shard", shard)
    return shard_result(
        context, path, started, rows_in=docs.height, rows_out=chunks.height,
        docs_chunked=int(docs["doc_keep"].sum()),
        chunk_tokens=int(chunks["n_tokens"].sum()) if chunks.height else 0,
        max_chunk_tokens=tokenizer.max_chunk_tokens,
        tokenizer=tokenizer.name_or_path,
    )
