"""The pre-training set: a manifest of every tokenized shard."""

import json
import time

import dagster as dg
import polars as pl

from prox_dagster.shards import file_sha256, write_text_atomic
from resources import ShardStorage, TokenizerResource

from .partitions import shards_partitions_def


@dg.asset(
    deps=[dg.AssetDep("tokenized_shard", partition_mapping=dg.AllPartitionMapping())],
    group_name="pretraining",
    kinds={"json"},
)
def pretraining_set(context: dg.AssetExecutionContext, storage: ShardStorage,
                    tokenizer: TokenizerResource) -> dg.MaterializeResult:
    """The dataset a training job reads: `manifest.json` listing every tokenized shard with its
    file, size, sha256, documents, tokens and the refiner versions that produced its text."""
    started = time.perf_counter()
    store = storage.store
    shards = context.instance.get_dynamic_partitions(shards_partitions_def.name)
    entries, missing = [], []
    for shard in sorted(shards):
        path = store.path("tokenized_shard", shard)
        if not path.is_file():
            missing.append(shard)
            continue
        counts = pl.read_parquet(path, columns=["n_tokens"])["n_tokens"]
        clean = store.read("clean_shard", shard)
        entries.append({
            "shard": shard, "file": str(path), "bytes": path.stat().st_size,
            "sha256": file_sha256(path), "documents": len(counts),
            "tokens": int(counts.sum()) if len(counts) else 0,
            "refiner_versions": sorted(set(clean["refiner_version"])),
        })
    manifest = {
        "tokenizer": tokenizer.name_or_path, "tokenizer_hash": tokenizer.fingerprint(),
        "total_tokens": sum(e["tokens"] for e in entries),
        "total_documents": sum(e["documents"] for e in entries),
        "shards": entries, "missing_shards": missing,
    }
    path = write_text_atomic(json.dumps(manifest, indent=2),
                             store.base / "pretraining_set" / "manifest.json")
    if missing:
        context.log.warning(f"{len(missing)} shards have no tokenized output yet: {missing[:10]}")
    table = "\n".join(f"| {e['shard']} | {e['documents']} | {e['tokens']} | "
                      f"{e['sha256'][:12]} | {', '.join(e['refiner_versions'])} |"
                      for e in entries)
    return dg.MaterializeResult(metadata={
        "shards": len(entries),
        "missing_shards": len(missing),
        "total_tokens": manifest["total_tokens"],
        "total_documents": manifest["total_documents"],
        "manifest": dg.MetadataValue.path(str(path)),
        "shard_table": dg.MetadataValue.md(
            "| shard | documents | tokens | sha256 | refiner |\n|---|---|---|---|---|\n" + table),
        "duration_s": round(time.perf_counter() - started, 3),
    })
