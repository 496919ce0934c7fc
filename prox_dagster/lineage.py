"""Lineage: which refiner produced a shard (version fingerprints, stable across processes and
machines) and the audit rows that say so for every shard.

A refiner fingerprint reads ``{backend}:{model}@{hash}``: readable at a glance, and the 12-hex
hash covers everything that can change a program (backend, model and revision or weight hash,
prompt format version, decoding settings, program dialect, rule thresholds). It leads the refiner
stages' code versions and is a column of every refined row.
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
from typing import Any

from .fingerprint import Freshness, shard_status
from .stages import REFINERS


def refiner_fingerprint(backend: str, model: str, settings: dict[str, Any]) -> str:
    canonical = json.dumps({"backend": backend, "model": model, **settings},
                           sort_keys=True, default=str, separators=(",", ":"))
    digest = hashlib.sha256(canonical.encode()).hexdigest()[:12]
    return f"{backend}:{model}@{digest}"


def parse_fingerprint(version: str) -> dict[str, str]:
    """Split a fingerprint back into backend, model and hash (for audits and the UI)."""
    head, _, digest = version.rpartition("@")
    backend, _, model = head.partition(":")
    return {"backend": backend, "model": model, "hash": digest}


# Lineage audit rows: one per shard, from the stored shards' sidecars (``fingerprint``) and the
# runs in flight (``assets/audit.py``).
AUDIT_COLUMNS = ["shard", "status", "reason", "doc_refiner_version", "doc_model",
                 "doc_refined_at", "doc_run_id", "chunk_refiner_version", "chunk_model",
                 "chunk_refined_at", "chunk_run_id", "checks_passed", "checks_failed",
                 "failed_checks", "stale_stages", "in_flight_run"]


def audit_row(shard: str, stages: dict[str, Freshness], problem: str | None = None) -> dict:
    """What the store says of a shard. ``stages``: its freshness per stage, in graph order.
    ``status`` is ``current``, ``stale``, ``missing`` or ``failed`` (a blocking check failed
    on the output of the current inputs and settings, or ``problem``: its input needs an
    operator, e.g. two raw files share its key); :func:`with_run` adds the runs in flight."""
    status, reason = ("failed", problem) if problem else shard_status(stages)
    row: dict = {"shard": shard, "status": status, "reason": reason}
    for level, stage in REFINERS.items():
        record = stages[stage].published or stages[stage].record  # what is served, else tried
        data = record.data if record else {}
        row[f"{level}_refiner_version"] = (data.get("extra") or {}).get("refiner_version")
        row[f"{level}_model"] = (data.get("extra") or {}).get("model_id")
        row[f"{level}_refined_at"] = data.get("written_at")
        row[f"{level}_run_id"] = data.get("run_id")
    recorded = [f.record for f in stages.values() if f.record]
    failed = [name for record in recorded for name in record.failed_checks]
    total = sum(record.n_checks for record in recorded)
    row.update(checks_passed=total - len(failed), checks_failed=len(failed),
               failed_checks=", ".join(failed),
               stale_stages=", ".join(stage for stage, record in stages.items()
                                      if record.state == "stale"),
               in_flight_run=None)
    return {column: row.get(column) for column in AUDIT_COLUMNS}


def with_run(row: dict, in_flight_run: str | None) -> dict:
    """``row`` with the run in flight that covers its shard: ``running`` when it is not
    current."""
    if not in_flight_run:
        return row
    row = {**row, "in_flight_run": in_flight_run}
    if row["status"] != "current":
        row.update(status="running", reason=f"run {in_flight_run} covers it ({row['reason']})")
    return row


def filter_audit_rows(rows: list[dict], refiner_version: str | None = None,
                      model: str | None = None, status: str | None = None) -> list[dict]:
    """Rows produced (at either level) by ``refiner_version`` / ``model``, or with ``status``."""
    def produced_by(row, field, wanted):
        return wanted is None or wanted in (row[f"doc_{field}"], row[f"chunk_{field}"])

    return [row for row in rows
            if produced_by(row, "refiner_version", refiner_version)
            and produced_by(row, "model", model)
            and (status is None or row["status"] == status)]


def audit_csv(rows: list[dict]) -> str:
    out = io.StringIO()
    writer = csv.DictWriter(out, fieldnames=AUDIT_COLUMNS, lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    return out.getvalue()
