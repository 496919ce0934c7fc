"""Lineage audits: for every shard, whether each stage is current (``prox_dagster.fingerprint``,
the same comparison the stages cache on and automation acts on), who refined it and when, its
check results, and whether a queued or running run covers it."""

import json
import time

import dagster as dg

from prox_dagster import fingerprint
from prox_dagster.fingerprint import StageSettings
from prox_dagster.leases import run_alive
from prox_dagster.lineage import REFINED, audit_csv, audit_row
from prox_dagster.outputs import RawFile, shard_freshness
from prox_dagster.shards import conflict_error
from prox_dagster.store import ShardStore
from resources import (CheckThresholds, ProgramPolicy, RawSource, RefinerResource, ShardStorage,
                       TokenizerResource)
from resources.settings import settings_values

from .common import IN_FLIGHT, OWNERS, location_value
from .partitions import shards_partitions_def

RANGE_START, RANGE_END = "dagster/asset_partition_range_start", "dagster/asset_partition_range_end"
PARTITION = "dagster/partition"


def in_flight_shards(instance: dg.DagsterInstance, order: list[str],
                     store: ShardStore) -> dict[str, str]:
    """``{shard: run id}`` for every shard a queued or running run covers (one partition or a
    range of them). A STARTED run whose worker is gone (killed where nothing monitors runs: its
    heartbeat stopped) covers nothing."""
    position = {key: i for i, key in enumerate(order)}
    covered: dict[str, str] = {}
    for record in instance.get_run_records(filters=dg.RunsFilter(statuses=list(IN_FLIGHT))):
        run = record.dagster_run
        if run.status == dg.DagsterRunStatus.STARTED and not run_alive(
                store, run.run_id, record.start_time):
            continue
        tags = run.tags
        if tags.get(PARTITION) in position:
            covered.setdefault(tags[PARTITION], run.run_id)
        elif tags.get(RANGE_START) in position and tags.get(RANGE_END) in position:
            for key in order[position[tags[RANGE_START]]:position[tags[RANGE_END]] + 1]:
                covered.setdefault(key, run.run_id)
    return covered


def expected_of(refiner: RefinerResource, policy: ProgramPolicy, tokenizer: TokenizerResource,
                checks: CheckThresholds) -> dict[str, StageSettings]:
    """Every stage's settings as these resources hold them at evaluation time (a hub model's
    commit resolved: the audit is not the code location)."""
    return fingerprint.stage_settings(settings_values(refiner=refiner, policy=policy,
                                                      tokenizer=tokenizer, checks=checks))


def audit_rows(instance: dg.DagsterInstance, storage: ShardStorage, raw_source: RawSource,
               expected: dict[str, StageSettings]) -> list[dict]:
    """One row per shard partition (``prox_dagster.lineage.audit_row``), against the stages'
    settings ``expected``."""
    shards = instance.get_dynamic_partitions(shards_partitions_def.name)
    listing, conflicts = raw_source.listing()
    running = in_flight_shards(instance, shards, storage.store)
    return [audit_row(shard, shard_freshness(
                storage.store, shard, expected,
                RawFile(listing[shard].location, listing[shard].version)
                if shard in listing else None), running.get(shard),
                str(conflict_error(shard, conflicts[shard], raw_source.path))
                if shard in conflicts else None)
            for shard in shards]


def rows_to_markdown(rows: list[dict], limit: int = 200) -> str:
    shown = ["shard", "status", "reason", "doc_refiner_version", "doc_refined_at",
             "checks_passed", "checks_failed", "failed_checks"]
    lines = ["| " + " | ".join(shown) + " |", "|" + "---|" * len(shown)]
    lines += ["| " + " | ".join(str(row[c] if row[c] not in (None, "") else "-")
                                .replace("|", "\\|") for c in shown) + " |"
              for row in rows[:limit]]
    if len(rows) > limit:
        lines.append(f"\n({len(rows) - limit} more rows in the JSON and CSV files)")
    return "\n".join(lines)


STATUSES = ("current", "stale", "missing", "failed", "running")


def build_lineage_audit() -> dg.AssetsDefinition:
    @dg.asset(
        deps=[dg.AssetDep(asset, partition_mapping=dg.AllPartitionMapping())
              for asset in (*REFINED.values(), "tokenized_shard")],
        group_name="audit", kinds={"json", "csv"}, owners=OWNERS,
    )
    def lineage_audit(context: dg.AssetExecutionContext, storage: ShardStorage,
                      raw_source: RawSource, refiner: RefinerResource, policy: ProgramPolicy,
                      tokenizer: TokenizerResource,
                      checks: CheckThresholds) -> dg.MaterializeResult:
        """Per shard: whether every stage is current against the loaded settings (and if not,
        which stage and why), the refiner version and model of its doc- and chunk-refined
        outputs and when, the check results of its stored outputs, and the run covering it.
        The same report as `prox-dagster audit`, saved as `audit/lineage.json` and `.csv`."""
        started = time.perf_counter()
        expected = expected_of(refiner, policy, tokenizer, checks)
        rows = audit_rows(context.instance, storage, raw_source, expected)
        refiner_version = expected["doc_refined_shard"].settings["refiner"]
        store = storage.store
        json_path = store.write_text(json.dumps(rows, indent=1), "audit", "lineage.json")
        store.write_text(audit_csv(rows), "audit", "lineage.csv")
        counts = {status: sum(1 for row in rows if row["status"] == status)
                  for status in STATUSES}
        seen = sorted({row[f"{level}_refiner_version"] for row in rows for level in REFINED}
                      - {None})
        return dg.MaterializeResult(metadata={
            "shards": len(rows),
            **{f"shards_{status}": n for status, n in counts.items()},
            "current_refiner_version": refiner_version,
            "refiner_versions_seen": ", ".join(seen) or "none",
            "shards_with_failed_checks": sum(1 for row in rows if row["checks_failed"]),
            "report": dg.MetadataValue.md(rows_to_markdown(rows)),
            "json": location_value(json_path),
            "duration_s": round(time.perf_counter() - started, 3),
        })

    return lineage_audit
