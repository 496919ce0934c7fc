"""The pre-training set: a manifest of every tokenized shard's files."""

import time

import dagster as dg

from prox_dagster.pretraining import (build_manifest, check_uniform, pack_set,
                                      remove_stale_packs)
from resources import ShardStorage, TokenizerResource

from .common import location_value
from .partitions import shards_partitions_def


@dg.asset(
    deps=[dg.AssetDep("tokenized_shard", partition_mapping=dg.AllPartitionMapping())],
    group_name="pretraining",
    kinds={"json"},
)
def pretraining_set(context: dg.AssetExecutionContext, storage: ShardStorage,
                    tokenizer: TokenizerResource) -> dg.MaterializeResult:
    """The dataset a training job reads: `manifest.json` listing every token file of every
    shard with its size, sha256, documents, tokens, dtype, format, tokenizer and the refiner
    versions that produced its text. Files unchanged since the last manifest (same size and
    modification time or ETag) keep their hash; only changed files are hashed again. Shards
    tokenized with different tokenizers, formats or dtypes are refused, by name. For litgpt,
    the shards' token streams are packed, in shard order, into `LITPKDS` chunks that run on
    across shards (only the last is padded; `packed` in the manifest), reused while no shard's
    stream and no chunk setting changed."""
    started = time.perf_counter()
    store = storage.store
    shards = sorted(context.instance.get_dynamic_partitions(shards_partitions_def.name))
    manifest_path = store.location("pretraining_set", "manifest.json")
    manifest, stats = build_manifest(store, shards, manifest_path,
                                     tokenizer.name_or_path, tokenizer.fingerprint())
    check_uniform(manifest)  # before the manifest is written: a training job reads only sets
    packed_now = False
    if manifest.formats == ["litgpt"]:
        packed_now = pack_set(store, manifest, manifest_path, **tokenizer.pack_settings(),
                              progress=lambda shard: context.log.debug(f"packed {shard}"))
    store.write_text(manifest.to_json(), "pretraining_set", "manifest.json")
    for name in remove_stale_packs(store, manifest):
        context.log.info(f"removed {name}: chunks of an earlier manifest")
    if manifest.missing_shards:
        context.log.warning(f"{len(manifest.missing_shards)} shards have no tokenized output "
                            f"yet: {manifest.missing_shards[:10]}")
    return dg.MaterializeResult(metadata={
        "shards": len(manifest.shards),
        "missing_shards": len(manifest.missing_shards),
        "files": stats["files"],
        "files_rehashed": stats["rehashed"],
        "total_tokens": manifest.total_tokens,
        "total_documents": manifest.total_documents,
        "formats": ", ".join(manifest.formats) or "none",
        **({"litgpt_chunks": manifest.packed["chunks"],
            "padding_tokens": manifest.packed["padding_tokens"],
            "packed_now": packed_now} if manifest.packed else {}),
        "manifest": location_value(manifest_path),
        "shard_table": dg.MetadataValue.md(manifest.shard_table()),
        "document_lengths": dg.MetadataValue.md(manifest.histogram_table()),
        "duration_s": round(time.perf_counter() - started, 3),
    })
