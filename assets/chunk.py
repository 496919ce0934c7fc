"""Stage 3: line-numbered chunks of every kept document."""

import dagster as dg

from prox_dagster.fingerprint import StageSettings
from prox_dagster.pipeline import chunk_stream
from prox_dagster.shards import SCHEMAS
from prox_dagster.tokenization import tokenizer_name
from prox_dagster.stages import upstream
from prox_dagster.resources import CheckThresholds, RefinerResource, ShardStorage
from prox_dagster.resources.settings import stage_settings_of

from .common import ShardJob, ShardOutput, run_shards, shard_asset_settings, shard_checks, streamed


def build_chunked_shard(expected: StageSettings, shards_per_run: int) -> dg.AssetsDefinition:
    @dg.asset(deps=upstream("chunked_shard"),
              **shard_asset_settings("chunked_shard", "refine", shards_per_run,
                                     expected.code_version),
              check_specs=shard_checks("chunked_shard", {}))
    def chunked_shard(context: dg.AssetExecutionContext, storage: ShardStorage,
                      refiner: RefinerResource, checks: CheckThresholds):
        """One row per chunk of a kept document: `doc_id`, `chunk_index`, `line_start`,
        `line_end` (global, inclusive), `chunk_text` (lines prefixed `[NNN]`), `n_tokens` and
        `truncated`, packed under `max_chunk_tokens` tokens of the refiner's tokenizer (a
        single line over the budget is a chunk of its own, cut to the budget: `truncated`)."""

        def work(job: ShardJob) -> ShardOutput:
            docs = storage.store.source("doc_refined_shard", job.shard)
            tokenizer = refiner.chunk_tokenizer()
            with job.staging.writer(SCHEMAS["chunked_shard"]) as written:
                stats = chunk_stream(docs, written, tokenizer, refiner.max_chunk_tokens)
            return streamed(written, rows_in=docs.rows, extra={
                "docs_chunked": stats.docs_chunked, "chunk_tokens": stats.chunk_tokens,
                "max_chunk_tokens": refiner.max_chunk_tokens,
                "chunks_truncated": stats.truncated,
                "tokenizer": tokenizer_name(tokenizer)})

        yield from run_shards(context, storage, work=work, limits=checks.settings(),
                              expected=stage_settings_of("chunked_shard", refiner=refiner,
                                                         checks=checks))

    return chunked_shard
