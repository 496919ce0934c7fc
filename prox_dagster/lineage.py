"""Refiner version fingerprints: what produced a shard, stable across processes and machines.

A fingerprint reads ``{backend}:{model}@{hash}``: readable at a glance, and the 12-hex hash covers
everything that can change a program (backend, model and revision or weight hash, prompt format
version, decoding settings, program dialect, rule thresholds). It is the refiner assets'
``code_version`` and a column of every refined row, so Dagster marks exactly the shards produced by
another refiner as stale.
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
from typing import Any


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


def input_fingerprint(asset: str, settings: str, inputs: dict[str, str]) -> str:
    """What an output shard was computed from: the asset, the settings that shape its rows and
    checks, and the content hash of every input file. Equal fingerprints mean the stored output
    is what a recomputation would write."""
    canonical = json.dumps({"asset": asset, "settings": settings, "inputs": inputs},
                           sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(canonical.encode()).hexdigest()[:16]


# Lineage audit rows (one per shard, built from the Dagster instance by ``assets/audit.py``).
AUDIT_COLUMNS = ["shard", "doc_refiner_version", "doc_model", "doc_refined_at", "doc_run_id",
                 "chunk_refiner_version", "chunk_model", "chunk_refined_at", "chunk_run_id",
                 "checks_passed", "checks_failed", "failed_checks", "status"]


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
