"""Lineage audits: for every shard, whether each stage is current (``prox_dagster.fingerprint``,
the same comparison the stages cache on and automation acts on, judged through the shard
catalog at the cost of what changed), who refined it and when, its check results, and whether a
queued or running run covers it. An audit also tells the ``current`` checks of the stages whose
state it found changed."""

import json
import time
from collections.abc import Callable

import dagster as dg
from dagster._core.events import DagsterEvent, DagsterEventType

from prox_dagster import fingerprint
from prox_dagster.fingerprint import StageSettings
from prox_dagster.leases import run_alive
from prox_dagster.catalog import Catalog, Evaluation
from prox_dagster.lineage import AUDIT_COLUMNS, audit_csv, with_run
from prox_dagster.stages import REFINERS
from prox_dagster.store import ShardStore
from prox_dagster.resources import (CheckThresholds, ProgramPolicy, RawSource, RefinerResource,
                                    ShardStorage, TokenizerResource)
from prox_dagster.resources.settings import settings_values

from .common import (CURRENT_CHECK, IN_FLIGHT, OWNERS, latest_materializations, location_value,
                     table)
from .partitions import shards_partitions_def

# `current` check evaluations one audit run tells (each is an event-log row: 20-30 ms on
# SQLite, where every row is its own commits); a schedule tick tells at most
# MAX_TICK_CHECK_REPORTS, for at most TICK_REPORT_SECONDS, so that it stays short
MAX_CHECK_REPORTS = 20_000
MAX_TICK_CHECK_REPORTS = 200
TICK_REPORT_SECONDS = 1.5
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


def evaluate(instance: dg.DagsterInstance, storage: ShardStorage, raw_source: RawSource,
             expected: dict[str, StageSettings], *, read_budget: int | None = None,
             seconds: float | None = None, verify: bool = False,
             log: Callable[[str], None] | None = None
             ) -> tuple[Evaluation, dict[str, str]]:
    """Every shard partition judged through the catalog (``read_budget`` and ``seconds``: file
    reads it may spend and seconds after which it judges no more, shards beyond them wait for
    the next evaluation; ``verify``: every shard judged again, every listed file checked), and
    the runs in flight by shard."""
    shards = instance.get_dynamic_partitions(shards_partitions_def.name)
    listing, refused = raw_source.listing()
    problems = {shard: refused[shard] for shard in shards if shard in refused}
    evaluation = Catalog(storage.store, warn=log).evaluate(
        shards, expected, listing, problems, read_budget=read_budget, seconds=seconds,
        verify=verify)
    return evaluation, in_flight_shards(instance, shards, storage.store)


def audit_rows(instance: dg.DagsterInstance, storage: ShardStorage, raw_source: RawSource,
               expected: dict[str, StageSettings], verify: bool = False) -> list[dict]:
    """One row per shard partition (``prox_dagster.lineage.AUDIT_COLUMNS``), against the
    stages' settings ``expected``."""
    evaluation, running = evaluate(instance, storage, raw_source, expected, verify=verify)
    return [with_run({column: row.get(column) for column in AUDIT_COLUMNS},
                     running.get(row["shard"]))
            for row in evaluation.rows.iter_rows(named=True)]


def report_current(instance: dg.DagsterInstance, storage: ShardStorage, evaluation: Evaluation,
                   limit: int = MAX_CHECK_REPORTS, seconds: float | None = None) -> int:
    """Tell each shard stage's ``current`` check what changed about it (a setting with its old
    and new values, an input): at most ``limit`` evaluations and, once ``seconds`` have passed,
    none more; the ones left over are told by the next audit or tick. Returns how many
    evaluations were written.

    An evaluation amends the ``current`` result of the run that made the stage's latest
    materialization, the one the check's Partitions tab shows. It is not reported as a runless
    event: Dagster keeps one runless evaluation per check and partition (a unique index), so a
    shard stage's second change would fail the tick. A stage with no materialization in this
    instance has nothing for the check to attach to; the audit's row says its state."""
    started = time.perf_counter()
    pending = evaluation.transitions[:limit]
    targets = {stage: latest_materializations(
        instance, dg.AssetKey(stage), [shard for shard, at, _, _ in pending if at == stage])
        for stage in {stage for _, stage, _, _ in pending}}
    run_ids = {target.run_id for found in targets.values() for target in found.values()}
    jobs = {record.dagster_run.run_id: record.dagster_run.job_name
            for record in instance.get_run_records(dg.RunsFilter(run_ids=sorted(run_ids)))} \
        if run_ids else {}
    told, reported = [], 0
    for shard, stage, state, reason in pending:
        if seconds is not None and told and time.perf_counter() - started > seconds:
            break  # (at least one a tick, so that what is pending always moves)
        target = targets[stage].get(shard)
        if target is not None and target.run_id in jobs:
            instance.report_dagster_event(DagsterEvent(
                event_type_value=DagsterEventType.ASSET_CHECK_EVALUATION.value,
                job_name=jobs[target.run_id],
                event_specific_data=dg.AssetCheckEvaluation(
                    asset_key=dg.AssetKey(stage), check_name=CURRENT_CHECK,
                    passed=state == "current",
                    description=("current again: " if state == "current" else "") + reason,
                    metadata={"state": state}, blocking=False,
                    severity=dg.AssetCheckSeverity.WARN, partition=shard,
                    target_materialization_data=target)), run_id=target.run_id)
            reported += 1
        told.append((shard, stage, state, reason))
    Catalog(storage.store).told(told)
    return reported


REPORT_COLUMNS = {"shard": str, "status": str, "reason": str, "doc_refiner_version": str,
                  "doc_refined_at": str, "checks_passed": str, "checks_failed": str,
                  "failed_checks": str}
REPORT_ROWS = 200  # rows the UI shows; the JSON and CSV files hold every shard


def report_table(rows: list[dict]) -> dg.MetadataValue:
    return table([{c: None if row[c] in (None, "") else str(row[c]) for c in REPORT_COLUMNS}
                  for row in rows[:REPORT_ROWS]], REPORT_COLUMNS)


STATUSES = ("current", "stale", "missing", "failed", "running")


def build_lineage_audit() -> dg.AssetsDefinition:
    @dg.asset(
        deps=[dg.AssetDep(asset, partition_mapping=dg.AllPartitionMapping())
              for asset in (*REFINERS.values(), "tokenized_shard")],
        group_name="audit", kinds={"json", "csv"}, owners=OWNERS,
    )
    def lineage_audit(context: dg.AssetExecutionContext, storage: ShardStorage,
                      raw_source: RawSource, refiner: RefinerResource, policy: ProgramPolicy,
                      tokenizer: TokenizerResource,
                      checks: CheckThresholds) -> dg.MaterializeResult:
        """Per shard: whether every stage is current against the loaded settings (and if not,
        which stage and why), the refiner version and model of its doc- and chunk-refined
        outputs and when, the check results of its stored outputs, and the run covering it.
        The same report as `prox-dagster audit`, saved as `audit/lineage.json` and `.csv`.
        Each stage's `current` check is told of the shards whose state changed."""
        started = time.perf_counter()
        expected = expected_of(refiner, policy, tokenizer, checks)
        evaluation, running = evaluate(context.instance, storage, raw_source, expected,
                                       log=context.log.warning)
        rows = [with_run({column: row.get(column) for column in AUDIT_COLUMNS},
                         running.get(row["shard"]))
                for row in evaluation.rows.iter_rows(named=True)]
        reported = report_current(context.instance, storage, evaluation)
        refiner_version = expected["doc_refined_shard"].settings["refiner"]
        store = storage.store
        json_path = store.write_text(json.dumps(rows, indent=1), "audit", "lineage.json")
        store.write_text(audit_csv(rows), "audit", "lineage.csv")
        counts = {status: sum(1 for row in rows if row["status"] == status)
                  for status in STATUSES}
        seen = sorted({row[f"{level}_refiner_version"] for row in rows for level in REFINERS}
                      - {None})
        return dg.MaterializeResult(metadata={
            "shards": len(rows),
            **{f"shards_{status}": n for status, n in counts.items()},
            "current_refiner_version": refiner_version,
            "refiner_versions_seen": ", ".join(seen) or "none",
            "shards_with_failed_checks": sum(1 for row in rows if row["checks_failed"]),
            "current_checks_reported": reported,
            "shards_judged": evaluation.stats["judged"],
            "shards_reused": evaluation.stats["reused"],
            "report": report_table(rows),
            "report_rows_shown": min(len(rows), REPORT_ROWS),
            "json": location_value(json_path),
            "duration_s": round(time.perf_counter() - started, 3),
        })

    return lineage_audit
