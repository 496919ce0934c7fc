"""Stage 6: token files of every kept document, in the format a training stack reads."""

import dagster as dg

from prox_dagster.fingerprint import StageSettings
from prox_dagster.outputs import read_sidecar
from prox_dagster.token_files import histogram_table, write_token_files
from prox_dagster.stages import upstream
from prox_dagster.resources import CheckThresholds, ShardStorage, TokenizerResource
from prox_dagster.resources.settings import stage_settings_of

from .common import (ShardJob, ShardOutput, progress_logger, run_shards, shard_asset_settings,
                     shard_checks)

CHECKS = {"tokens_written": "Every kept document is in the token files (or counted as "
                            "tokenizing to nothing), and no token file is empty."}


def build_tokenized_shard(expected: StageSettings, token_format: str,
                          shards_per_run: int) -> dg.AssetsDefinition:
    @dg.asset(deps=upstream("tokenized_shard"),
              **shard_asset_settings("tokenized_shard", "pretraining", shards_per_run,
                                     expected.code_version, kinds={"polars", token_format}),
              check_specs=shard_checks("tokenized_shard", CHECKS))
    def tokenized_shard(context: dg.AssetExecutionContext, storage: ShardStorage,
                        tokenizer: TokenizerResource, checks: CheckThresholds):
        """Token ids of every kept document (no leading BOS, EOS appended) as Parquet,
        Megatron `.bin`/`.idx` or, for litgpt, a `.tokens` stream that `pretraining_set` packs
        across shards (the tokenizer resource's `output_format`); documents that tokenize to
        nothing are skipped and counted."""
        def work(job: ShardJob) -> ShardOutput:
            # loaded by the first shard computed: a run of cached shards imports no tokenizer
            tok, settings = tokenizer.get(), tokenizer.file_settings()
            store, shard = storage.store, job.shard
            report = progress_logger(context, f"{shard} documents tokenized")
            provenance = read_sidecar(store, "clean_shard", shard) or {}
            kept = (provenance.get("extra") or {}).get("docs_kept", 0)
            with store.open(store.path("clean_shard", shard)) as clean:
                written = write_token_files(
                    clean, job.staging.folder, shard, tok, batch_size=tokenizer.batch_size,
                    progress=lambda done: report(done, kept), **settings)
            file_bytes = [path.stat().st_size for path in written.files]
            return ShardOutput(
                rows_in=provenance.get("rows_out", written.documents),
                rows_out=written.documents,
                observations={"documents": written.documents, "tokens": written.tokens,
                              "skipped_empty": written.skipped_empty, "kept": kept,
                              "file_bytes": file_bytes},
                extra={
                    "documents": written.documents, "tokens": written.tokens,
                    "skipped_empty": written.skipped_empty,
                    "format": settings["fmt"], "dtype": written.dtype,
                    "length_histogram": written.histogram,
                    "document_lengths_preview": histogram_table(written.histogram),
                    "tokenizer": tokenizer.name_or_path,
                    "tokenizer_hash": tokenizer.identity(), "vocab_size": len(tok),
                    "refiner_version": (provenance.get("extra") or {}).get("refiner_version",
                                                                           "unknown")})

        yield from run_shards(context, storage, work=work, limits=checks.settings(),
                              expected=stage_settings_of("tokenized_shard", tokenizer=tokenizer,
                                                         checks=checks))

    return tokenized_shard
