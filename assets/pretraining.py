"""The pre-training set: a manifest of the token files of every shard whose whole chain is
current and passed its checks, and of every shard it left out, with the reason."""

import time

import dagster as dg

from prox_dagster.lineage import with_run
from prox_dagster.pretraining import (LAST_GOOD, build_manifest, check_uniform,
                                      load_manifest, mark_duplicates, pack_set,
                                      remove_stale_packs, write_manifest)
from prox_dagster.store import exists, version
from prox_dagster.token_files import histogram_table
from prox_dagster.resources import (CheckThresholds, ProgramPolicy, RawSource, RefinerResource,
                                    ShardStorage, TokenizerResource)

from .audit import audit_rows, evaluate, expected_of
from .common import location_value, table
from .partitions import shards_partitions_def

SHARD_COLUMNS = {"shard": str, "status": str, "format": str, "dtype": str, "files": int,
                 "documents": int, "tokens": int, "later_copies": int, "copies_dropped": bool,
                 "sha256": str, "refiner": str}
# rows of the shard and excluded tables: the materialization stays the same size whatever the
# corpus (the manifest names every shard)
SHARDS_SHOWN = 50
EXCLUDED_SHOWN = 50


class PretrainingSetConfig(dg.Config):
    """``keep_last_good``: a shard whose chain is not current or failed a check is served from
    its last published token files, marked ``last_good`` in the manifest with the reason,
    instead of being left out. ``drop_duplicates``: a document that is a copy of an earlier one
    (same id or same text; earlier in shard order) is left out of the set (its shard is served
    from a filtered copy of its token files); either way the copies are counted.
    ``count_duplicates: false`` counts them only with ``drop_duplicates``: counting reads every
    listed shard's documents file whenever one changed, which a corpus of 100,000 shards
    rebuilt after one shard changed should not pay."""

    keep_last_good: bool = False
    drop_duplicates: bool = False
    count_duplicates: bool = True


@dg.asset(
    deps=[dg.AssetDep("tokenized_shard", partition_mapping=dg.AllPartitionMapping())],
    group_name="pretraining",
    kinds={"json"},
)
def pretraining_set(context: dg.AssetExecutionContext, config: PretrainingSetConfig,
                    storage: ShardStorage, raw_source: RawSource, refiner: RefinerResource,
                    policy: ProgramPolicy, tokenizer: TokenizerResource,
                    checks: CheckThresholds) -> dg.MaterializeResult:
    """The dataset a training job reads: `manifest.json` listing the token files of every shard
    whose whole chain (raw to tokenized) is current and passed its blocking checks (the lineage
    audit's `current`), with size, sha256, documents, tokens, dtype, format, tokenizer and the
    refiner versions that produced its text; and every shard it left out (`excluded`), with
    why: the check that failed at which stage, the setting that made it stale, or missing.
    Run config `keep_last_good` serves such a shard from its last published files instead,
    marked `last_good`. Hashes come from the shards' writers while a file's size and version
    are unchanged. Documents that are copies of an earlier one (same id or text, earlier in
    shard order) are counted (`duplicates`); run config `drop_duplicates` leaves them out,
    listing filtered copies of their shards' token files. Shards tokenized with different
    tokenizers, formats or dtypes are refused, by name. For litgpt, the shards' token streams
    are packed, in shard order, into `LITPKDS` chunks that run on across shards (only the last
    is padded; `packed` in the manifest), reused while no shard's stream and no chunk setting
    changed. The manifest is an index and parts of 1,000 shards: a part whose shards did not
    change is reused as it is."""
    started = time.perf_counter()
    store = storage.store
    shards = context.instance.get_dynamic_partitions(shards_partitions_def.name)
    expected = expected_of(refiner, policy, tokenizer, checks)
    evaluation, running = evaluate(context.instance, storage, raw_source, expected)
    statuses = {row["shard"]: (row["status"], row["reason"])
                for row in (with_run(row, running.get(row["shard"]))
                            for row in evaluation.rows.iter_rows(named=True))}
    # a part is reused while its shards' catalog keys are the same; copies of token files
    # without the duplicates are the corpus's, never a part's
    keys = None if config.drop_duplicates else dict(evaluation.rows.select("shard", "key").rows())
    manifest_path = store.location("pretraining_set", "manifest.json")
    manifest, stats = build_manifest(store, sorted(shards), statuses, manifest_path,
                                     tokenizer.name_or_path, tokenizer.identity(),
                                     keep_last_good=config.keep_last_good, keys=keys,
                                     options={"drop": config.drop_duplicates,
                                              "count": config.count_duplicates},
                                     warn=context.log.warning)
    check_uniform(manifest)  # before the manifest is written: a training job reads only sets
    mark_duplicates(store, manifest, manifest_path, drop=config.drop_duplicates,
                    count=config.count_duplicates,
                    progress=lambda shard: context.log.debug(f"{shard}: copies left out"))
    duplicates = manifest.duplicates or {}
    if duplicates.get("later_copies"):
        context.log.warning(
            f"{duplicates['later_copies']} documents are copies of an earlier one "
            f"({duplicates['same_text']} by text, {duplicates['same_id_only']} by id alone) in "
            f"{duplicates['shards_with_copies']} shards: "
            + ("left out of the set" if config.drop_duplicates else
               "kept (run config drop_duplicates: true leaves them out)"))
    packed_now = False
    if manifest.formats == ["litgpt"]:
        packed_now = pack_set(store, manifest, manifest_path, **tokenizer.pack_settings(),
                              progress=lambda shard: context.log.debug(f"packed {shard}"))
    written = write_manifest(store, manifest)
    for name in remove_stale_packs(store, manifest):
        context.log.info(f"removed {name}: chunks of an earlier manifest")
    if manifest.excluded:
        context.log.warning(f"{len(manifest.excluded)} shards left out: " + "; ".join(
            f"{e['shard']} ({e['status']}: {e['reason']})" for e in manifest.excluded[:10]))
    last_good = [s["shard"] for s in manifest.shards if s["status"] == LAST_GOOD]
    if last_good:
        context.log.warning(f"{len(last_good)} shards served from their last good files: "
                            f"{last_good[:10]}")
    by_status: dict[str, int] = {}
    for entry in manifest.excluded:
        by_status[entry["status"]] = by_status.get(entry["status"], 0) + 1
    return dg.MaterializeResult(metadata={
        "shards": len(manifest.shards),
        "shards_last_good": len(last_good),
        "shards_excluded": len(manifest.excluded),
        **{f"excluded_{status}": n for status, n in sorted(by_status.items())},
        "files": stats["files"],
        "files_rehashed": stats["rehashed"],
        "parts": stats["parts"],
        "parts_reused": stats["parts_reused"],
        "parts_written": written["parts_written"],
        "total_tokens": manifest.total_tokens,
        "total_documents": manifest.total_documents,
        "formats": ", ".join(manifest.formats) or "none",
        "duplicate_documents": duplicates.get("later_copies", 0),
        "duplicates_dropped": bool(duplicates.get("dropped") and duplicates.get("later_copies")),
        "shards_not_checked_for_duplicates": duplicates.get("shards_not_checked", 0),
        **({"litgpt_chunks": manifest.packed["chunks"],
            "padding_tokens": manifest.packed["padding_tokens"],
            "packed_now": packed_now} if manifest.packed else {}),
        "manifest": location_value(manifest_path),
        "shard_table": table(manifest.shard_rows(SHARDS_SHOWN), SHARD_COLUMNS),
        "shards_shown": f"{min(SHARDS_SHOWN, len(manifest.shards))} of {len(manifest.shards)} "
                        "in shard order (the manifest lists them all)",
        "excluded_table": table(manifest.excluded_rows(EXCLUDED_SHOWN),
                                {"shard": str, "status": str, "reason": str}),
        "document_lengths": dg.MetadataValue.md(
            histogram_table(manifest.histogram, manifest.histogram_edges)),
        "duration_s": round(time.perf_counter() - started, 3),
    })


@dg.asset_check(asset=pretraining_set, name="included_shards_current", blocking=False,
                description="Every shard the manifest lists is current and passed its checks "
                            "now, and its token files are the ones listed (a shard served as "
                            "last_good fails it as a warning).")
def included_shards_current(context: dg.AssetCheckExecutionContext, storage: ShardStorage,
                            raw_source: RawSource, refiner: RefinerResource,
                            policy: ProgramPolicy, tokenizer: TokenizerResource,
                            checks: CheckThresholds) -> dg.AssetCheckResult:
    """Judged against the store and the settings at the time the check runs, not those the
    manifest was built with: run it alone to learn whether a manifest a training job holds is
    still what the platform would publish."""
    store = storage.store
    location = store.location("pretraining_set", "manifest.json")
    if not exists(location):
        return dg.AssetCheckResult(passed=False, description="no manifest has been written")
    try:
        manifest = load_manifest(store, location)
    except (OSError, ValueError, KeyError, TypeError, UnicodeDecodeError) as exc:
        return dg.AssetCheckResult(passed=False, description=f"the manifest {location} is "
                                   f"unreadable or of another format: {exc}")
    rows = {row["shard"]: row for row in audit_rows(
        context.instance, storage, raw_source, expected_of(refiner, policy, tokenizer, checks))}
    problems, marked = [], []
    for entry in manifest.get("shards", []):
        shard = entry["shard"]
        row = rows.get(shard)
        status = row["status"] if row else "not a partition"
        if entry.get("status") == LAST_GOOD:
            marked.append(f"{shard} ({entry.get('why')})")
        elif status != "current":
            problems.append(f"{shard} is {status}: {row['reason'] if row else ''}")
        changed = [f["file"] for f in entry["files"]
                   if not exists(f["file"]) or version(f["file"])["version"] != f["version"]]
        if changed:
            problems.append(f"{shard}: token files changed since the manifest: {changed[:3]}")
    passed = not problems and not marked
    description = ("; ".join(problems + [f"served as last_good: {', '.join(marked[:10])}"
                                         if marked else ""]).strip("; ")
                   or f"all {len(manifest.get('shards', []))} listed shards are current and "
                      "passed")
    return dg.AssetCheckResult(
        passed=passed, description=description[:2000],
        severity=dg.AssetCheckSeverity.ERROR if problems else dg.AssetCheckSeverity.WARN,
        metadata={"listed": len(manifest.get("shards", [])), "not_current": len(problems),
                  "last_good": len(marked)})
