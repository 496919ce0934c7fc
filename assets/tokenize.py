"""Stage 6: token files of every kept document, in the format a training stack reads."""

import dagster as dg

from prox_dagster import fingerprint as fp
from prox_dagster.quality import tokens_written
from prox_dagster.token_files import histogram_table, write_token_files
from resources import ShardStorage, TokenizerResource
from resources.settings import settings_values

from .common import (ShardOutput, progress_logger, run_shards, shard_asset_settings,
                     shard_checks)

CHECKS = {"tokens_written": "Every kept document is in the token files (or counted as "
                            "tokenizing to nothing), and no token file is empty."}


def build_tokenized_shard(code_version: str, token_format: str,
                          shards_per_run: int) -> dg.AssetsDefinition:
    @dg.asset(deps=["clean_shard"],
              **shard_asset_settings("tokenized_shard", "pretraining", shards_per_run,
                                     code_version, kinds={"polars", token_format}),
              check_specs=shard_checks("tokenized_shard", CHECKS))
    def tokenized_shard(context: dg.AssetExecutionContext, storage: ShardStorage,
                        tokenizer: TokenizerResource):
        """Token ids of every kept document (no leading BOS, EOS appended) as Parquet,
        Megatron `.bin`/`.idx` or, for litgpt, a `.tokens` stream that `pretraining_set` packs
        across shards (the tokenizer resource's `output_format`); documents that tokenize to
        nothing are skipped and counted."""
        tok = tokenizer.get()
        settings = tokenizer.file_settings()

        def work(shard: str) -> ShardOutput:
            store = storage.store
            report = progress_logger(context, f"{shard} documents tokenized")
            provenance = fp.read_sidecar(store, "clean_shard", shard) or {}
            kept = (provenance.get("extra") or {}).get("docs_kept", 0)
            with store.open(store.path("clean_shard", shard)) as clean, \
                    store.staging_dir("tokenized_shard") as folder:
                written = write_token_files(
                    clean, folder, shard, tok, batch_size=tokenizer.batch_size,
                    progress=lambda done: report(done, kept), **settings)
                files = store.publish("tokenized_shard", written.files)
            return ShardOutput(
                None, rows_in=provenance.get("rows_out", written.documents),
                rows_out=written.documents, files=files,
                checks={"tokens_written": tokens_written(
                    written.documents, written.tokens, written.skipped_empty, kept,
                    [f["bytes"] for f in files])},
                extra={
                    "documents": written.documents, "tokens": written.tokens,
                    "skipped_empty": written.skipped_empty,
                    "format": settings["fmt"], "dtype": written.dtype,
                    "length_histogram": written.histogram,
                    "document_lengths_preview": histogram_table(written.histogram),
                    "tokenizer": tokenizer.name_or_path,
                    "tokenizer_hash": tokenizer.fingerprint(), "vocab_size": len(tok),
                    "refiner_version": (provenance.get("extra") or {}).get("refiner_version",
                                                                           "unknown")})

        yield from run_shards(context, storage, work=work, code_version=fp.code_version(
            "tokenized_shard", settings_values(tokenizer=tokenizer)))

    return tokenized_shard
