"""Stage 3: line-numbered chunks of every kept document."""

import dagster as dg

from prox_dagster import fingerprint as fp
from prox_dagster.pipeline import chunk_stream
from prox_dagster.shards import SCHEMAS
from prox_dagster.tokenization import tokenizer_name
from resources import RefinerResource, ShardStorage
from resources.settings import settings_values

from .common import ShardOutput, run_shards, shard_asset_settings, streamed


def build_chunked_shard(code_version: str, shards_per_run: int) -> dg.AssetsDefinition:
    @dg.asset(deps=["doc_refined_shard"],
              **shard_asset_settings("chunked_shard", "refine", shards_per_run, code_version))
    def chunked_shard(context: dg.AssetExecutionContext, storage: ShardStorage,
                      refiner: RefinerResource):
        """One row per chunk of a kept document: `doc_id`, `chunk_index`, `line_start`,
        `line_end` (global, inclusive), `chunk_text` (lines prefixed `[NNN]`), `n_tokens` and
        `truncated`, packed under `max_chunk_tokens` tokens of the refiner's tokenizer (a
        single line over the budget is a chunk of its own, cut to the budget: `truncated`)."""

        def work(shard: str) -> ShardOutput:
            store = storage.store
            docs = store.source("doc_refined_shard", shard)
            with store.writer("chunked_shard", shard, SCHEMAS["chunked_shard"]) as written:
                stats = chunk_stream(docs, written, refiner.chunk_tokenizer(),
                                     refiner.max_chunk_tokens)
            return streamed(written, rows_in=docs.rows, extra={
                "docs_chunked": stats.docs_chunked, "chunk_tokens": stats.chunk_tokens,
                "max_chunk_tokens": refiner.max_chunk_tokens,
                "chunks_truncated": stats.truncated,
                "tokenizer": tokenizer_name(refiner.chunk_tokenizer())})

        yield from run_shards(context, storage, work=work, code_version=fp.code_version(
            "chunked_shard", settings_values(refiner=refiner)))

    return chunked_shard
