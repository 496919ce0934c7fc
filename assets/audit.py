"""Lineage audits, answered from the Dagster instance: which refiner produced every shard, when,
with which check results, and whether it is stale against the current refiner."""

import datetime as dt
import json
import time

import dagster as dg

from prox_dagster.lineage import audit_csv
from resources import RefinerResource, ShardStorage

from . import clean, raw, refine_chunks, refine_docs
from .common import location_value
from .partitions import shards_partitions_def

REFINED = {"doc": "doc_refined_shard", "chunk": "chunk_refined_shard"}
SHARD_CHECK_KEYS = [dg.AssetCheckKey(dg.AssetKey(asset), name)
                    for asset, module in (("raw_shard", raw), ("doc_refined_shard", refine_docs),
                                          ("chunk_refined_shard", refine_chunks),
                                          ("clean_shard", clean))
                    for name in module.CHECKS]



def latest_by_partition(instance: dg.DagsterInstance, asset: str,
                        page: int = 1000) -> dict[str, dg.EventLogRecord]:
    """The latest materialization record of every partition of ``asset`` (one paged scan,
    newest first, rather than a query per partition)."""
    latest: dict[str, dg.EventLogRecord] = {}
    cursor = None
    while True:
        result = instance.fetch_materializations(
            dg.AssetRecordsFilter(asset_key=dg.AssetKey(asset)), limit=page, cursor=cursor,
            ascending=False)
        for record in result.records:
            latest.setdefault(record.partition_key, record)
        if not result.has_more:
            return latest
        cursor = result.cursor


def latest_check_results(instance: dg.DagsterInstance, check_keys: list[dg.AssetCheckKey],
                         page: int = 1000) -> dict[str, dict[str, bool]]:
    """``{shard: {"asset:check": passed}}`` from the latest evaluation per shard partition."""
    results: dict[str, dict[str, bool]] = {}
    for key in sorted(check_keys, key=str):
        cursor = None
        while True:
            records = instance.event_log_storage.get_asset_check_execution_history(
                key, limit=page, cursor=cursor)
            for record in records:
                evaluation = record.event.dagster_event.event_specific_data if record.event \
                    else None
                if record.partition is None or evaluation is None:
                    continue
                name = f"{key.asset_key.to_user_string()}:{key.name}"
                results.setdefault(record.partition, {}).setdefault(name, evaluation.passed)
            if len(records) < page:
                break
            cursor = records[-1].id
    return results


def metadata_value(record: dg.EventLogRecord | None, key: str):
    if record is None:
        return None
    value = record.asset_materialization.metadata.get(key)
    return getattr(value, "value", value)


def audit_rows(instance: dg.DagsterInstance, current_version: str,
               check_keys: list[dg.AssetCheckKey] = SHARD_CHECK_KEYS) -> list[dict]:
    """One row per shard partition; ``status`` is ``current``, ``stale`` (refined by another
    refiner version) or ``unrefined``."""
    latest = {level: latest_by_partition(instance, asset) for level, asset in REFINED.items()}
    checks = latest_check_results(instance, check_keys)
    rows = []
    for shard in instance.get_dynamic_partitions(shards_partitions_def.name):
        row: dict = {"shard": shard}
        for level in REFINED:
            record = latest[level].get(shard)
            row[f"{level}_refiner_version"] = metadata_value(record, "refiner_version")
            row[f"{level}_model"] = metadata_value(record, "model_id")
            row[f"{level}_refined_at"] = (
                dt.datetime.fromtimestamp(record.timestamp, dt.timezone.utc)
                .isoformat(timespec="seconds") if record else None)
            row[f"{level}_run_id"] = record.run_id if record else None
        results = checks.get(shard, {})
        failed = sorted(name for name, passed in results.items() if not passed)
        row.update(checks_passed=len(results) - len(failed), checks_failed=len(failed),
                   failed_checks=", ".join(failed))
        versions = {row["doc_refiner_version"], row["chunk_refiner_version"]}
        row["status"] = ("unrefined" if None in versions
                         else "current" if versions == {current_version} else "stale")
        rows.append(row)
    return rows


def rows_to_markdown(rows: list[dict], limit: int = 200) -> str:
    shown = ["shard", "status", "doc_refiner_version", "chunk_refiner_version",
             "doc_refined_at", "checks_passed", "checks_failed", "failed_checks"]
    lines = ["| " + " | ".join(shown) + " |", "|" + "---|" * len(shown)]
    lines += ["| " + " | ".join(str(row[c] if row[c] is not None else "-") for c in shown) + " |"
              for row in rows[:limit]]
    if len(rows) > limit:
        lines.append(f"\n({len(rows) - limit} more rows in the JSON and CSV files)")
    return "\n".join(lines)


@dg.asset(
    deps=[dg.AssetDep(asset, partition_mapping=dg.AllPartitionMapping())
          for asset in REFINED.values()],
    group_name="audit",
    kinds={"json", "csv"},
)
def lineage_audit(context: dg.AssetExecutionContext, refiner: RefinerResource,
                  storage: ShardStorage) -> dg.MaterializeResult:
    """Per shard: the refiner version and model of its doc- and chunk-refined outputs, when,
    the latest check results, and whether it is stale against the current refiner. The same
    report as `prox-dagster audit`, saved as `audit/lineage.json` and `audit/lineage.csv`."""
    started = time.perf_counter()
    rows = audit_rows(context.instance, refiner.version)
    store = storage.store
    json_path = store.write_text(json.dumps(rows, indent=1), "audit", "lineage.json")
    store.write_text(audit_csv(rows), "audit", "lineage.csv")
    counts: dict[str, int] = {}
    for row in rows:
        counts[row["status"]] = counts.get(row["status"], 0) + 1
    versions = sorted({row[f"{level}_refiner_version"] for row in rows for level in REFINED}
                      - {None})
    return dg.MaterializeResult(metadata={
        "shards": len(rows),
        **{f"shards_{status}": counts.get(status, 0) for status in ("current", "stale",
                                                                     "unrefined")},
        "current_refiner_version": refiner.version,
        "refiner_versions_seen": ", ".join(versions) or "none",
        "shards_with_failed_checks": sum(1 for row in rows if row["checks_failed"]),
        "report": dg.MetadataValue.md(rows_to_markdown(rows)),
        "json": location_value(json_path),
        "duration_s": round(time.perf_counter() - started, 3),
    })
