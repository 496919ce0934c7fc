"""Stage 6: token ids of every kept document, ready for pre-training."""

import time

import dagster as dg

from prox_dagster.pipeline import tokenize_shard
from resources import ShardStorage, TokenizerResource

from .common import shard_result
from .partitions import shards_partitions_def


@dg.asset(
    partitions_def=shards_partitions_def,
    deps=["clean_shard"],
    group_name="pretraining",
    kinds={"polars", "parquet"},
)
def tokenized_shard(context: dg.AssetExecutionContext, storage: ShardStorage,
                    tokenizer: TokenizerResource) -> dg.MaterializeResult:
    """One row per kept document: `id`, `input_ids` (no leading BOS, EOS appended) and
    `n_tokens`."""
    shard = context.partition_key
    started = time.perf_counter()
    clean = storage.read("clean_shard", shard)
    tok = tokenizer.get()
    tokens = tokenize_shard(clean, tok)
    path = storage.write(tokens, "tokenized_shard", shard)
    return shard_result(
        context, path, started, rows_in=clean.height, rows_out=tokens.height,
        documents=tokens.height,
        tokens=int(tokens["n_tokens"].sum()) if tokens.height else 0,
        tokenizer=tokenizer.name_or_path,
        tokenizer_hash=tokenizer.fingerprint(),
        vocab_size=len(tok),
        refiner_version=", ".join(sorted(set(clean["refiner_version"]))) or "none",
    )
