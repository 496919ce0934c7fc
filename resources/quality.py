"""Thresholds of the data-quality checks (fields, defaults and validation: ``Thresholds``)."""

from prox_dagster.quality import Thresholds

from .settings import settings_resource

CheckThresholds = settings_resource(
    Thresholds, "CheckThresholds",
    "Bounds of the blocking checks: a shard outside them stops before the next stage.")
